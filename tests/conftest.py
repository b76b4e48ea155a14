"""Shared fixtures: the lxc-mini tree, a workspace, and the CLI run as a real process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent

CliRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def lxc_mini(tmp_path: Path) -> Path:
    """A fresh copy of the lxc-mini fixture tree (an LXC 2.0.10-shaped start.c)."""
    tree = tmp_path / "lxc-mini"
    shutil.copytree(FIXTURES / "lxc-mini", tree)
    return tree


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "build"


@pytest.fixture
def cli(workdir: Path) -> CliRunner:
    """Run `lxcpatch ARGS…` as a real process with --workdir set through the environment."""

    def run(
        *args: str | Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "LXCPATCH_WORKDIR": str(workdir), **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "lxcpatch", *map(str, args)],
            cwd=cwd or workdir.parent,
            env=full_env,
            text=True,
            capture_output=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"lxcpatch {args} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    return run


def needs_root() -> pytest.MarkDecorator:
    return pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")


@pytest.fixture(scope="session")
def fixture_matrix_run(tmp_path_factory: pytest.TempPathFactory) -> object:
    """One `lxcpatch matrix --run` over four fixture entries (tests/matrix_helpers.py), shared
    by the matrix and Dockerfile tests: it builds two package sets for real."""
    from tests.matrix_helpers import run_fixture_matrix

    return run_fixture_matrix(tmp_path_factory.mktemp("matrix-run"))
