"""Helpers for the locate, patch, series and behaviour tests (this module holds no tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

from tests.conftest import FIXTURES

ERAS = FIXTURES / "eras"
EXPECTED: dict[str, dict[str, object]] = tomllib.loads((ERAS / "expected.toml").read_text())
# What @cap-drops makes of the trees with drops outside start.c: {tree: {file: {rewrite, skip,
# why}, "outcome": …}}.
DROPS: dict[str, dict[str, object]] = tomllib.loads((ERAS / "drops.toml").read_text())
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "fetch",
    "GIT_AUTHOR_EMAIL": "fetch@localhost",
    "GIT_COMMITTER_NAME": "fetch",
    "GIT_COMMITTER_EMAIL": "fetch@localhost",
}


def fixtures(*outcomes: str) -> list[str]:
    """Fixture tree names whose expected outcome is one of `outcomes` (all when none given)."""
    return sorted(n for n, e in EXPECTED.items() if not outcomes or e["outcome"] in outcomes)


def source(name: str) -> bytes:
    return (ERAS / name / "src" / "lxc" / "start.c").read_bytes()


def drop_files(name: str) -> dict[str, dict[str, list[object]]]:
    """The files of a @cap-drops fixture tree that hold drops, with their expected lines."""
    return {k: v for k, v in DROPS[name].items() if isinstance(v, dict)}


def git(tree: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=tree, env=GIT_ENV, text=True, capture_output=True, check=True
    ).stdout


def copy_tree(name: str, dest: Path, *, as_git: bool = True) -> Path:
    """A copy of a fixture tree; as_git: a repository whose first commit is the pristine tree,
    the way `fetch` leaves every tree."""
    origin = FIXTURES / "lxc-mini" if name == "lxc-mini" else ERAS / name
    tree = dest / name
    shutil.copytree(origin, tree)
    if as_git:
        init_git(tree)
    return tree


def init_git(tree: Path) -> None:
    """Make `tree` a repository whose first commit holds it as it is."""
    git(tree, "init", "-q")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "pristine")


def snapshot(tree: Path) -> dict[str, bytes]:
    """Every file of the tree (outside .git) and its bytes."""
    return {
        str(p.relative_to(tree)): p.read_bytes()
        for p in sorted(tree.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(tree).parts
    }


def commits(tree: Path) -> list[str]:
    return git(tree, "log", "--format=%s").splitlines()
