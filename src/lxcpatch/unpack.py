"""Safe tarball extraction: nothing may land outside the tree, and no device files.

Every member is checked first (`unsafe_member`, a pure function) so that a bad tarball is
refused as a whole, with the offending member named; then tarfile's `data` filter guards the
extraction itself where the running Python has it (3.11.4+).
"""

from __future__ import annotations

import logging
import os
import posixpath
import tarfile
from collections.abc import Iterable
from pathlib import Path

from lxcpatch.errors import LxcpatchError

log = logging.getLogger(__name__)

# tarfile.FilterError exists only where the data filter does.
_FILTER_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(tarfile, name) for name in ("FilterError",) if hasattr(tarfile, name)
)
UNSAFE_HINT = "the tarball is unsafe to unpack; use an official release tarball or a git source"


def _escapes(path: str) -> bool:
    normal = posixpath.normpath(path)
    return normal == ".." or normal.startswith("../")


def unsafe_member(member: tarfile.TarInfo, links: Iterable[str] = ()) -> str | None:
    """Why `member` must not be extracted, or None when it is safe.

    `links` holds the names of the symbolic links seen in the archive so far: a member stored
    beneath one of them could be written through it.
    """
    name = member.name
    if name.startswith("/") or posixpath.isabs(name):
        return f"{name!r} has an absolute path"
    if ".." in name.split("/"):
        return f"{name!r} climbs out of the tree with '..'"
    if member.isdev():
        return f"{name!r} is a device file or fifo"
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return f"{name!r} is a special member (type {member.type!r})"
    normal = posixpath.normpath(name)
    for link in links:
        if normal.startswith(posixpath.normpath(link) + "/"):
            return f"{name!r} lies beneath the symbolic link {link!r}"
    if member.issym():
        target = member.linkname
        if target.startswith("/"):
            return f"{name!r} is a symbolic link to the absolute path {target!r}"
        if _escapes(posixpath.join(posixpath.dirname(normal), target)):
            return f"{name!r} is a symbolic link out of the tree ({target!r})"
    if member.islnk():
        target = member.linkname
        if target.startswith("/") or _escapes(target):
            return f"{name!r} is a hard link out of the tree ({target!r})"
    return None


def check_members(members: Iterable[tarfile.TarInfo]) -> list[str]:
    """Every reason the archive with these members is unsafe (empty when it is safe)."""
    problems = []
    links: list[str] = []
    for member in members:
        problem = unsafe_member(member, links)
        if problem is not None:
            problems.append(problem)
        elif member.issym():
            links.append(member.name)
    return problems


def pax_commit(archive: Path) -> str | None:
    """The commit id `git archive` writes into the pax global header, if any."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.next()
            comment = tar.pax_headers.get("comment", "")
    except (tarfile.TarError, OSError, EOFError):
        return None
    comment = comment.strip()
    if len(comment) == 40 and all(c in "0123456789abcdef" for c in comment):
        return comment
    return None


def extract(archive: Path, dest: Path, *, what: str) -> Path:
    """Unpack `archive` into the new folder `dest`; returns the tree (one top folder stripped)."""
    dest.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            problems = check_members(members)
            if problems:
                shown = "; ".join(problems[:3])
                more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
                raise LxcpatchError(
                    f"refusing to unpack {what}: {shown}{more}; nothing was kept", hint=UNSAFE_HINT
                )
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:
                # Python < 3.11.4 lacks the filter; check_members above did the same checks.
                tar.extractall(dest)
    except _FILTER_ERRORS as exc:
        raise LxcpatchError(
            f"refusing to unpack {what}: {exc}; nothing was kept", hint=UNSAFE_HINT
        ) from exc
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise LxcpatchError(
            f"cannot unpack {what}: {exc}",
            hint="the file is damaged or not a tarball; fetch it again or check --source",
        ) from exc
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        log.debug("stripping the top folder %s", entries[0].name)
        return entries[0]
    return dest


def newest_mtime(tree: Path) -> int:
    """The newest modification time in `tree` (links not followed), in seconds."""
    newest = 0
    for root, dirs, files in os.walk(tree):
        if ".git" in dirs and Path(root) == tree:
            dirs.remove(".git")
        for name in files:
            newest = max(newest, int(os.lstat(os.path.join(root, name)).st_mtime))
    return newest
