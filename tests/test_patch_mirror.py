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
from pathlib import Path, PurePosixPath

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
# Every drop call, whatever the capability (released C files have none in comments or strings;
# the test checks that against the parser's count too).
DROP_CALL = re.compile(rb"\bprctl\s*\(\s*PR_CAPBSET_DROP\b")
BOTH = "@cap-sys-boot\n@cap-drops\n"


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


def _patch_series(ws: Workspace, tree: Path, series: Path) -> PatchReport:
    report = run_patch(ws, PatchRequest(trees=(str(tree),), series=series))
    assert isinstance(report, PatchReport)
    return report


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


def test_every_tag_with_both_recipes_rewrites_every_drop_or_names_why(tmp_path: Path) -> None:
    """@cap-sys-boot + @cap-drops: every PR_CAPBSET_DROP call in the C files under src/lxc/ is
    rewritten (one token each) or left alone with its reason; again, in either order: nothing
    changes; revert: the pristine bytes."""
    ws = Workspace(tmp_path / "build")
    series = tmp_path / "series"
    series.write_text(BOTH)
    reverse = tmp_path / "series-reversed"
    reverse.write_text("@cap-drops\n@cap-sys-boot\n")
    tags = _mirror("tag", "--sort=creatordate").decode().split()
    table = [f"{'tag':<22} {'@cap-sys-boot':<15} {'@cap-drops':<15} rewritten / left alone"]
    totals = {"rewritten": 0, "left": 0}
    for number, tag in enumerate(tags):
        folder = str(PurePosixPath(_start_c(tag)).parent)
        tree = _extract(tag, tmp_path / "trees", [folder])
        if number % 2 == 0:
            git(tree, "init", "-q")
            git(tree, "add", "-A")
            git(tree, "commit", "-q", "-m", "pristine")
        pristine = snapshot(tree)
        sources = {k: v for k, v in pristine.items() if k.endswith(".c")}
        calls = {k: len(DROP_CALL.findall(v)) for k, v in sources.items() if DROP_CALL.search(v)}
        for file in calls:  # the windowed parse sees what the whole parse sees
            assert scan(sources[file]) == scan(sources[file], whole=True), (tag, file)

        report = _patch_series(ws, tree, series)
        boot, drops = report.trees[0].results
        assert boot.status in {Status.PATCHED, Status.NOT_NEEDED}, (tag, boot.reason)
        assert drops.status in {Status.PATCHED, Status.NOT_NEEDED}, (tag, drops.reason)
        left = {(s.file, s.line) for s in drops.skipped}
        assert all(s.reason for s in drops.skipped)
        rewritten = {}
        for file, count in calls.items():
            after = (tree / file).read_bytes()
            mine = after.count(TOKENS["@cap-drops"].encode())
            theirs = after.count(TOKENS["@cap-sys-boot"].encode())
            skipped = sum(1 for f, _ in left if f == file)
            # Every call: rewritten by one recipe or the other, or named as left alone.
            assert mine + theirs + skipped == count, (tag, file, mine, theirs, skipped, count)
            assert theirs == (file == _start_c(tag) and bool(DROPS_SYS_BOOT.search(sources[file])))
            rewritten[file] = mine
        totals["rewritten"] += sum(rewritten.values())
        totals["left"] += len(left)

        expected = [
            Status.ALREADY_PATCHED if first.status is Status.PATCHED else Status.NOT_NEEDED
            for first in (boot, drops)
        ]
        again = _patch_series(ws, tree, series)
        assert [r.status for r in again.trees[0].results] == expected, tag
        assert len(again.trees[0].results[1].skipped) == len(left), tag
        other_order = _patch_series(ws, tree, reverse)
        assert [r.status for r in other_order.trees[0].results] == expected[::-1], tag
        revert([tree])
        assert snapshot(tree) == pristine, tag
        where = ", ".join(f"{PurePosixPath(f).name} {n}" for f, n in rewritten.items() if n)
        table.append(f"{tag:<22} {boot.status:<15} {drops.status:<15} {where or '-'} / {len(left)}")
    table.append(f"{len(tags)} tags: {totals['rewritten']} drops rewritten by @cap-drops, "
                 f"{totals['left']} left alone")  # fmt: skip
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
