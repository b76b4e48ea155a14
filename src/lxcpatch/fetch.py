"""Fetch an LXC source tree (git, tarball, .dsc, apt:, directory) into the workspace."""

from __future__ import annotations

from dataclasses import dataclass

from lxcpatch.report import Report
from lxcpatch.workspace import Workspace


@dataclass(frozen=True)
class FetchRequest:
    source: str | None = None
    ref: str | None = None
    sha256: str | None = None
    name: str | None = None
    version: str | None = None
    offline: bool = False
    force: bool = False


def fetch(ws: Workspace, request: FetchRequest) -> Report:
    raise NotImplementedError("fetch: being written (issue 2)")
