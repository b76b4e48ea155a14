"""A matrix of fixture entries (test data pointing at local sources) and one `lxcpatch matrix
--run` over it, shared by the matrix and Dockerfile tests through a session fixture."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import FIXTURES

# In this order: a failing entry first shows that it does not stop the ones after it.
ENTRIES = ("missing", "mini-git", "broken", "mini-dir")


@dataclass(frozen=True)
class MatrixRun:
    proc: subprocess.CompletedProcess[str]
    document: dict[str, Any]
    workdir: Path

    def debs(self, entry: str) -> Path:
        """build/debs/<tree>/ of one entry's workspace."""
        return self.workdir / "matrix" / f"{entry}-debian-bookworm" / "debs" / entry


def _git_repo(tree: Path) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "mini"], ["tag", "v1"]):
        subprocess.run(["git", *argv], cwd=tree, env=env, check=True, capture_output=True)


def matrix_file(folder: Path) -> Path:
    """Four entries on one image: a source that does not exist, the fixture as a git repository
    at a tag, a copy whose C does not compile, and the fixture as a plain folder."""
    shutil.copytree(FIXTURES / "lxc-mini", folder / "mini-git")
    _git_repo(folder / "mini-git")
    shutil.copytree(FIXTURES / "lxc-mini", folder / "mini-dir")
    shutil.copytree(FIXTURES / "lxc-mini", folder / "broken")
    tool = folder / "broken" / "src" / "lxc" / "tools" / "lxc_start.c"
    tool.write_text(tool.read_text() + "\nint this_does_not_compile = ;\n")
    path = folder / "matrix.toml"
    path.write_text(
        '[[release]]\nname = "missing"\nsource = "./no-such-tree"\n\n'
        '[[release]]\nname = "mini-git"\nsource = "./mini-git"\nref = "v1"\n\n'
        '[[release]]\nname = "broken"\nsource = "./broken"\n\n'
        '[[release]]\nname = "mini-dir"\nsource = "./mini-dir"\n\n'
        '[[image]]\nname = "debian:bookworm"\n'
    )
    return path


def run_fixture_matrix(folder: Path) -> MatrixRun:
    """`lxcpatch matrix --run --file <the fixture matrix> --json` as a real process."""
    workdir = folder / "build"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lxcpatch",
            "matrix",
            "--run",
            "--file",
            str(matrix_file(folder / "data")),
            "--json",
        ],
        cwd=folder,
        # A wide console, so that rich does not wrap the table the tests read.
        env={**os.environ, "LXCPATCH_WORKDIR": str(workdir), "COLUMNS": "250"},
        text=True,
        capture_output=True,
        check=False,
    )
    try:
        document = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"matrix --run printed no JSON:\n{proc.stderr}") from None
    return MatrixRun(proc, document, workdir)
