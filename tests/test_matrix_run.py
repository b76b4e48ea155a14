"""`invoke matrix --run` on a matrix of fixture entries (test data pointing at local sources):
each entry is fetched, patched, built and verified for real in its own workspace, and a failing
entry is reported without stopping the others."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.matrix_helpers import ENTRIES, MatrixRun

pytestmark = pytest.mark.slow


def test_matrix_run_exits_1_and_lists_every_entry_in_order(
    fixture_matrix_run: MatrixRun,
) -> None:
    run = fixture_matrix_run
    assert run.proc.returncode == 1, run.proc.stderr
    assert [e["release"] for e in run.document["entries"]] == list(ENTRIES)
    assert run.document["failed"] == ["missing-debian-bookworm", "broken-debian-bookworm"]
    for name in ENTRIES:
        assert f"{name}-debian-bookworm" in run.proc.stderr
    assert "2 built, 2 failed" in run.proc.stderr


@pytest.mark.parametrize("name", ["mini-git", "mini-dir"])
def test_each_good_entry_is_built_and_verified_in_its_own_workspace(
    fixture_matrix_run: MatrixRun, name: str
) -> None:
    run = fixture_matrix_run
    entry = next(e for e in run.document["entries"] if e["release"] == name)
    assert entry["outcome"] == "built", entry
    assert entry["verify"] == "patched"
    assert [s["step"] for s in entry["steps"]] == ["fetch", "patch", "build", "verify"]
    assert all(s["exit_code"] == 0 and Path(s["log"]).is_file() for s in entry["steps"])
    root = run.workdir / "matrix" / f"{name}-debian-bookworm"
    assert entry["workspace"] == str(root)
    debs = run.debs(name)
    assert entry["debs"] and all(Path(d).parent == debs for d in entry["debs"])
    assert (debs / "SHA256SUMS").is_file() and (debs / "build.json").is_file()
    check = subprocess.run(
        ["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=debs, capture_output=True
    )
    assert check.returncode == 0
    for deb in entry["debs"]:
        version = subprocess.run(
            ["dpkg-deb", "--field", deb, "Version"], text=True, capture_output=True, check=True
        ).stdout
        assert "lxcpatch" in version
    # The entries share the parent workspace's download cache.
    assert (root / "cache").resolve() == (run.workdir / "cache").resolve()


def test_a_source_that_does_not_exist_fails_at_fetch(fixture_matrix_run: MatrixRun) -> None:
    entry = fixture_matrix_run.document["entries"][0]
    assert entry["release"] == "missing"
    assert entry["outcome"] == "failed" and entry["failed_step"] == "fetch"
    assert "no-such-tree" in entry["message"]
    assert [s["step"] for s in entry["steps"]] == ["fetch"]
    assert entry["steps"][0]["exit_code"] == 2


def test_a_tree_that_does_not_compile_fails_at_build_with_its_log(
    fixture_matrix_run: MatrixRun,
) -> None:
    entry = next(e for e in fixture_matrix_run.document["entries"] if e["release"] == "broken")
    assert entry["outcome"] == "failed" and entry["failed_step"] == "build"
    assert entry["debs"] == [] and entry["verify"] is None
    assert "error:" in entry["message"]  # the compiler's, not only "make failed"
    step = entry["steps"][-1]
    assert step["step"] == "build" and step["exit_code"] == 1
    assert "this_does_not_compile" in Path(step["log"]).read_text()
    assert "build failed (exit 1)" in fixture_matrix_run.proc.stderr
