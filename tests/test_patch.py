"""`patch` on real trees: apply, commit, verify, check, revert, status, refusals, many trees."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from lxcpatch import patch as patching
from lxcpatch.errors import LxcpatchError
from lxcpatch.patch import PatchRequest, Status, applied, revert, run_patch
from lxcpatch.workspace import Workspace
from tests.conftest import CliRunner
from tests.test_patch_support import commits, copy_tree, git, snapshot


def _run(ws: Workspace, *trees: Path, **options: object) -> patching.PatchReport:
    report = run_patch(ws, PatchRequest(trees=tuple(map(str, trees)), **options))  # type: ignore[arg-type]
    assert isinstance(report, patching.PatchReport)
    return report


def test_patch_commits_a_dep3_patch_and_verifies_it(tmp_path: Path, workdir: Path) -> None:
    ws = Workspace(workdir)
    tree = copy_tree("lxc-mini", tmp_path)
    pristine = snapshot(tree)

    report = _run(ws, tree)

    assert report.exit_code == 0
    (result,) = report.trees[0].results
    assert (result.recipe, result.status, result.file) == (
        "@cap-sys-boot",
        Status.PATCHED,
        "src/lxc/start.c",
    )
    assert result.patch == workdir / "patches" / "lxc-mini" / "0001-cap-sys-boot.patch"
    text = result.patch.read_text()
    for field in ("Description: ", "Author: ", "Forwarded: not-needed", "Last-Update: "):
        assert field in text
    assert "--- a/src/lxc/start.c\n+++ b/src/lxc/start.c\n" in text
    assert commits(tree) == [
        "lxc-start: tolerate CAP_SYS_BOOT already missing from the bounding set",
        "pristine",
    ]
    assert git(tree, "status", "--porcelain") == ""
    changed = {k for k, v in snapshot(tree).items() if pristine.get(k) != v}
    assert changed == {"src/lxc/start.c"}
    assert b"lxcpatch:cap-sys-boot-tolerated" in (tree / "src/lxc/start.c").read_bytes()
    # The committed patch reverses cleanly, as the verification step demanded.
    git(tree, "apply", "--check", "--reverse", str(result.patch))

    (record,) = applied(tree)
    assert (record.name, record.recipe, record.path) == (
        "0001-cap-sys-boot.patch",
        "@cap-sys-boot",
        result.patch,
    )
    assert record.sha256 == hashlib.sha256(result.patch.read_bytes()).hexdigest()
    assert record.description.startswith("lxc-start: tolerate CAP_SYS_BOOT")


def test_second_run_is_already_patched_and_revert_restores_pristine(
    tmp_path: Path, workdir: Path
) -> None:
    ws = Workspace(workdir)
    tree = copy_tree("lxc-2.0.11", tmp_path)
    pristine, head = snapshot(tree), git(tree, "rev-parse", "HEAD")
    _run(ws, tree)

    again = _run(ws, tree)
    assert [r.status for r in again.trees[0].results] == [Status.ALREADY_PATCHED]
    assert len(commits(tree)) == 2

    report = revert([tree])
    assert [p.name for p in report.reverted[0][1]] == ["0001-cap-sys-boot.patch"]
    assert snapshot(tree) == pristine
    assert git(tree, "rev-parse", "HEAD") == head
    assert applied(tree) == []


def test_a_tree_that_is_not_a_git_repository_keeps_a_record_beside_it(
    tmp_path: Path, workdir: Path
) -> None:
    ws = Workspace(workdir)
    tree = copy_tree("lxc-0.6.1", tmp_path, as_git=False)
    pristine = snapshot(tree)

    report = _run(ws, tree)

    assert report.exit_code == 0
    record = tmp_path / ".lxc-0.6.1.lxcpatch"
    assert json.loads((record / "record.json").read_text())["patches"][0]["recipe"] == (
        "@cap-sys-boot"
    )
    assert [p.name for p in applied(tree)] == ["0001-cap-sys-boot.patch"]
    assert snapshot(tree) != pristine
    assert _run(ws, tree).trees[0].results[0].status is Status.ALREADY_PATCHED

    revert([tree])
    assert snapshot(tree) == pristine
    assert not record.exists()


def test_check_prints_the_diff_and_changes_nothing(cli: CliRunner, tmp_path: Path) -> None:
    tree = copy_tree("lxc-1.0.11", tmp_path)
    pristine = snapshot(tree)

    proc = cli("patch", "--check", "--tree", tree, "--json")

    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)["trees"][0]["results"]
    assert result["status"] == "patched" and result["patch"] is None
    assert "+#define PR_CAPBSET_READ 23" in result["diff"]
    assert "+\t\t\tif (prctl(PR_CAPBSET_READ, CAP_SYS_BOOT, 0, 0, 0) == 0) {" in proc.stderr
    assert snapshot(tree) == pristine
    assert commits(tree) == ["pristine"]
    assert not (tmp_path / "build" / "patches").exists()


@pytest.mark.parametrize(
    ("name", "word"),
    [("variant-ambiguous", "ambiguous"), ("variant-unrecognized", "unrecognized")],
)
def test_refusals_change_nothing(tmp_path: Path, workdir: Path, name: str, word: str) -> None:
    tree = copy_tree(name, tmp_path)
    pristine = snapshot(tree)

    report = _run(Workspace(workdir), tree)

    (result,) = report.trees[0].results
    assert result.status is Status.REFUSED and result.reason.startswith(word)
    assert result.line == 77
    assert report.exit_code == 1
    assert snapshot(tree) == pristine and commits(tree) == ["pristine"]


def test_not_needed_is_success(cli: CliRunner, tmp_path: Path) -> None:
    tree = copy_tree("lxc-2.1.0", tmp_path)
    proc = cli("patch", "--tree", tree, "--json")
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)["trees"][0]["results"]
    assert result["status"] == "not-needed"
    assert "fallback #define" in result["reason"]
    assert commits(tree) == ["pristine"]


def test_many_trees_each_get_their_own_result(cli: CliRunner, tmp_path: Path) -> None:
    good = copy_tree("lxc-0.8.0", tmp_path)
    bad = copy_tree("variant-ignored", tmp_path)
    plain = copy_tree("lxc-0.5.0", tmp_path, as_git=False)

    proc = cli("patch", "--tree", good, "--tree", bad, "--tree", plain, "--json")

    assert proc.returncode == 1
    document = json.loads(proc.stdout)
    assert [t["tree"] for t in document["trees"]] == [str(good), str(bad), str(plain)]
    statuses = [[r["status"] for r in t["results"]] for t in document["trees"]]
    assert statuses == [["patched"], ["refused"], ["patched"]]
    assert set(document["trees"][1]["results"][0]) == {
        "recipe",
        "status",
        "file",
        "line",
        "reason",
        "patch",
        "skipped",
    }
    assert [t["outcome"] for t in document["trees"]] == ["complete", "failed", "complete"]
    status = json.loads(cli("patch", "--status", "--tree", good, "--json", check=True).stdout)
    assert [p["name"] for p in status["trees"][0]["applied"]] == ["0001-cap-sys-boot.patch"]


def test_default_tree_is_the_current_one(cli: CliRunner, workdir: Path) -> None:
    ws = Workspace(workdir)
    copy_tree("lxc-2.0.10", ws.src)
    ws.set_current("lxc-2.0.10")
    proc = cli("patch", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["trees"][0]["tree"] == str(ws.tree("lxc-2.0.10"))
    assert cli("patch", "--revert", check=True).returncode == 0
    assert commits(ws.tree("lxc-2.0.10")) == ["pristine"]


def test_usage_errors_exit_2(cli: CliRunner, tmp_path: Path) -> None:
    tree = copy_tree("lxc-2.0.11", tmp_path)
    assert cli("patch", "--check", "--revert", "--tree", tree).returncode == 2
    missing = cli("patch", "--tree", tmp_path / "nope")
    assert missing.returncode == 2 and "not found" in " ".join(missing.stderr.split())
    assert cli("patch").returncode == 2  # no current tree yet: fetch first


def test_a_dirty_tree_is_refused_untouched(tmp_path: Path, workdir: Path) -> None:
    tree = copy_tree("lxc-2.0.11", tmp_path)
    start_c = tree / "src/lxc/start.c"
    start_c.write_bytes(start_c.read_bytes() + b"/* local change */\n")
    before = snapshot(tree)

    report = _run(Workspace(workdir), tree)

    (result,) = report.trees[0].results
    assert result.status is Status.REFUSED and "uncommitted changes" in result.reason
    assert snapshot(tree) == before and commits(tree) == ["pristine"]


def test_revert_will_not_drop_commits_made_on_top(tmp_path: Path, workdir: Path) -> None:
    tree = copy_tree("lxc-2.0.11", tmp_path)
    _run(Workspace(workdir), tree)
    (tree / "NOTES").write_text("mine\n")
    git(tree, "add", "NOTES")
    git(tree, "commit", "-q", "-m", "my own work")
    with pytest.raises(LxcpatchError, match="on top of lxcpatch"):
        revert([tree])
    assert len(commits(tree)) == 3


def test_revert_keeps_unrelated_local_changes(tmp_path: Path, workdir: Path) -> None:
    tree = copy_tree("lxc-2.0.11", tmp_path)
    pristine_start = (tree / "src/lxc/start.c").read_bytes()
    _run(Workspace(workdir), tree)
    (tree / "configure.ac").write_text("dnl edited by hand\n")
    revert([tree])
    assert (tree / "src/lxc/start.c").read_bytes() == pristine_start
    assert (tree / "configure.ac").read_text() == "dnl edited by hand\n"


def test_a_folder_without_start_c_is_refused(tmp_path: Path, workdir: Path) -> None:
    tree = tmp_path / "not-lxc"
    (tree / "src").mkdir(parents=True)
    report = _run(Workspace(workdir), tree)
    (result,) = report.trees[0].results
    assert result.status is Status.REFUSED and "no src/lxc/start.c" in result.reason
    assert report.exit_code == 1
    assert applied(tree) == [] and not (tmp_path / ".not-lxc.lxcpatch").exists()
