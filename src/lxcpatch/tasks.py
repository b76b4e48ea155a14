"""The tasks: each parses its options and makes one library call. Docstrings are the --help.

Heavy modules are imported inside each task so that `lxcpatch --list` starts fast.
"""

from __future__ import annotations

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task

from lxcpatch.cli import edge
from lxcpatch.report import Report
from lxcpatch.workspace import Workspace

COMMON_HELP = {
    "workdir": "output folder (default: ./build, or $LXCPATCH_WORKDIR)",
    "json": "print one JSON document on stdout (human output stays on stderr)",
}


@task(
    auto_shortflags=False,
    help={
        **COMMON_HELP,
        "source": "git URL or repository, tarball URL or path, .dsc URL or path, apt:PKG[=VER], "
        "or a directory (default: upstream lxc.git at lxc-2.0.11, pinned)",
        "ref": "git tag, branch or commit to check out",
        "sha256": "expected sha256 of the tarball (or .dsc); a mismatch keeps nothing",
        "name": "name of the tree under build/src/ (default: from the source and version)",
        "version": "upstream release X.Y.Z to fetch from the default source",
        "offline": "fail instead of downloading anything (serve from the cache only)",
        "force": "replace an existing tree of the same name",
    },
)
@edge
def fetch(
    c: Context,
    source: str | None = None,
    ref: str | None = None,
    sha256: str | None = None,
    name: str | None = None,
    version: str | None = None,
    offline: bool = False,
    force: bool = False,
    workdir: str | None = None,
    json: bool = False,
) -> Report:
    """Fetch an LXC source tree into build/src/NAME and make it the current tree."""
    from lxcpatch import fetch as fetching

    request = fetching.FetchRequest(
        source=source,
        ref=ref,
        sha256=sha256,
        name=name,
        version=version,
        offline=offline,
        force=force,
    )
    return fetching.fetch(Workspace.resolve(workdir), request)


ns = Collection(fetch)
