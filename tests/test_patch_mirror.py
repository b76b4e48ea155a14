"""Every upstream tag of a local LXC mirror (LXCPATCH_LXC_MIRROR): patch, again, revert.

Run with `LXCPATCH_LXC_MIRROR=/path/to/lxc.git .venv/bin/python -m pytest -s -m lxc_mirror
tests/test_patch_mirror.py` to also see the per-tag table.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from lxcpatch.locate import scan
from lxcpatch.patch import PatchReport, PatchRequest, Status, revert, run_patch
from lxcpatch.recipes import TOKENS
from lxcpatch.workspace import Workspace
from tests.test_patch_support import git, snapshot

MIRROR = os.environ.get("LXCPATCH_LXC_MIRROR")
pytestmark = [
    pytest.mark.lxc_mirror,
    pytest.mark.skipif(not MIRROR, reason="LXCPATCH_LXC_MIRROR is not set"),
]
# An oracle independent of lxcpatch's parser: released start.c files hold no decoys.
DROPS_SYS_BOOT = re.compile(rb"prctl\s*\(\s*PR_CAPBSET_DROP\s*,\s*CAP_SYS_BOOT\b")


def _mirror(*args: str) -> bytes:
    assert MIRROR
    return subprocess.run(
        ["git", f"--git-dir={MIRROR}", *args], capture_output=True, check=True
    ).stdout


def _extract(tag: str, dest: Path, paths: list[str]) -> Path:
    tree = dest / tag
    tree.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(_mirror("archive", tag, "--", *paths))) as archive:
        archive.extractall(tree, filter="data")
    return tree


def _start_c(tag: str) -> str:
    listed = _mirror("ls-tree", "-r", "--name-only", tag, "--", "src/lxc/start.c")
    return "src/lxc/start.c" if listed.strip() else "src/liblxc/start.c"


def _patch(ws: Workspace, tree: Path) -> Status:
    report = run_patch(ws, PatchRequest(trees=(str(tree),)))
    assert isinstance(report, PatchReport)
    (result,) = report.trees[0].results
    return result.status


def test_every_tag_patches_reverts_and_is_idempotent(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "build")
    tags = _mirror("tag", "--sort=creatordate").decode().split()
    assert len(tags) > 100
    table = []
    for number, tag in enumerate(tags):
        start_c = _start_c(tag)
        tree = _extract(tag, tmp_path / "trees", [start_c])
        as_git = number % 2 == 0  # fetched trees are git repositories; plain folders work too
        if as_git:
            git(tree, "init", "-q")
            git(tree, "add", "-A")
            git(tree, "commit", "-q", "-m", "pristine")
        pristine = snapshot(tree)
        drops = bool(DROPS_SYS_BOOT.search(pristine[start_c]))
        # Parsing only the items that mention the drop finds what a whole parse finds.
        assert scan(pristine[start_c]) == scan(pristine[start_c], whole=True), tag

        first = _patch(ws, tree)
        assert first is (Status.PATCHED if drops else Status.NOT_NEEDED), tag
        patched = (tree / start_c).read_bytes()
        assert (TOKENS["@cap-sys-boot"].encode() in patched) is drops, tag
        second = _patch(ws, tree)
        assert second is (Status.ALREADY_PATCHED if drops else Status.NOT_NEEDED), tag
        revert([tree])
        assert snapshot(tree) == pristine, tag
        table.append(f"{tag:<22} {start_c:<20} {first:<11} then {second}")
    print("\n" + "\n".join(table))


@pytest.mark.slow
@pytest.mark.parametrize("tag", ["lxc-2.0.11", "lxc-1.0.11"])
def test_patched_start_c_compiles_in_a_real_build(tag: str, tmp_path: Path) -> None:
    tree = _extract(tag, tmp_path, ["."])
    git(tree, "init", "-q")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "pristine")
    assert _patch(Workspace(tmp_path / "build"), tree) is Status.PATCHED
    env = {**os.environ, "CFLAGS": "-g -O2 -Wno-error"}
    configure = [
        "./configure", "--disable-werror", "--disable-doc", "--disable-api-docs",
        "--disable-python", "--disable-lua", "--disable-apparmor", "--disable-selinux",
        "--disable-seccomp", "--disable-cgmanager", "--enable-capabilities",
    ]  # fmt: skip
    # 1.0.x adds -Werror whatever --disable-werror says; newer compilers warn about its code.
    make = ["make", "-C", "src/lxc", "-j2", "CFLAGS=-g -O2 -Wno-error"]
    for argv in (["./autogen.sh"], configure, make):
        proc = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{argv[0]}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    libraries = sorted((tree / "src/lxc").rglob("liblxc.so*"))
    assert any(TOKENS["@cap-sys-boot"].encode() in lib.read_bytes() for lib in libraries)
