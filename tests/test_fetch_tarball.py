"""fetch of tarballs served over HTTP on 127.0.0.1 by a server the test starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import git
import pytest

from lxcpatch.workspace import Workspace
from tests.conftest import CliRunner
from tests.fetch_helpers import (
    Server,
    fetch_fails,
    fetch_ok,
    free_port,
    listing,
    member,
    says,
    serve,
    sha256,
    tar_tree,
    tar_with,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serve(tmp_path / "www") as running:
        yield running


@pytest.fixture
def release(server: Server, lxc_mini: Path) -> tuple[str, str]:
    """lxc-2.0.11.tar.gz on the server: its URL and sha256."""
    path = tar_tree(lxc_mini, server.root / "lxc-2.0.11.tar.gz")
    return f"{server.url}/lxc-2.0.11.tar.gz", sha256(path)


@pytest.fixture
def ws(workdir: Path) -> Workspace:
    return Workspace(workdir)


def test_tarball_with_sha256(
    cli: CliRunner, workdir: Path, release: tuple[str, str], lxc_mini: Path
) -> None:
    url, digest = release
    proc = cli("fetch", "--source", url, "--sha256", digest, "--json", check=True)
    report = json.loads(proc.stdout)
    manifest = json.loads((workdir / "src" / "lxc-2.0.11.json").read_text())
    assert manifest["kind"] == "tarball" and manifest["source"] == url
    assert manifest["files"] == {"lxc-2.0.11.tar.gz": digest}
    assert manifest["commit"] is None and manifest["ref"] is None
    assert manifest["version"] == "2.0.11" and manifest["name"] == "lxc-2.0.11"
    assert report["downloaded"] == [url]
    assert listing(workdir / "cache") == sorted([digest, "index.json"])
    assert sha256(workdir / "cache" / digest) == digest
    assert (workdir / "cache" / digest).stat().st_mode & 0o777 == 0o644
    # The tree is a repository whose single commit holds exactly the tarball's files.
    tree = workdir / "src" / "lxc-2.0.11"
    repo = git.Repo(tree)
    assert repo.git.rev_list("HEAD").split() == [manifest["pristine"]]
    assert repo.active_branch.name == "lxcpatch" and not repo.is_dirty(untracked_files=True)
    committed = set(repo.git.ls_files().split())
    expected = {str(p.relative_to(lxc_mini)) for p in lxc_mini.rglob("*") if p.is_file()}
    assert committed == expected
    for name in expected:
        assert (tree / name).read_bytes() == (lxc_mini / name).read_bytes()
    newest = max(int(p.stat().st_mtime) for p in lxc_mini.rglob("*") if p.is_file())
    assert repo.head.commit.committed_date == newest
    assert repo.head.commit.committer.name == "lxcpatch"


def test_wrong_sha256_keeps_nothing(
    cli: CliRunner, workdir: Path, release: tuple[str, str]
) -> None:
    url, digest = release
    wrong = "0" * 64
    proc = cli("fetch", "--source", url, "--sha256", wrong)
    assert proc.returncode == 1
    assert says(proc.stderr, f"sha256 mismatch for lxc-2.0.11.tar.gz: expected {wrong}")
    assert says(proc.stderr, f"got {digest}", "discarded", "hint:")
    assert listing(workdir / "src") == [] and listing(workdir / "cache") == []
    assert not list(workdir.glob(".tmp-*"))


def test_second_fetch_is_served_from_the_cache(
    ws: Workspace, server: Server, release: tuple[str, str]
) -> None:
    url, digest = release
    first = fetch_ok(ws, source=url)
    assert first.downloaded == (url,) and len(server.requests) == 1
    # Known by URL (no --sha256) and by sha256 under another URL: no request at all.
    again = fetch_ok(ws, source=url, offline=True, force=True)
    assert again.downloaded == () and again.files == first.files
    elsewhere = fetch_ok(
        ws, source=f"{server.url}/mirror/lxc-2.0.11.tar.gz", sha256=digest, offline=True, force=True
    )
    assert elsewhere.downloaded == () and elsewhere.files == {"lxc-2.0.11.tar.gz": digest}
    assert len(server.requests) == 1
    assert again.pristine == first.pristine  # same bytes, same date: same commit


def test_offline_without_cache_fails(ws: Workspace, release: tuple[str, str]) -> None:
    url, digest = release
    fetch_fails(
        ws, 2, "--offline", url, "not in the cache", source=url, sha256=digest, offline=True
    )


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("truncated/lxc-2.0.11.tar.gz", "was cut short"),
        ("truncated/lxc-2.0.11.tar.gz", "1000 more were expected"),
        ("drop/lxc-2.0.11.tar.gz", "more were expected"),
        ("missing/lxc-2.0.11.tar.gz", "HTTP 404"),
    ],
)
def test_broken_downloads_keep_nothing(
    ws: Workspace, server: Server, release: tuple[str, str], path: str, message: str
) -> None:
    url = f"{server.url}/{path}"
    fetch_fails(ws, 1, message, url, source=url)


def test_server_error_is_retried(ws: Workspace, server: Server, release: tuple[str, str]) -> None:
    _, digest = release
    manifest = fetch_ok(ws, source=f"{server.url}/flaky/lxc-2.0.11.tar.gz", sha256=digest)
    assert manifest.files == {"lxc-2.0.11.tar.gz": digest}
    assert server.requests == ["/flaky/lxc-2.0.11.tar.gz"] * 2


def test_unreachable_server_names_url(cli: CliRunner, workdir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/lxc-2.0.11.tar.gz"
    proc = cli("fetch", "--source", url)
    assert proc.returncode == 1
    assert says(proc.stderr, f"cannot reach {url}", "hint:", "release tarball")
    assert listing(workdir / "src") == [] and listing(workdir / "cache") == []


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (member("lxc-2.0.11/../x"), "'..'"),
        (member("/abs"), "absolute path"),
        (member("lxc-2.0.11/etc", tarfile.SYMTYPE, "/etc"), "symbolic link to the absolute"),
        (member("lxc-2.0.11/up", tarfile.SYMTYPE, "../../etc"), "symbolic link out"),
        (member("lxc-2.0.11/hard", tarfile.LNKTYPE, "../etc/passwd"), "hard link out"),
        (member("lxc-2.0.11/null", tarfile.CHRTYPE), "device file"),
        (member("lxc-2.0.11/fifo", tarfile.FIFOTYPE), "device file"),
    ],
)
def test_unsafe_tarball_is_refused(
    ws: Workspace, server: Server, lxc_mini: Path, bad: tarfile.TarInfo, reason: str
) -> None:
    tar_with(server.root / "evil.tar.gz", lxc_mini, bad)
    url = f"{server.url}/evil.tar.gz"
    fetch_fails(ws, 1, "refusing to unpack evil.tar.gz", repr(bad.name), reason, source=url)
    assert not (ws.root.parent / "x").exists() and not Path("/abs").exists()


def test_unsafe_tarball_is_refused_without_the_data_filter(
    ws: Workspace, server: Server, lxc_mini: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Python before 3.11.4 has no tarfile data filter: our own check must stand alone.
    monkeypatch.delattr(tarfile, "data_filter")
    tar_with(server.root / "evil.tar.gz", lxc_mini, member("lxc-2.0.11/../x"))
    fetch_fails(ws, 1, "'..'", source=f"{server.url}/evil.tar.gz")
    tar_tree(lxc_mini, server.root / "good.tar.gz")
    assert fetch_ok(ws, source=f"{server.url}/good.tar.gz").version == "2.0.11"


def test_tarball_that_is_not_lxc(ws: Workspace, server: Server, tmp_path: Path) -> None:
    other = tmp_path / "hello"
    other.mkdir()
    (other / "configure.ac").write_text("AC_INIT([hello], [1.0])\n")
    tar_tree(other, server.root / "hello-1.0.tar.gz", top="hello-1.0")
    fetch_fails(
        ws, 1, "not an LXC source tree", "src/lxc/start.c is missing",
        source=f"{server.url}/hello-1.0.tar.gz",
    )  # fmt: skip


def test_tarball_without_version(ws: Workspace, server: Server, lxc_mini: Path) -> None:
    (lxc_mini / "configure.ac").unlink()
    tar_tree(lxc_mini, server.root / "lxc-odd.tar.gz")
    fetch_fails(ws, 1, "no version found", "neither configure.ac nor meson.build",
                source=f"{server.url}/lxc-odd.tar.gz")  # fmt: skip


def test_damaged_tarball(ws: Workspace, server: Server) -> None:
    (server.root / "lxc-2.0.11.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    fetch_fails(ws, 1, "cannot unpack lxc-2.0.11.tar.gz", source=f"{server.url}/lxc-2.0.11.tar.gz")


def test_local_tarball_without_top_folder(ws: Workspace, lxc_mini: Path, tmp_path: Path) -> None:
    path = tar_tree(lxc_mini, tmp_path / "flat.tar.gz", top=None)
    manifest = fetch_ok(ws, source=str(path), sha256=sha256(path))
    assert (manifest.name, manifest.source, manifest.files) == (
        "flat",
        str(path),
        {"flat.tar.gz": sha256(path)},
    )
    assert (manifest.tree / "src" / "lxc" / "start.c").is_file()
    assert listing(ws.cache) == []  # a local file is not a download
    fetch_fails(ws, 1, "sha256 mismatch", source=path.as_uri(), sha256="1" * 64, force=True)


def _start(workdir: Path, url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "LXCPATCH_WORKDIR": str(workdir)}
    return subprocess.Popen(
        [sys.executable, "-m", "lxcpatch", "fetch", "--source", url],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_interrupted_download_leaves_nothing(
    workdir: Path, server: Server, release: tuple[str, str]
) -> None:
    proc = _start(workdir, f"{server.url}/hang/lxc-2.0.11.tar.gz")
    assert server.started.wait(30), "the download never started"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    assert listing(workdir / "src") == [] and listing(workdir / "cache") == []
    assert not list(workdir.glob(".tmp-*"))


def test_killed_fetch_is_swept_by_the_next(
    workdir: Path, server: Server, release: tuple[str, str]
) -> None:
    proc = _start(workdir, f"{server.url}/hang/lxc-2.0.11.tar.gz")
    assert server.started.wait(30), "the download never started"
    proc.kill()  # no chance to clean up
    proc.communicate(timeout=30)
    assert listing(workdir / "src") == [] and listing(workdir / "cache") == []
    assert len(list(workdir.glob(".tmp-fetch-*"))) == 1
    url, digest = release
    fetch_ok(Workspace(workdir), source=url, sha256=digest)
    assert not list(workdir.glob(".tmp-*"))
    assert listing(workdir / "cache") == sorted([digest, "index.json"])
