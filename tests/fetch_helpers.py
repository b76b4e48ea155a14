"""Helpers for the fetch tests: an HTTP server on 127.0.0.1, tarballs, git repositories,
Debian source packages and an apt source repository, all made on the spot."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lxcpatch.errors import LxcpatchError
from lxcpatch.fetch import FetchManifest, FetchRequest, fetch
from lxcpatch.workspace import Workspace

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    """Every path under `folder`, relative, sorted (empty when it does not exist)."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Mode and content of everything under `folder`, to prove it was not modified."""
    result = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        data = os.readlink(p).encode() if p.is_symlink() else p.read_bytes() if p.is_file() else b""
        result[str(p.relative_to(folder))] = (st.st_mode, data)
    return result


def says(text: str, *fragments: str) -> bool:
    """Every fragment is in `text`, ignoring whitespace (rich wraps the CLI's messages)."""
    flat = "".join(text.split())
    return all("".join(f.split()) in flat for f in fragments)


# --- HTTP ---------------------------------------------------------------------------------------


@dataclass
class Server:
    """Files under `root` served at `url`; special prefixes misbehave on purpose:

    /truncated/NAME  announces more bytes than it sends, then closes
    /drop/NAME       sends half the body and resets the connection
    /hang/NAME       sends half the body, then waits until `release` is set
    /flaky/NAME      answers 503 the first time, then the file
    """

    root: Path
    url: str = ""
    requests: list[str] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    flaky_seen: set[str] = field(default_factory=set)


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            server.requests.append(self.path)
            mode, _, name = self.path.lstrip("/").partition("/")
            if mode not in {"truncated", "drop", "hang", "flaky"}:
                mode, name = "", self.path.lstrip("/")
            path = server.root / name
            if not path.is_file():
                self.send_error(404, "Not Found")
                return
            if mode == "flaky" and name not in server.flaky_seen:
                server.flaky_seen.add(name)
                self.send_error(503, "Service Unavailable")
                return
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            extra = 1000 if mode == "truncated" else 0
            self.send_header("Content-Length", str(len(data) + extra))
            self.end_headers()
            if mode in {"drop", "hang"}:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                server.started.set()
                if mode == "hang":
                    server.release.wait(30)
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return
            self.wfile.write(data)
            self.close_connection = True

    return Handler


@contextlib.contextmanager
def serve(root: Path) -> Iterator[Server]:
    root.mkdir(parents=True, exist_ok=True)
    server = Server(root)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    httpd.daemon_threads = True
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- tarballs -----------------------------------------------------------------------------------


def tar_tree(tree: Path, out: Path, top: str | None = "lxc-2.0.11") -> Path:
    """A .tar.gz of `tree`, under the top folder `top` (None: no top folder)."""
    with tarfile.open(out, "w:gz") as tar:
        for path in sorted(tree.rglob("*")):
            rel = path.relative_to(tree)
            tar.add(path, arcname=f"{top}/{rel}" if top else str(rel), recursive=False)
    return out


def tar_with(out: Path, tree: Path, *extra: tarfile.TarInfo) -> Path:
    """The tarball of `tree` (top folder lxc-2.0.11) plus hand-made members."""
    with tarfile.open(out, "w:gz") as tar:
        for path in sorted(tree.rglob("*")):
            tar.add(path, arcname=f"lxc-2.0.11/{path.relative_to(tree)}", recursive=False)
        for info in extra:
            data = b"x\n" if info.isreg() else None
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o644
    info.mtime = 1_700_000_000
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info


# --- git ----------------------------------------------------------------------------------------


def git(*args: str | Path, cwd: Path) -> str:
    return subprocess.run(
        ["git", *map(str, args)],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()


def git_repo(tree: Path, repo: Path) -> dict[str, str]:
    """A repository at `repo` with lxc-mini and three tagged commits; returns tag -> commit.

    lxc-2.0.10 is an annotated tag, lxc-2.0.11 a lightweight one, the branch main is one ahead.
    """
    shutil.copytree(tree, repo)
    git("init", "-q", "-b", "main", cwd=repo)
    configure = repo / "configure.ac"
    text = configure.read_text()
    commits = {}
    for version in ("2.0.10", "2.0.11"):
        configure.write_text(text.replace("[2.0.11]", f"[{version}]"))
        git("add", "-A", cwd=repo)
        git("commit", "-q", "-m", f"release {version}", cwd=repo)
        if version == "2.0.10":
            git("tag", "-a", "-m", "2.0.10", f"lxc-{version}", cwd=repo)
        else:
            git("tag", f"lxc-{version}", cwd=repo)
        commits[f"lxc-{version}"] = git("rev-parse", "HEAD", cwd=repo)
    (repo / "NEWS").write_text("after the release\n")
    configure.write_text(text.replace("[2.0.11]", "[2.0.12]"))
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "development", cwd=repo)
    commits["main"] = git("rev-parse", "HEAD", cwd=repo)
    return commits


# --- Debian source packages ---------------------------------------------------------------------

CONTROL = """\
Source: lxc
Section: admin
Priority: optional
Maintainer: lxcpatch tests <tests@lxcpatch.invalid>
Standards-Version: 4.6.2

Package: lxc
Architecture: any
Description: LXC-like tree for lxcpatch's tests
 Made by the test suite.
"""

CHANGELOG = """\
lxc (1:2.0.11-1) unstable; urgency=medium

  * Test package.

 -- lxcpatch tests <tests@lxcpatch.invalid>  Mon, 01 Jan 2024 00:00:00 +0000
"""


def build_dsc(tree: Path, out: Path) -> Path:
    """A 3.0 (quilt) source package of `tree` (orig tarball + debian tarball + .dsc) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    source = out / "lxc-2.0.11"
    shutil.copytree(tree, source)
    tar_tree(tree, out / "lxc_2.0.11.orig.tar.gz")
    debian = source / "debian"
    (debian / "source").mkdir(parents=True)
    (debian / "source" / "format").write_text("3.0 (quilt)\n")
    (debian / "control").write_text(CONTROL)
    (debian / "changelog").write_text(CHANGELOG)
    (debian / "rules").write_text("#!/usr/bin/make -f\n%:\n\tdh $@\n")
    (debian / "rules").chmod(0o755)
    subprocess.run(
        ["dpkg-source", "-b", "lxc-2.0.11"], cwd=out, capture_output=True, check=True, text=True
    )
    shutil.rmtree(source)
    return out / "lxc_2.0.11-1.dsc"


def apt_repo(dsc_folder: Path, base: Path) -> dict[str, str]:
    """A file:// source repository with the package in `dsc_folder`, and a private apt config.

    Returns the environment that points apt at it (APT_CONFIG), never at the machine's sources.
    """
    subprocess.run(
        ["dpkg-scansources", "."],
        cwd=dsc_folder,
        stdout=(dsc_folder / "Sources").open("w"),
        stderr=subprocess.DEVNULL,
        check=True,
    )
    sources = base / "sources.list"
    sources.write_text(f"deb-src [trusted=yes] file://{dsc_folder} ./\n")
    conf = base / "apt.conf"
    conf.write_text(
        f'Dir::Etc::sourcelist "{sources}";\n'
        'Dir::Etc::sourceparts "-";\n'
        'Acquire::Languages "none";\n'
    )
    return {"APT_CONFIG": str(conf)}


# --- running fetch in-process -------------------------------------------------------------------


def fetch_ok(ws: Workspace, **options: Any) -> FetchManifest:
    return fetch(ws, FetchRequest(**options))


def fetch_fails(ws: Workspace, exit_code: int, *fragments: str, **options: Any) -> LxcpatchError:
    """Fetch must fail with `exit_code`, a message holding every fragment, a hint, and leave
    nothing in build/src, build/cache or staging."""
    before_src, before_cache = listing(ws.src), listing(ws.cache)
    with pytest.raises(LxcpatchError) as caught:
        fetch(ws, FetchRequest(**options))
    error = caught.value
    assert error.exit_code == exit_code, str(error)
    for fragment in fragments:
        assert fragment in str(error), f"{fragment!r} not in {error}"
    assert error.hint
    assert listing(ws.src) == before_src
    assert listing(ws.cache) == before_cache
    if ws.root.exists():
        assert not list(ws.root.glob(".tmp-*"))
    return error
