"""fetch of a directory, and what every fetch shares: names, --force, manifests, bad options."""

from __future__ import annotations

import json
import os
from pathlib import Path

import git
import pytest

from lxcpatch.errors import LxcpatchError, PrerequisiteError
from lxcpatch.fetch import MANIFEST_KEYS, load_manifest
from lxcpatch.sources import SourceKind
from lxcpatch.workspace import Workspace
from tests.conftest import CliRunner
from tests.fetch_helpers import fetch_fails, fetch_ok, listing, says, snapshot

CONTRACT = (
    "name", "kind", "source", "ref", "commit", "pristine", "files", "version", "build_system",
    "debian", "time",
)  # fmt: skip


@pytest.fixture
def ws(workdir: Path) -> Workspace:
    return Workspace(workdir)


def test_directory_is_copied_and_left_alone(cli: CliRunner, workdir: Path, lxc_mini: Path) -> None:
    before = snapshot(lxc_mini)
    proc = cli("fetch", "--source", lxc_mini, "--json", check=True)
    assert snapshot(lxc_mini) == before and not (lxc_mini / ".git").exists()
    report = json.loads(proc.stdout)
    assert (report["name"], report["kind"], report["source"]) == (
        "lxc-mini",
        "directory",
        str(lxc_mini),
    )
    tree = workdir / "src" / "lxc-mini"
    assert {k: v for k, v in snapshot(tree).items() if not k.startswith(".git")} == before
    assert git.Repo(tree).head.commit.hexsha == report["pristine"]


def test_manifest_round_trip(ws: Workspace, lxc_mini: Path) -> None:
    fetched = fetch_ok(ws, source=str(lxc_mini), name="mini")
    loaded = load_manifest(ws, "mini")
    assert loaded == fetched and loaded.kind is SourceKind.DIRECTORY
    document = json.loads(ws.manifest("mini").read_text())
    # The keys other stages rely on (COMMON.md), exactly.
    assert sorted(document) == sorted(CONTRACT) == sorted(MANIFEST_KEYS)
    assert ws.current_tree() == "mini"


def test_load_manifest_errors(ws: Workspace) -> None:
    with pytest.raises(PrerequisiteError, match="no fetched tree 'gone'"):
        load_manifest(ws, "gone")
    ws.src.mkdir(parents=True)
    ws.manifest("bad").write_text('{"name": "bad"}')
    with pytest.raises(LxcpatchError, match="damaged") as caught:
        load_manifest(ws, "bad")
    assert "--force" in str(caught.value.hint)


def test_existing_tree_needs_force(cli: CliRunner, workdir: Path, lxc_mini: Path) -> None:
    cli("fetch", "--source", lxc_mini, check=True)
    tree = workdir / "src" / "lxc-mini"
    (tree / "local-change").write_text("mine\n")
    first = json.loads((workdir / "src" / "lxc-mini.json").read_text())
    proc = cli("fetch", "--source", lxc_mini)
    assert proc.returncode == 1
    assert says(proc.stderr, "a tree named lxc-mini already exists", "hint:", "--force")
    assert (tree / "local-change").exists()
    assert json.loads((workdir / "src" / "lxc-mini.json").read_text()) == first
    (lxc_mini / "configure.ac").write_text("AC_INIT([lxc], [2.0.12])\n")
    cli("fetch", "--source", lxc_mini, "--force", check=True)
    assert not (tree / "local-change").exists()
    assert json.loads((workdir / "src" / "lxc-mini.json").read_text())["version"] == "2.0.12"
    assert not list(workdir.glob(".tmp-*"))


def test_name_option(ws: Workspace, lxc_mini: Path) -> None:
    manifest = fetch_ok(ws, source=str(lxc_mini), name="lxc-2.0.11+mine")
    assert manifest.tree == ws.src / "lxc-2.0.11+mine" and manifest.tree.is_dir()
    fetch_fails(ws, 2, "invalid tree name", source=str(lxc_mini), name="../escape")


def test_directory_that_is_not_lxc(ws: Workspace, lxc_mini: Path) -> None:
    (lxc_mini / "src" / "lxc" / "start.c").unlink()
    fetch_fails(ws, 1, "not an LXC source tree", "src/lxc/start.c is missing", source=str(lxc_mini))


def test_start_c_linking_out_of_the_tree(ws: Workspace, lxc_mini: Path, tmp_path: Path) -> None:
    outside = tmp_path / "start.c"
    (lxc_mini / "src" / "lxc" / "start.c").rename(outside)
    os.symlink(outside, lxc_mini / "src" / "lxc" / "start.c")
    fetch_fails(ws, 1, "src/lxc/start.c is a link out of the tree", source=str(lxc_mini))


def test_meson_tree(ws: Workspace, lxc_mini: Path) -> None:
    (lxc_mini / "configure.ac").unlink()
    (lxc_mini / "meson.build").write_text("project('lxc', 'c',\n  version: '6.0.5')\n")
    manifest = fetch_ok(ws, source=str(lxc_mini))
    assert (manifest.version, manifest.build_system) == ("6.0.5", "meson")


def test_workspace_inside_the_source(lxc_mini: Path) -> None:
    fetch_fails(Workspace(lxc_mini / "build"), 2, "lies inside the source directory",
                source=str(lxc_mini))  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "/nonexistent/lxc"], "no such file or directory"),
        (["--sha256", "nothex"], "is not a sha256"),
        (["--version", "2.0"], "is not an LXC release number"),
        (["--ref", "lxc-2.0.11", "--version", "2.0.11"], "--version and --ref"),
        (["--name", "a/b"], "invalid tree name"),
    ],
)
def test_bad_options_exit_2(cli: CliRunner, workdir: Path, args: list[str], message: str) -> None:
    proc = cli("fetch", *args)
    assert proc.returncode == 2
    assert says(proc.stderr, message, "hint:")
    assert listing(workdir / "src") == [] and listing(workdir / "cache") == []


def test_json_error_document(cli: CliRunner, tmp_path: Path) -> None:
    proc = cli("fetch", "--source", tmp_path / "nothing.tar.gz", "--json")
    document = json.loads(proc.stdout)
    assert document["exit_code"] == 2 and "no such file" in document["error"]
    assert document["hint"]


def test_second_fetch_at_once_is_refused(cli: CliRunner, workdir: Path, lxc_mini: Path) -> None:
    with Workspace(workdir).lock("fetch"):
        proc = cli("fetch", "--source", lxc_mini)
    assert proc.returncode == 1
    assert says(proc.stderr, "fetch is busy", "hint:")
    assert listing(workdir / "src") == []


def test_source_date_epoch_dates_the_pristine_commit(
    ws: Workspace, lxc_mini: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567890")
    first = fetch_ok(ws, source=str(lxc_mini), name="a")
    second = fetch_ok(ws, source=str(lxc_mini), name="b")
    assert git.Repo(first.tree).head.commit.committed_date == 1234567890
    assert first.pristine == second.pristine  # same bytes, same date, same identity
