"""fetch of Debian source packages: a .dsc built here with dpkg-source, by path, over HTTP,
and through apt from a file:// source repository (apt never sees the machine's sources)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import git
import pytest

from lxcpatch.workspace import Workspace
from tests.conftest import FIXTURES, CliRunner
from tests.fetch_helpers import (
    Server,
    apt_repo,
    build_dsc,
    fetch_fails,
    fetch_ok,
    listing,
    says,
    serve,
    sha256,
)

FILES = ("lxc_2.0.11-1.dsc", "lxc_2.0.11.orig.tar.gz", "lxc_2.0.11-1.debian.tar.xz")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("deb") / "pool"
    build_dsc(FIXTURES / "lxc-mini", folder)
    return folder


@pytest.fixture
def package(built: Path, tmp_path: Path) -> Path:
    """A fresh copy of the source package's folder."""
    folder = tmp_path / "pool"
    shutil.copytree(built, folder)
    return folder


@pytest.fixture
def ws(workdir: Path) -> Workspace:
    return Workspace(workdir)


@pytest.fixture
def server(package: Path) -> Iterator[Server]:
    with serve(package) as running:
        yield running


def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_dsc_by_path(cli: CliRunner, workdir: Path, package: Path) -> None:
    dsc = package / FILES[0]
    proc = cli("fetch", "--source", dsc, "--json", check=True)
    manifest = json.loads((workdir / "src" / "lxc_2.0.11-1.json").read_text())
    assert json.loads(proc.stdout)["pristine"] == manifest["pristine"]
    assert manifest["kind"] == "dsc" and manifest["source"] == str(dsc)
    assert manifest["files"] == {name: sha256(package / name) for name in FILES}
    assert (manifest["version"], manifest["debian"]) == ("2.0.11", True)
    tree = workdir / "src" / "lxc_2.0.11-1"
    assert (tree / "debian" / "changelog").is_file() and (tree / "src/lxc/start.c").is_file()
    repo = git.Repo(tree)
    assert repo.git.rev_list("HEAD").split() == [manifest["pristine"]]
    # The pristine commit is dated by debian/changelog (Mon, 01 Jan 2024 00:00:00 +0000).
    assert repo.head.commit.committed_date == 1704067200
    assert listing(workdir / "cache") == []  # local files are not downloads


@pytest.mark.parametrize("victim", FILES[1:])
def test_tampered_file_beside_dsc_fails(ws: Workspace, package: Path, victim: str) -> None:
    _tamper(package / victim)
    fetch_fails(ws, 1, f"sha256 mismatch for {victim} listed in {FILES[0]}",
                source=str(package / FILES[0]))  # fmt: skip


def test_missing_file_beside_dsc_fails(ws: Workspace, package: Path) -> None:
    (package / FILES[2]).unlink()
    fetch_fails(ws, 1, f"{FILES[2]}, listed in {FILES[0]}, is missing",
                source=str(package / FILES[0]))  # fmt: skip


def test_dsc_over_http_then_from_cache(ws: Workspace, server: Server, package: Path) -> None:
    url = f"{server.url}/{FILES[0]}"
    first = fetch_ok(ws, source=url, sha256=sha256(package / FILES[0]))
    assert first.files == {name: sha256(package / name) for name in FILES}
    assert len(first.downloaded) == 3
    assert listing(ws.cache) == sorted([*first.files.values(), "index.json"])
    again = fetch_ok(ws, source=url, offline=True, force=True)
    assert again.downloaded == () and again.files == first.files
    assert len(server.requests) == 3


def test_tampered_file_over_http_keeps_nothing(
    ws: Workspace, server: Server, package: Path
) -> None:
    _tamper(package / FILES[1])
    fetch_fails(ws, 1, f"sha256 mismatch for {FILES[1]}", "discarded",
                source=f"{server.url}/{FILES[0]}")  # fmt: skip


def test_wrong_dsc_sha256(ws: Workspace, server: Server) -> None:
    fetch_fails(ws, 1, f"sha256 mismatch for {FILES[0]}",
                source=f"{server.url}/{FILES[0]}", sha256="2" * 64)  # fmt: skip


@pytest.fixture
def apt_env(package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = apt_repo(package, tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_apt_source_package(
    cli: CliRunner, workdir: Path, package: Path, apt_env: dict[str, str]
) -> None:
    proc = cli("fetch", "--source", "apt:lxc=1:2.0.11-1", "--json", env=apt_env, check=True)
    report = json.loads(proc.stdout)
    assert report["name"] == "lxc_2.0.11-1" and report["kind"] == "dsc"
    assert report["source"] == "apt:lxc=1:2.0.11-1"
    assert report["files"] == {name: sha256(package / name) for name in FILES}
    assert len(report["downloaded"]) == 3
    cache = listing(workdir / "cache")
    assert set(report["files"].values()) <= set(cache)
    assert all(not (workdir / "cache" / d).is_symlink() for d in report["files"].values())


def test_apt_again_offline_from_cache(
    ws: Workspace, package: Path, apt_env: dict[str, str]
) -> None:
    first = fetch_ok(ws, source="apt:lxc")
    (package / "Sources").unlink()  # the repository is gone: only the cache can serve it now
    again = fetch_ok(ws, source="apt:lxc", offline=True, force=True)
    assert again.downloaded == () and again.files == first.files


def test_apt_offline_without_lists_fails(ws: Workspace, apt_env: dict[str, str]) -> None:
    fetch_fails(ws, 2, "--offline", "no package lists", source="apt:lxc", offline=True)


def test_apt_unknown_package_fails(ws: Workspace, apt_env: dict[str, str]) -> None:
    fetch_fails(ws, 1, "apt-get could not find the source package nosuch", source="apt:nosuch")


def test_apt_tampered_repository_fails(
    ws: Workspace, package: Path, apt_env: dict[str, str]
) -> None:
    _tamper(package / FILES[1])
    error = fetch_fails(ws, 1, "apt-get could not download", source="apt:lxc")
    assert says(str(error), FILES[1]) and "do not match its index" in str(error.hint)
