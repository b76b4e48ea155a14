"""Debian source packages: a .dsc (URL or path) with every file it lists, or `apt:PKG[=VER]`.

Every listed file is checked against the size and sha256 in the .dsc's Checksums-Sha256 before
`dpkg-source -x` unpacks it. `apt:` asks apt for the package with lxcpatch's own apt state (lists
and caches under the workspace, so no root is needed and the machine's apt state is untouched);
the sources are the machine's, or those of the apt configuration file named by $APT_CONFIG.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

from lxcpatch.download import Cache, sha256_file
from lxcpatch.errors import CommandError, LxcpatchError, UsageError
from lxcpatch.run import run
from lxcpatch.sources import Source
from lxcpatch.workspace import Workspace

log = logging.getLogger(__name__)

APT_LISTS = "apt-lists"  # under cache/: the package lists of the last successful apt: fetch
_PRINT_URI = re.compile(r"^'(?P<uri>[^']+)' (?P<name>\S+) (?P<size>\d+) (?P<hash>\S+)$")


@dataclass(frozen=True)
class DscFile:
    name: str
    size: int
    sha256: str


def dsc_files(text: str, what: str) -> list[DscFile]:
    """The files a .dsc lists in Checksums-Sha256; refuses names that are not plain file names."""
    from debian.deb822 import Dsc

    dsc = Dsc(text)
    if "Source" not in dsc or "Version" not in dsc:
        raise LxcpatchError(
            f"{what} is not a Debian source control file (no Source or Version field)",
            hint="--source must name a .dsc as written by dpkg-source",
        )
    entries = dsc.get("Checksums-Sha256") or []
    if not entries:
        raise LxcpatchError(
            f"{what} has no Checksums-Sha256 field, so its files cannot be checked",
            hint="rebuild the source package with a current dpkg-source",
        )
    files = []
    for entry in entries:
        name = str(entry["name"])
        if "/" in name or name in {"", ".", ".."} or name.startswith("."):
            raise LxcpatchError(
                f"{what} lists an unsafe file name {name!r}",
                hint="use a .dsc written by dpkg-source",
            )
        files.append(DscFile(name, int(entry["size"]), str(entry["sha256"]).lower()))
    return files


def _check_local(path: Path, expected: DscFile, dsc_name: str) -> None:
    if not path.is_file():
        raise LxcpatchError(
            f"{expected.name}, listed in {dsc_name}, is missing beside it ({path})",
            hint="put every file the .dsc lists in the same folder as the .dsc",
        )
    size = path.stat().st_size
    if size != expected.size:
        raise LxcpatchError(
            f"size mismatch for {expected.name} listed in {dsc_name}: expected "
            f"{expected.size} bytes, got {size}",
            hint="the file differs from the one the .dsc lists: fetch the source package again",
        )
    digest = sha256_file(path)
    if digest != expected.sha256:
        raise LxcpatchError(
            f"sha256 mismatch for {expected.name} listed in {dsc_name}: expected "
            f"{expected.sha256}, got {digest}",
            hint="the file differs from the one the .dsc lists: fetch the source package again",
        )


def _copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def gather(
    source: Source, cache: Cache, sha256: str | None, folder: Path
) -> tuple[Path, dict[str, str]]:
    """Put the .dsc and every file it lists, checked, into `folder`.

    Returns the .dsc's path there and {filename: sha256} of every file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    dsc_name = source.filename
    target = folder / dsc_name
    if source.url is not None:
        _, digest = cache.get(source.url, sha256=sha256, what=dsc_name)
        cache.place(digest, target)
    else:
        assert source.path is not None
        digest = sha256_file(source.path)
        if sha256 is not None and digest != sha256:
            raise LxcpatchError(
                f"sha256 mismatch for {dsc_name}: expected {sha256}, got {digest}",
                hint="check --sha256 and the file",
            )
        _copy(source.path, target)
    files = {dsc_name: digest}
    for item in dsc_files(target.read_text(encoding="utf-8", errors="replace"), dsc_name):
        if source.url is not None:
            url = urljoin(source.url, item.name)
            _, got = cache.get(url, sha256=item.sha256, size=item.size, what=item.name)
            cache.place(got, folder / item.name)
        else:
            assert source.path is not None
            local = source.path.parent / item.name
            _check_local(local, item, dsc_name)
            _copy(local, folder / item.name)
        files[item.name] = item.sha256
    return target, files


def unpack(dsc: Path, dest: Path) -> None:
    """`dpkg-source -x` the checked .dsc into the new folder `dest`."""
    try:
        run(["dpkg-source", "--no-copy", "-x", dsc.name, str(dest)], cwd=dsc.parent)
    except CommandError as exc:
        raise LxcpatchError(
            f"dpkg-source could not unpack {dsc.name}:\n{exc.tail}",
            hint="check the source package (dpkg-source -x FILE.dsc shows the same)",
        ) from exc


def _apt_config(state: Path, lists: Path) -> Path:
    """A private apt configuration: our own lists and caches, no hooks that touch the machine."""
    for folder in (lists / "partial", state / "cache" / "archives" / "partial"):
        folder.mkdir(parents=True, exist_ok=True)
    conf = state / "apt.conf"
    conf.write_text(
        f'Dir::State::Lists "{lists}";\n'
        f'Dir::Cache "{state / "cache"}";\n'
        'Dir::Cache::pkgcache "";\n'
        'Dir::Cache::srcpkgcache "";\n'
        'Debug::NoLocking "true";\n'
        "#clear APT::Update::Pre-Invoke;\n"
        "#clear APT::Update::Post-Invoke;\n"
        "#clear APT::Update::Post-Invoke-Success;\n"
    )
    return conf


def _apt(conf: Path, args: list[str], *, cwd: Path, what: str) -> str:
    try:
        proc = run(["apt-get", "-q", "-c", str(conf), *args], cwd=cwd)
    except CommandError as exc:
        hint = "check the package name and version (apt-cache showsrc PACKAGE)"
        if "mismatch" in exc.tail.lower():
            hint = "the repository's files do not match its index; nothing was kept: try again "
            hint += "later, or tell whoever runs that repository"
        elif "deb-src" in exc.tail:
            hint = (
                "add deb-src lines to apt's sources, or set APT_CONFIG to an apt configuration "
                "whose Dir::Etc::sourcelist has them"
            )
        raise LxcpatchError(f"apt-get could not {what}:\n{exc.tail}", hint=hint) from exc
    return proc.stdout


def apt_source(ws: Workspace, spec: str, cache: Cache, staging: Path) -> Path:
    """Fetch source package `spec` (PKG or PKG=VERSION) into staging; returns its .dsc there."""
    state = staging / "apt"
    cached_lists = ws.cache / APT_LISTS
    if cache.offline:
        if not cached_lists.is_dir():
            raise UsageError(
                f"--offline: apt has no package lists for apt:{spec} yet",
                hint="run the same fetch once without --offline",
            )
        lists = cached_lists
    else:
        lists = state / "lists"
    conf = _apt_config(state, lists)
    download = state / "download"
    download.mkdir(parents=True)
    if not cache.offline:
        log.info("apt-get update (lxcpatch's own package lists)")
        _apt(conf, ["update"], cwd=download, what="update its package lists")
    uris = _apt(
        conf,
        ["source", "--print-uris", spec],
        cwd=download,
        what=f"find the source package {spec}",
    )
    wanted = []
    for line in uris.splitlines():
        match = _PRINT_URI.match(line.strip())
        if match:
            kind, _, value = match.group("hash").partition(":")
            wanted.append((match.group("name"), value.lower() if kind == "SHA256" else None))
    if not any(name.endswith(".dsc") for name, _ in wanted):
        raise LxcpatchError(f"apt-get found no .dsc for {spec}", hint="check the package name")
    missing = [name for name, digest in wanted if digest is None or cache.lookup(digest) is None]
    if not missing:
        log.info("apt:%s: every file from the cache", spec)
        for name, digest in wanted:
            assert digest is not None
            cache.place(digest, download / name)
    elif cache.offline:
        raise UsageError(
            f"--offline: {', '.join(missing)} for apt:{spec} not in the cache {ws.cache}",
            hint="run the same fetch once without --offline to fill the cache",
        )
    else:
        _apt(
            conf,
            ["source", "--download-only", spec],
            cwd=download,
            what=f"download the source package {spec}",
        )
        for name, _ in wanted:
            path = download / name
            if path.is_symlink():
                # apt links files of a file: repository instead of copying them.
                real = path.resolve()
                path.unlink()
                shutil.copyfile(real, path)
            cache.adopt(path)
            cache.downloaded.append(f"apt:{spec} {name}")
    dscs = [download / name for name, _ in wanted if name.endswith(".dsc")]
    if lists != cached_lists:
        cache.keep_folder(lists, cached_lists)
    return dscs[0]
