"""What a `--source` names (git, tarball, .dsc, apt:, directory) and LXC's release naming."""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from lxcpatch.errors import UsageError

UPSTREAM_URL = "https://github.com/lxc/lxc.git"
UPSTREAM_REF = "lxc-2.0.11"
# Commits that upstream tags must resolve to when fetched from the default source.
PINNED = {"lxc-2.0.11": "8c238670c48f07907fcab23c565493b79c2fdcaf"}
# Points the default source elsewhere (a mirror); the pins above still apply to it.
ENV_UPSTREAM = "LXCPATCH_UPSTREAM"

TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2", ".tar")
SOURCE_FORMS = (
    "a git URL or repository (https://…/lxc.git, file:///srv/lxc.git, /srv/lxc), "
    "a tarball (URL or path ending in .tar.gz/.tgz/.tar.xz/.tar.bz2), "
    "a Debian source package (URL or path ending in .dsc, or apt:lxc[=VERSION]), "
    "or a directory holding an LXC tree"
)
NO_NETWORK_HINT = (
    "without network, point --source at a local mirror (git clone --mirror "
    f"{UPSTREAM_URL} /srv/lxc.git, then --source /srv/lxc.git --ref lxc-2.0.11) or at a "
    "release tarball (--source /path/to/lxc-2.0.11.tar.gz); "
    f"{ENV_UPSTREAM}=/srv/lxc.git makes that mirror the default source"
)

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)((?:[.-][0-9A-Za-z]+)*)$")
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._+-]+")


class SourceKind(enum.StrEnum):
    GIT = "git"
    TARBALL = "tarball"
    DSC = "dsc"
    DIRECTORY = "directory"


@dataclass(frozen=True)
class Source:
    """A recognised `--source`: its kind, and either a URL or a local path (never both)."""

    kind: SourceKind
    text: str  # as the user wrote it (recorded in the manifest)
    url: str | None = None
    path: Path | None = None
    apt: str | None = None  # PACKAGE[=VERSION] for apt:

    @property
    def filename(self) -> str:
        """The last component of the URL or path (e.g. lxc-2.0.11.tar.gz)."""
        if self.path is not None:
            return self.path.name
        if self.url is not None:
            return unquote(urlsplit(self.url).path.rstrip("/").rsplit("/", 1)[-1])
        return ""


def is_commit(ref: str) -> bool:
    return bool(_COMMIT.match(ref))


def check_sha256(value: str) -> str:
    """A sha256 as 64 lowercase hex digits."""
    lowered = value.strip().lower()
    if not _SHA256.match(lowered):
        raise UsageError(
            f"--sha256 {value!r} is not a sha256 (64 hex digits)",
            hint="compute it with `sha256sum FILE`",
        )
    return lowered


def upstream_tag(version: str) -> str:
    """LXC's tag for release `version`: lxc_0_6_4 up to 0.6.4, lxc-X.Y.Z to 5.x, vX.Y.Z from 6.0."""
    match = _VERSION.match(version.strip())
    if match is None:
        hint = "give a release number such as --version 2.0.11"
        if re.match(r"^(lxc[-_]|v)\d", version):
            hint = f"{version!r} looks like a tag: use --ref {version}"
        raise UsageError(f"--version {version!r} is not an LXC release number X.Y.Z", hint=hint)
    numbers = tuple(int(match.group(i)) for i in (1, 2, 3))
    suffix = match.group(4)
    dotted = ".".join(map(str, numbers)) + suffix
    if numbers <= (0, 6, 4) and not suffix:
        return "lxc_" + "_".join(map(str, numbers))
    if numbers < (6, 0, 0):
        return f"lxc-{dotted}"
    return f"v{dotted}"


def name_for_ref(ref: str) -> str | None:
    """The tree name for an LXC release tag (lxc-2.0.11, v6.0.5, lxc_0_6_4), else None."""
    if re.match(r"^lxc-\d+(\.\d+)+", ref):
        return safe_name(ref)
    if re.match(r"^v\d+(\.\d+)+", ref):
        return safe_name("lxc-" + ref[1:])
    if re.match(r"^lxc_\d+(_\d+)+$", ref):
        return "lxc-" + ref[4:].replace("_", ".")
    return None


def name_for_file(filename: str) -> str | None:
    """The tree name for a downloaded file: its name without the archive suffix."""
    for suffix in (*TARBALL_SUFFIXES, ".dsc"):
        if filename.endswith(suffix):
            filename = filename[: -len(suffix)]
            break
    return safe_name(filename)


def safe_name(text: str) -> str | None:
    """`text` with characters a tree name cannot hold turned into '-' (None if nothing is left)."""
    cleaned = _UNSAFE_NAME_CHARS.sub("-", text).strip("-.")
    return cleaned or None


def _is_git_repository(path: Path) -> bool:
    if (path / ".git").exists():
        return True
    # A bare repository.
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


def _looks_like(name: str, suffixes: tuple[str, ...]) -> bool:
    return name.lower().endswith(suffixes)


def classify(text: str, *, cwd: Path | None = None) -> Source:
    """Recognise what `--source TEXT` names; local paths must exist."""
    if not text.strip():
        raise UsageError("--source is empty", hint=f"give {SOURCE_FORMS}")
    if text.startswith("apt:"):
        package = text[4:]
        if not re.match(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$", package):
            raise UsageError(
                f"{text!r} does not name a source package",
                hint="write apt:PACKAGE or apt:PACKAGE=VERSION, e.g. apt:lxc or apt:lxc=1:2.0.11-1",
            )
        return Source(SourceKind.DSC, text, apt=package)

    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return _classify_path(Path(unquote(parts.path)), text)
    if scheme in {"http", "https", "ftp", "git", "ssh", "git+ssh", "ssh+git"} and parts.netloc:
        name = parts.path.rstrip("/")
        if _looks_like(name, (".dsc",)):
            return Source(SourceKind.DSC, text, url=text)
        if _looks_like(name, TARBALL_SUFFIXES):
            if scheme not in {"http", "https"}:
                raise UsageError(
                    f"cannot download {text}: only http:// and https:// tarball URLs are supported",
                    hint="download it yourself and pass its path to --source",
                )
            return Source(SourceKind.TARBALL, text, url=text)
        return Source(SourceKind.GIT, text, url=text)
    if re.match(r"^[\w.-]+@[\w.-]+:", text):  # scp-like git address: git@github.com:lxc/lxc.git
        return Source(SourceKind.GIT, text, url=text)
    if scheme and len(scheme) > 1 and "://" in text:
        raise UsageError(f"unsupported URL scheme {scheme!r} in --source {text}", hint=SOURCE_FORMS)
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = (cwd or Path.cwd()) / path
    return _classify_path(path, text)


def _classify_path(path: Path, text: str) -> Source:
    path = Path(os.path.normpath(path))
    if not path.exists():
        raise UsageError(
            f"--source {text}: no such file or directory ({path})",
            hint=f"give {SOURCE_FORMS}",
        )
    if path.is_dir():
        if _is_git_repository(path):
            # A local clone ignores --depth unless it goes through file://.
            return Source(SourceKind.GIT, text, url=path.as_uri(), path=path)
        return Source(SourceKind.DIRECTORY, text, path=path)
    if _looks_like(path.name, (".dsc",)):
        return Source(SourceKind.DSC, text, path=path)
    if _looks_like(path.name, TARBALL_SUFFIXES):
        return Source(SourceKind.TARBALL, text, path=path)
    raise UsageError(
        f"--source {text}: cannot tell what kind of source {path.name!r} is",
        hint=f"give {SOURCE_FORMS}",
    )
