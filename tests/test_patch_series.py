"""A series of recipes and static patches: all or nothing, no fuzz, failures pinpointed."""

from __future__ import annotations

from pathlib import Path

from lxcpatch.patch import PatchReport, PatchRequest, Status, applied, revert, run_patch
from lxcpatch.workspace import Workspace
from tests.test_patch_support import commits, copy_tree, git, snapshot

VERSION_PATCH = """\
Description: Mark the version as patched
 The tree carries lxcpatch's patches.
Forwarded: not-needed
---
--- a/configure.ac
+++ b/configure.ac
@@ -1,5 +1,5 @@
 dnl lxcpatch test fixture: the autotools entry point of an LXC 2.0.11-shaped tree.
-AC_INIT([lxc], [2.0.11])
+AC_INIT([lxc], [2.0.11+lxcpatch])
 AC_CONFIG_SRCDIR([src/lxc/start.c])
 AC_CONFIG_HEADERS([src/config.h])
 AC_PROG_CC
"""


def _series(tmp_path: Path, *lines: str, patches: dict[str, str]) -> Path:
    folder = tmp_path / "patches"
    folder.mkdir(exist_ok=True)
    for name, text in patches.items():
        (folder / name).write_text(text)
    series = folder / "series"
    series.write_text("".join(f"{line}\n" for line in lines))
    return series


def _run(workdir: Path, tree: Path, series: Path, check: bool = False) -> PatchReport:
    report = run_patch(
        Workspace(workdir), PatchRequest(trees=(str(tree),), series=series, check=check)
    )
    assert isinstance(report, PatchReport)
    return report


def test_recipe_and_static_patch_apply_in_order(tmp_path: Path, workdir: Path) -> None:
    tree = copy_tree("lxc-2.0.11", tmp_path)
    pristine = snapshot(tree)
    series = _series(
        tmp_path,
        "@cap-sys-boot",
        "0007-version.patch",
        patches={"0007-version.patch": VERSION_PATCH},
    )

    report = _run(workdir, tree, series)

    assert report.exit_code == 0
    assert [(r.recipe, r.status) for r in report.trees[0].results] == [
        ("@cap-sys-boot", Status.PATCHED),
        ("0007-version.patch", Status.PATCHED),
    ]
    assert commits(tree) == [
        "Mark the version as patched",
        "lxc-start: tolerate CAP_SYS_BOOT already missing from the bounding set",
        "pristine",
    ]
    records = applied(tree)
    assert [(p.name, p.recipe) for p in records] == [
        ("0001-cap-sys-boot.patch", "@cap-sys-boot"),
        ("0002-version.patch", "0007-version.patch"),
    ]
    assert records[1].path.read_text() == VERSION_PATCH
    assert b"2.0.11+lxcpatch" in (tree / "configure.ac").read_bytes()

    again = _run(workdir, tree, series)
    assert [r.status for r in again.trees[0].results] == [Status.ALREADY_PATCHED] * 2

    revert([tree])
    assert snapshot(tree) == pristine


def test_a_patch_that_does_not_apply_stops_the_series(tmp_path: Path, workdir: Path) -> None:
    tree = copy_tree("lxc-2.0.11", tmp_path)
    pristine = snapshot(tree)
    stale = VERSION_PATCH.replace("-AC_INIT([lxc], [2.0.11])", "-AC_INIT([lxc], [2.0.10])")
    series = _series(tmp_path, "@cap-sys-boot", "stale.patch", patches={"stale.patch": stale})

    report = _run(workdir, tree, series)

    first, second = report.trees[0].results
    assert second.status is Status.FAILED and second.file == "configure.ac"
    assert (
        "configure.ac: hunk 1 (@@ -1,5 +1,5 @@) differs at line 2: expected "
        "'AC_INIT([lxc], [2.0.10])', found 'AC_INIT([lxc], [2.0.11])'"
    ) in second.reason
    assert first.status is Status.REFUSED and "all or nothing" in first.reason
    assert report.exit_code == 1
    assert snapshot(tree) == pristine and commits(tree) == ["pristine"]
    assert not (workdir / "patches" / "lxc-2.0.11").exists()


def test_a_failure_while_applying_rolls_the_tree_back(tmp_path: Path, workdir: Path) -> None:
    for as_git in (True, False):
        tree = copy_tree("lxc-2.0.11", tmp_path / ("git" if as_git else "plain"), as_git=as_git)
        pristine = snapshot(tree)
        series = _series(
            tmp_path, "@cap-sys-boot", "version.patch", patches={"version.patch": VERSION_PATCH}
        )
        # Something in the way of the second patch file: applying it fails after the first
        # patch was applied (and committed), so the series must undo the first.
        blocker = workdir / "patches" / "lxc-2.0.11" / "0002-version.patch"
        blocker.mkdir(parents=True)

        report = _run(workdir, tree, series)

        first, second = report.trees[0].results
        assert second.status is Status.FAILED, as_git
        assert first.status is Status.REFUSED and "rolled back" in first.reason
        assert snapshot(tree) == pristine
        assert applied(tree) == []
        assert not (workdir / "patches" / "lxc-2.0.11" / "0001-cap-sys-boot.patch").exists()
        if as_git:
            assert commits(tree) == ["pristine"] and git(tree, "status", "--porcelain") == ""
        else:
            assert not (tree.parent / ".lxc-2.0.11.lxcpatch").exists()
        blocker.rmdir()


def test_static_patches_work_on_plain_trees_with_p0(tmp_path: Path, workdir: Path) -> None:
    tree = copy_tree("lxc-2.0.11", tmp_path, as_git=False)
    pristine = snapshot(tree)
    p0 = VERSION_PATCH.replace("a/configure.ac", "configure.ac").replace(
        "b/configure.ac", "configure.ac"
    )
    series = _series(tmp_path, "version.patch -p0", patches={"version.patch": p0})

    check = _run(workdir, tree, series, check=True)
    assert check.trees[0].results[0].status is Status.PATCHED and snapshot(tree) == pristine

    report = _run(workdir, tree, series)
    assert report.exit_code == 0
    assert b"2.0.11+lxcpatch" in (tree / "configure.ac").read_bytes()
    assert [p.recipe for p in applied(tree)] == ["version.patch"]
    revert([tree])
    assert snapshot(tree) == pristine


def test_a_broken_diff_is_reported_not_applied(tmp_path: Path, workdir: Path) -> None:
    tree = copy_tree("lxc-2.0.11", tmp_path)
    broken = VERSION_PATCH.replace("@@ -1,5 +1,5 @@", "@@ -1,5 +1,7 @@")
    series = _series(tmp_path, "broken.patch", patches={"broken.patch": broken})

    (result,) = _run(workdir, tree, series).trees[0].results

    assert result.status is Status.FAILED
    assert "not a valid unified diff" in result.reason or "declares" in result.reason
    assert commits(tree) == ["pristine"]
