"""fetch from git: a repository made here with tags, cloned shallow through file://."""

from __future__ import annotations

import json
from pathlib import Path

import git
import pytest

from lxcpatch.sources import ENV_UPSTREAM, PINNED
from lxcpatch.workspace import Workspace
from tests.conftest import FIXTURES, CliRunner
from tests.fetch_helpers import fetch_fails, fetch_ok, free_port, git_repo, listing, says


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    repo = tmp_path_factory.mktemp("origin") / "lxc"
    return repo, git_repo(FIXTURES / "lxc-mini", repo)


@pytest.fixture
def ws(workdir: Path) -> Workspace:
    return Workspace(workdir)


def test_fetch_tag_over_file_url(
    cli: CliRunner, workdir: Path, origin: tuple[Path, dict[str, str]]
) -> None:
    repo, commits = origin
    proc = cli("fetch", "--source", repo.as_uri(), "--ref", "lxc-2.0.11", "--json", check=True)
    report = json.loads(proc.stdout)
    manifest = json.loads((workdir / "src" / "lxc-2.0.11.json").read_text())
    assert {k: report[k] for k in manifest} == manifest
    assert manifest["kind"] == "git" and manifest["ref"] == "lxc-2.0.11"
    assert manifest["commit"] == manifest["pristine"] == commits["lxc-2.0.11"]
    assert (manifest["version"], manifest["build_system"], manifest["debian"]) == (
        "2.0.11",
        "autotools",
        False,
    )
    assert manifest["files"] == {}
    assert manifest["time"].endswith("Z")
    tree = git.Repo(workdir / "src" / "lxc-2.0.11")
    assert tree.active_branch.name == "lxcpatch" and not tree.is_dirty(untracked_files=True)
    # Shallow: the pristine commit is the first (only) one.
    assert tree.git.rev_list("--max-parents=0", "HEAD") == commits["lxc-2.0.11"]
    assert tree.git.rev_list("--count", "HEAD") == "1"
    assert tree.config_reader().get_value("user", "name") == "lxcpatch"
    assert json.loads((workdir / "current.json").read_text()) == {"tree": "lxc-2.0.11"}
    assert "fetched lxc-2.0.11" in proc.stderr


def test_annotated_tag_branch_commit_and_version(
    ws: Workspace, origin: tuple[Path, dict[str, str]]
) -> None:
    repo, commits = origin
    annotated = fetch_ok(ws, source=str(repo), version="2.0.10")
    assert (annotated.name, annotated.ref) == ("lxc-2.0.10", "lxc-2.0.10")
    assert annotated.commit == commits["lxc-2.0.10"] and annotated.version == "2.0.10"
    branch = fetch_ok(ws, source=str(repo), ref="main")
    assert (branch.name, branch.version, branch.commit) == ("lxc-2.0.12", "2.0.12", commits["main"])
    assert (branch.tree / "NEWS").is_file()
    pinned = fetch_ok(ws, source=repo.as_uri(), ref=commits["lxc-2.0.10"], name="by-commit")
    assert pinned.commit == commits["lxc-2.0.10"] and pinned.version == "2.0.10"
    head = fetch_ok(ws, source=str(repo / ".git"), name="head")
    assert head.ref is None and head.commit == commits["main"]


def test_bare_repository(
    ws: Workspace, origin: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    repo, commits = origin
    bare = tmp_path / "lxc.git"
    git.Repo.clone_from(repo.as_uri(), bare, bare=True)
    manifest = fetch_ok(ws, source=str(bare), ref="lxc-2.0.11")
    assert manifest.commit == commits["lxc-2.0.11"] and manifest.source == str(bare)


def test_pinned_commit_mismatch_fails(
    ws: Workspace, origin: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Our repository's lxc-2.0.11 is not upstream's: as the default source, the pin must refuse it.
    repo, commits = origin
    monkeypatch.setenv(ENV_UPSTREAM, repo.as_uri())
    error = fetch_fails(ws, 1, commits["lxc-2.0.11"], PINNED["lxc-2.0.11"], "pinned")
    assert "--source" in str(error.hint)
    # Named explicitly, the same repository is fetched unpinned.
    assert fetch_ok(ws, source=repo.as_uri()).commit == commits["main"]


def test_commit_that_is_not_there_fails(ws: Workspace, origin: tuple[Path, dict[str, str]]) -> None:
    repo, _ = origin
    fetch_fails(ws, 1, "no commit", source=repo.as_uri(), ref="0" * 40)


def test_missing_tag_fails_with_naming_hint(
    cli: CliRunner, workdir: Path, origin: tuple[Path, dict[str, str]]
) -> None:
    repo, _ = origin
    proc = cli("fetch", "--source", repo.as_uri(), "--version", "9.9.9")
    assert proc.returncode == 1
    assert says(proc.stderr, "has no tag or branch 'v9.9.9'", "hint:", "lxc-X.Y.Z")
    assert listing(workdir / "src") == [] and listing(workdir / "cache") == []


def test_unreachable_default_names_url_and_local_alternatives(
    cli: CliRunner, workdir: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}/lxc.git"
    proc = cli("fetch", env={ENV_UPSTREAM: url})
    assert proc.returncode == 1
    assert says(proc.stderr, f"cannot reach {url}", "Failed to connect", "hint:")
    assert says(proc.stderr, "point --source at a local mirror", "or at a release tarball")
    assert listing(workdir / "src") == []


def test_offline_refuses_a_remote_clone(ws: Workspace) -> None:
    fetch_fails(ws, 2, "--offline", "https://github.com/lxc/lxc.git", offline=True)


def test_offline_clones_a_local_repository(
    ws: Workspace, origin: tuple[Path, dict[str, str]]
) -> None:
    repo, commits = origin
    assert (
        fetch_ok(ws, source=str(repo), ref="lxc-2.0.11", offline=True).commit
        == commits["lxc-2.0.11"]
    )


def test_not_lxc_repository_fails(ws: Workspace, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "configure.ac").write_text("AC_INIT([hello], [1.0])\n")
    repo = git.Repo.init(other)
    repo.index.add(["configure.ac"])
    repo.index.commit("hello")
    fetch_fails(ws, 1, "not an LXC source tree", "src/lxc/start.c is missing", source=str(other))
