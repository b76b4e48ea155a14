"""verify: does an installed lxc-start survive a missing CAP_SYS_BOOT?

The core is pure: `scan(sections)` reads the bytes of one ELF file's data sections and says which
recipe tokens and which original "failed to remove CAP_SYS_BOOT" messages it carries;
`classify(copies)` turns the copies that may run into one verdict. Finding the files (inside a
root, through DT_NEEDED, RUNPATH and ld.so.conf, never following a symlink out of the root),
the dpkg database and the `--live` run sit at the edge.
"""

from __future__ import annotations

import dataclasses
import enum
import glob
import hashlib
import logging
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lxcpatch import capabilities
from lxcpatch.errors import CommandError, LxcpatchError, PrerequisiteError, UsageError
from lxcpatch.recipes import TOKENS
from lxcpatch.run import run, which

log = logging.getLogger(__name__)

CAP_SYS_BOOT_RECIPE = "@cap-sys-boot"

# Every era's wording of the failed drop: 0.7 - 2.0.8 "failed to remove CAP_SYS_BOOT capability",
# 2.0.9 - 2.0.11 "Failed to remove the CAP_SYS_BOOT capability.".
ORIGINAL_MESSAGE = re.compile(rb"failed to remove (?:the )?cap_sys_boot capability", re.IGNORECASE)
# What a run that got through the drop logs: 0.8 - 2.0.8 "Dropped cap_sys_boot", 2.0.9 - 2.0.11
# "Dropped the CAP_SYS_BOOT capability.", and "Not dropping CAP_SYS_BOOT or watching utmp".
DROPPED_MESSAGE = re.compile(r"dropped (?:the )?cap_sys_boot", re.IGNORECASE)
NOT_DROPPING_MESSAGE = re.compile(r"not dropping cap_sys_boot", re.IGNORECASE)

# Debian's default PATH order: a `make install` into /usr/local shadows the packaged lxc-start.
BINARY_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
DEFAULT_LIB_DIRS = ("/lib", "/usr/lib", "/usr/local/lib")
LIBLXC = re.compile(r"^liblxc\.so(?:\.\d+)*$")
MAX_SYMLINKS = 40

# Debian multiarch triplets by ELF machine (and class for the ones that have two).
TRIPLETS: Mapping[tuple[str, int], str] = {
    ("EM_X86_64", 64): "x86_64-linux-gnu",
    ("EM_X86_64", 32): "x86_64-linux-gnux32",
    ("EM_386", 32): "i386-linux-gnu",
    ("EM_AARCH64", 64): "aarch64-linux-gnu",
    ("EM_ARM", 32): "arm-linux-gnueabihf",
    ("EM_PPC64", 64): "powerpc64le-linux-gnu",
    ("EM_S390", 64): "s390x-linux-gnu",
    ("EM_RISCV", 64): "riscv64-linux-gnu",
    ("EM_MIPS", 64): "mips64el-linux-gnuabi64",
    ("EM_MIPS", 32): "mipsel-linux-gnu",
}


class VerifyError(LxcpatchError):
    """The target cannot be read (exit 2: nothing was verified)."""

    exit_code = 2


class Status(enum.Enum):
    PATCHED = "patched"
    UNPATCHED = "unpatched"
    NOT_NEEDED = "not-needed"
    UNKNOWN = "unknown"

    @property
    def exit_code(self) -> int:
        return {Status.PATCHED: 0, Status.NOT_NEEDED: 0, Status.UNPATCHED: 1}.get(self, 2)


class Role(enum.Enum):
    LXC_START = "lxc-start"
    LIBLXC = "liblxc"


# --- pure core: bytes in, findings out


@dataclass(frozen=True)
class Hit:
    """Where a string was found: the section, the offset in it, and the whole C string there."""

    section: str
    offset: int
    text: str

    def __str__(self) -> str:
        return f"{self.section}+{self.offset:#x}: {self.text!r}"


@dataclass(frozen=True)
class Findings:
    """What one ELF file carries: recipe → its token's hit, and the original messages."""

    tokens: Mapping[str, Hit]
    originals: tuple[Hit, ...]

    @property
    def status(self) -> Status:
        """This copy alone: the CAP_SYS_BOOT token wins; the message alone means unpatched."""
        if CAP_SYS_BOOT_RECIPE in self.tokens:
            return Status.PATCHED
        if self.originals:
            return Status.UNPATCHED
        return Status.NOT_NEEDED

    @property
    def has_start_code(self) -> bool:
        return bool(self.tokens or self.originals)

    @property
    def label(self) -> str:
        """What a person reads for this copy."""
        carried = f"the token of {' and '.join(self.tokens)}"
        if self.status is Status.PATCHED:
            return f"patched (carries {carried})"
        if self.status is Status.UNPATCHED:
            also = f"; carries {carried}" if self.tokens else ""
            return f"unpatched (the original message, no token of {CAP_SYS_BOOT_RECIPE}{also})"
        if self.tokens:  # @cap-drops alone, on a release that does not drop CAP_SYS_BOOT
            return f"no CAP_SYS_BOOT drop; carries {carried}"
        return "no CAP_SYS_BOOT drop and no token"


def _c_string_at(data: bytes, at: int, limit: int = 160) -> str:
    start = data.rfind(b"\0", max(0, at - limit), at) + 1 or max(0, at - limit)
    end = data.find(b"\0", at, at + limit)
    if end < 0:
        end = min(len(data), at + limit)
    return data[start:end].decode("utf-8", errors="replace")


def scan(sections: Iterable[tuple[str, bytes]], tokens: Mapping[str, str] = TOKENS) -> Findings:
    """Search section bytes for each recipe's token and for the original failure message."""
    found: dict[str, Hit] = {}
    originals: list[Hit] = []
    for name, data in sections:
        for recipe, token in tokens.items():
            at = data.find(token.encode())
            if at >= 0 and recipe not in found:
                found[recipe] = Hit(name, at, _c_string_at(data, at))
        originals.extend(
            Hit(name, m.start(), _c_string_at(data, m.start()))
            for m in ORIGINAL_MESSAGE.finditer(data)
        )
    return Findings(tokens=found, originals=tuple(originals))


def classify(copies: Sequence[Findings]) -> Status:
    """One verdict over every copy of the start code that may run: any unpatched copy fails."""
    statuses = {c.status for c in copies}
    if not copies:
        return Status.UNKNOWN
    if Status.UNPATCHED in statuses:
        return Status.UNPATCHED
    if Status.PATCHED in statuses:
        return Status.PATCHED
    return Status.NOT_NEEDED


def decide(
    start: Findings | None,
    library: Findings | None,
    *,
    needs_liblxc: bool,
    is_liblxc: bool = True,
) -> tuple[Status, str | None]:
    """The verdict over the copies found, and why when it is unknown.

    `needs_liblxc`: lxc-start has liblxc in DT_NEEDED; `is_liblxc`: the library is liblxc.
    """
    if start is None and library is None:
        return Status.UNKNOWN, "neither lxc-start nor liblxc was found"
    if library is not None and not is_liblxc and not library.has_start_code:
        return Status.UNKNOWN, "the library is not liblxc and carries no LXC start code"
    if start is None:
        return classify([library] if library else []), None
    if library is None:
        if start.status is Status.UNPATCHED:
            return Status.UNPATCHED, None  # that copy fails whatever the library does
        if needs_liblxc:
            return Status.UNKNOWN, "the liblxc it needs was not found"
        if not start.has_start_code:
            return Status.UNKNOWN, "lxc-start neither links liblxc nor carries LXC's start code"
        return classify([start]), None
    return classify([start, library]), None


def uses_new_config_keys(sections: Iterable[tuple[str, bytes]]) -> bool:
    """LXC 2.1 renamed its configuration keys (lxc.utsname → lxc.uts.name), kept in rodata."""
    return any(b"lxc.uts.name" in data for _, data in sections)


def expand_origin(entry: str, origin: PurePosixPath) -> str | None:
    """A RUNPATH/RPATH entry with $ORIGIN expanded; None for entries ld.so resolves elsewhere."""
    expanded = entry.replace("${ORIGIN}", str(origin)).replace("$ORIGIN", str(origin))
    if "$" in expanded or not expanded.startswith("/"):
        # $LIB/$PLATFORM and relative entries depend on the running process, not on the root.
        return None
    return expanded


@dataclass(frozen=True)
class LdConf:
    """One ld.so.conf file's content: library folders and include patterns, in order."""

    dirs: tuple[str, ...]
    includes: tuple[str, ...]


def parse_ld_so_conf(text: str) -> LdConf:
    """Parse ld.so.conf syntax: folders, `include PATTERN…` lines, `#` comments, `hwcap` ignored."""
    dirs: list[str] = []
    includes: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] == "include":
            includes.extend(words[1:])
        elif words[0] == "hwcap":
            continue
        else:
            # Old syntax allows "dir=TYPE" and several folders separated by spaces, commas, colons.
            dirs.extend(d.split("=", 1)[0] for d in re.split(r"[\s,:]+", line) if d)
    return LdConf(tuple(dirs), tuple(includes))


def parse_md5sums(text: str) -> dict[str, str]:
    """A package's md5sums file: path (without the leading '/') → md5."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            sums[parts[1].lstrip("/").removeprefix("./")] = parts[0].lower()
    return sums


def path_aliases(path: str) -> list[str]:
    """The path and its merged-/usr twin (/lib/x ↔ /usr/lib/x), as dpkg may list either."""
    aliases = [path]
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        if path.startswith(f"/usr/{top}/"):
            aliases.append(path.removeprefix("/usr"))
        elif path.startswith(f"/{top}/"):
            aliases.append("/usr" + path)
    return aliases


# --- paths inside a root


def resolve_in_root(root: Path, path: str | PurePosixPath) -> PurePosixPath | None:
    """Resolve `path` as if `root` were '/': symlinks (absolute or with '..') stay inside root.

    Returns the resolved path inside the root, or None when it does not exist.
    """
    pending = list(PurePosixPath("/", path).parts[1:])
    pending.reverse()
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            links += 1
            if links > MAX_SYMLINKS:
                return None
            target = PurePosixPath(os.readlink(candidate))
            if target.is_absolute():
                resolved = []
                target_parts = list(target.parts[1:])
            else:
                target_parts = list(target.parts)
            pending.extend(reversed(target_parts))
            continue
        if not candidate.exists():
            return None
        resolved.append(part)
    return PurePosixPath("/", *resolved)


def host_path(root: Path, inside: PurePosixPath) -> Path:
    return root.joinpath(*inside.parts[1:])


# --- ELF files


@dataclass(frozen=True)
class ElfFile:
    """What verify needs from one ELF file, read with pyelftools."""

    path: Path
    machine: str
    elfclass: int
    needed: tuple[str, ...]
    runpath: tuple[str, ...]
    rpath: tuple[str, ...]
    sections: tuple[tuple[str, bytes], ...] = field(repr=False)
    soname: str | None = None

    @property
    def liblxc_needed(self) -> str | None:
        return next((n for n in self.needed if LIBLXC.match(n)), None)

    @property
    def is_liblxc(self) -> bool:
        """By its DT_SONAME, or by its file name when it has none."""
        return bool(LIBLXC.match(self.soname or self.path.name.split(".so")[0] + ".so"))

    @property
    def triplet(self) -> str | None:
        return TRIPLETS.get((self.machine, self.elfclass))


def _tag_text(tag: object, name: str) -> str:
    # pyelftools sets a string tag's value (needed, runpath, rpath) as a dynamic attribute.
    return str(getattr(tag, name))


def read_elf(path: Path) -> ElfFile:
    """Read DT_NEEDED, RUNPATH/RPATH and every allocated, non-executable data section."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.constants import P_FLAGS, SH_FLAGS
    from elftools.elf.dynamic import DynamicSegment
    from elftools.elf.elffile import ELFFile

    try:
        fh = path.open("rb")
    except OSError as exc:
        raise VerifyError(
            f"cannot read {path}: {exc.strerror}", hint="check the path and permissions"
        ) from exc
    with fh:
        try:
            elf = ELFFile(fh)
            needed: list[str] = []
            soname: str | None = None
            runpath: list[str] = []
            rpath: list[str] = []
            for segment in elf.iter_segments():
                if isinstance(segment, DynamicSegment):
                    for tag in segment.iter_tags():
                        kind = tag.entry.d_tag
                        if kind == "DT_NEEDED":
                            needed.append(_tag_text(tag, "needed"))
                        elif kind == "DT_SONAME":
                            soname = _tag_text(tag, "soname")
                        elif kind == "DT_RUNPATH":
                            runpath.extend(_tag_text(tag, "runpath").split(":"))
                        elif kind == "DT_RPATH":
                            rpath.extend(_tag_text(tag, "rpath").split(":"))
            sections: list[tuple[str, bytes]] = []
            for section in elf.iter_sections():
                flags = section["sh_flags"]
                if section["sh_type"] in ("SHT_NOBITS", "SHT_NULL"):
                    continue
                if flags & SH_FLAGS.SHF_ALLOC and not flags & SH_FLAGS.SHF_EXECINSTR:
                    sections.append((section.name, section.data()))
            if not elf.num_sections():
                # No section headers (stripped with sstrip): the read-only and data segments.
                for segment in elf.iter_segments():
                    if segment["p_type"] == "PT_LOAD" and not segment["p_flags"] & P_FLAGS.PF_X:
                        sections.append((f"PT_LOAD@{segment['p_offset']:#x}", segment.data()))
            return ElfFile(
                path=path,
                machine=str(elf["e_machine"]),
                elfclass=int(elf.elfclass),
                needed=tuple(needed),
                runpath=tuple(p for p in runpath if p),
                rpath=tuple(p for p in rpath if p),
                sections=tuple(sections),
                soname=soname,
            )
        except (ELFError, ValueError, OSError) as exc:
            raise VerifyError(
                f"{path} is not a readable ELF file: {exc}",
                hint="give an lxc-start program or a liblxc.so library",
            ) from exc


def _is_elf_of(path: Path, machine: str, elfclass: int) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(20)
    except OSError:
        return False
    if head[:4] != b"\x7fELF":
        return False
    from elftools.elf.elffile import ELFFile

    with path.open("rb") as fh:
        elf = ELFFile(fh)
        return bool(elf["e_machine"] == machine and elf.elfclass == elfclass)


class RootView:
    """A root filesystem seen from outside: finds lxc-start and resolves libraries in it."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()

    def resolve(self, path: str | PurePosixPath) -> PurePosixPath | None:
        return resolve_in_root(self.root, path)

    def host(self, inside: PurePosixPath) -> Path:
        return host_path(self.root, inside)

    def find_lxc_start(self) -> list[tuple[PurePosixPath, PurePosixPath]]:
        """(path where found, resolved path) of each lxc-start on PATH, the one that runs first."""
        found: list[tuple[PurePosixPath, PurePosixPath]] = []
        for folder in BINARY_DIRS:
            where = PurePosixPath(folder, "lxc-start")
            resolved = self.resolve(where)
            if (
                resolved is not None
                and self.host(resolved).is_file()
                and resolved not in (r for _, r in found)
            ):
                found.append((where, resolved))
        return found

    def ld_so_conf_dirs(self) -> list[str]:
        dirs: list[str] = []
        self._read_conf(PurePosixPath("/etc/ld.so.conf"), dirs, depth=0)
        return dirs

    def _read_conf(self, conf: PurePosixPath, dirs: list[str], depth: int) -> None:
        resolved = self.resolve(conf)
        if resolved is None or depth > 8 or not self.host(resolved).is_file():
            return
        parsed = parse_ld_so_conf(self.host(resolved).read_text(errors="replace"))
        dirs.extend(parsed.dirs)
        for pattern in parsed.includes:
            # glibc's ldconfig reads a relative include from the including file's folder.
            full = PurePosixPath(conf.parent, pattern)
            folder = self.resolve(full.parent)
            if folder is None:
                continue
            matches = sorted(glob.glob(glob.escape(str(self.host(folder))) + "/" + full.name))
            for match in matches:
                self._read_conf(folder / Path(match).name, dirs, depth + 1)

    def library_dirs(self, elf: ElfFile, origin: PurePosixPath) -> list[tuple[str, str]]:
        """(folder, why) in the order ld.so searches them for `elf`'s DT_NEEDED."""
        dirs: list[tuple[str, str]] = []
        # ld.so ignores DT_RPATH when DT_RUNPATH is present.
        for kind, entries in (
            (("RUNPATH", elf.runpath),) if elf.runpath else (("RPATH", elf.rpath),)
        ):
            for entry in entries:
                expanded = expand_origin(entry, origin)
                if expanded is not None:
                    dirs.append((expanded, f"{kind} {entry}"))
        dirs.extend((d, "ld.so.conf") for d in self.ld_so_conf_dirs())
        triplet = elf.triplet
        if triplet:
            dirs.extend((f"{top}/{triplet}", "multiarch") for top in ("/lib", "/usr/lib"))
        if elf.elfclass == 64:
            dirs.extend((d, "default") for d in ("/lib64", "/usr/lib64"))
        dirs.extend((d, "default") for d in DEFAULT_LIB_DIRS)
        seen: set[str] = set()
        unique = []
        for folder, why in dirs:
            if folder not in seen:
                seen.add(folder)
                unique.append((folder, why))
        return unique

    def find_library(
        self, name: str, elf: ElfFile, origin: PurePosixPath
    ) -> tuple[PurePosixPath, PurePosixPath, str] | None:
        """(path as looked up, resolved path, why there) of `name` for `elf`, or None."""
        for folder, why in self.library_dirs(elf, origin):
            where = PurePosixPath(folder, name)
            resolved = self.resolve(where)
            if resolved is None:
                continue
            host = self.host(resolved)
            if host.is_file() and _is_elf_of(host, elf.machine, elf.elfclass):
                return where, resolved, why
        return None


# --- packages


class Md5Check(enum.Enum):
    MATCH = "match"
    MISMATCH = "mismatch"
    UNLISTED = "unlisted"


@dataclass(frozen=True)
class PackageInfo:
    """The package that owns a file, and whether the file's bytes are still the package's."""

    name: str
    architecture: str | None
    version: str | None
    origin: str
    file: str
    md5sums: Md5Check
    expected_md5: str | None
    actual_md5: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "architecture": self.architecture,
            "version": self.version,
            "origin": self.origin,
            "file": self.file,
            "md5sums": self.md5sums.value,
            "expected_md5": self.expected_md5,
            "actual_md5": self.actual_md5,
        }

    def describe(self) -> str:
        version = f" {self.version}" if self.version else ""
        if self.md5sums is Md5Check.MATCH:
            sums = "bytes match its md5sums"
        elif self.md5sums is Md5Check.MISMATCH:
            sums = (
                f"bytes DIFFER from its md5sums (expected {self.expected_md5}, "
                f"found {self.actual_md5}): replaced after installation"
            )
        else:
            sums = "not listed in its md5sums"
        return f"package {self.name}{version} ({self.origin}); {sums}"


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _package_info(
    name: str,
    arch: str | None,
    version: str | None,
    origin: str,
    listed: str,
    sums: Mapping[str, str],
    host: Path,
) -> PackageInfo:
    actual = _md5(host)
    expected = sums.get(listed.lstrip("/"))
    if expected is None:
        check = Md5Check.UNLISTED
    else:
        check = Md5Check.MATCH if expected == actual else Md5Check.MISMATCH
    return PackageInfo(name, arch, version, origin, listed, check, expected, actual)


def installed_package(status_text: str, name: str, arch: str | None) -> tuple[str, str] | None:
    """(version, architecture) of the installed package `name` (of `arch`) in a dpkg status file."""
    from debian.deb822 import Deb822

    fallback = None
    for para in Deb822.iter_paragraphs(status_text.splitlines(), use_apt_pkg=False):
        if para.get("Package") != name:
            continue
        if arch is not None and para.get("Architecture") not in (arch, "all"):
            continue
        found = (str(para.get("Version", "")), str(para.get("Architecture", "")))
        if para.get("Status", "").endswith(" installed"):
            return found
        fallback = fallback or found
    return fallback


class Packages:
    """Who owns a file in a root: nobody (no database)."""

    def owner(self, inside: str, host: Path) -> PackageInfo | None:
        return None

    @property
    def description(self) -> str:
        return "no dpkg database"


class DpkgDatabase(Packages):
    """The root's var/lib/dpkg: info/*.list for ownership, status for versions, md5sums."""

    def __init__(self, admindir: Path) -> None:
        self.admindir = admindir

    @property
    def description(self) -> str:
        return f"dpkg database {self.admindir}"

    def owner(self, inside: str, host: Path) -> PackageInfo | None:
        wanted = path_aliases(inside)
        info = self.admindir / "info"
        for listing in sorted(info.glob("*.list")):
            lines = set(listing.read_text(errors="replace").splitlines())
            listed = next((w for w in wanted if w in lines), None)
            if listed is None:
                continue
            # Multi-Arch: same packages list as NAME:ARCH.list, the others as NAME.list.
            name, _, arch = listing.stem.partition(":")
            status = self.admindir / "status"
            installed = (
                installed_package(status.read_text(errors="replace"), name, arch or None)
                if status.is_file()
                else None
            )
            version, architecture = installed or (None, arch or None)
            md5file = info / f"{listing.stem}.md5sums"
            sums = parse_md5sums(md5file.read_text(errors="replace")) if md5file.is_file() else {}
            return _package_info(name, architecture, version, self.description, listed, sums, host)
        return None


@dataclass(frozen=True)
class DebContent:
    path: Path
    name: str
    version: str | None
    architecture: str | None
    files: frozenset[str]
    md5sums: Mapping[str, str]


class DebSet(Packages):
    """The .deb files given with --deb: each one's control fields, file list and md5sums."""

    def __init__(self, debs: Sequence[Path]) -> None:
        from debian.arfile import ArError
        from debian.debfile import DebError, DebFile

        self.contents: list[DebContent] = []
        for deb in debs:
            try:
                package = DebFile(str(deb))
                control = package.debcontrol()
                names = package.data.tgz().getnames()
                try:
                    sums = {
                        (k.decode() if isinstance(k, bytes) else str(k)): str(v)
                        for k, v in package.md5sums().items()
                    }
                except DebError:
                    sums = {}
            except (ArError, DebError, tarfile.TarError, OSError, KeyError, ValueError) as exc:
                raise VerifyError(
                    f"cannot read the package {deb}: {exc}",
                    hint="give a .deb file made by dpkg-deb (check that it is complete)",
                ) from exc
            self.contents.append(
                DebContent(
                    path=deb,
                    name=str(control["Package"]),
                    version=control.get("Version"),
                    architecture=control.get("Architecture"),
                    files=frozenset("/" + n.removeprefix("./").lstrip("/") for n in names),
                    md5sums={k.lstrip("/"): v for k, v in sums.items()},
                )
            )

    @property
    def description(self) -> str:
        return "the .deb files given"

    def owner(self, inside: str, host: Path) -> PackageInfo | None:
        for content in self.contents:
            listed = next((w for w in path_aliases(inside) if w in content.files), None)
            if listed is not None:
                return _package_info(
                    content.name,
                    content.architecture,
                    content.version,
                    content.path.name,
                    listed,
                    content.md5sums,
                    host,
                )
        return None


def packages_of(root: Path) -> Packages:
    admindir = root / "var/lib/dpkg"
    if (admindir / "status").is_file() and (admindir / "info").is_dir():
        return DpkgDatabase(admindir)
    return Packages()


# --- results


@dataclass(frozen=True)
class ScannedFile:
    """One copy of the start code verify read: where, what it carries, who owns it."""

    role: Role
    path: str
    host: Path
    findings: Findings
    package: PackageInfo | None = None
    found_via: str | None = None

    def tokens(self) -> dict[str, bool]:
        return {recipe: recipe in self.findings.tokens for recipe in TOKENS}

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role.value,
            "path": self.path,
            "status": self.findings.status.value,
            "tokens": self.tokens(),
            "originals": [str(h) for h in self.findings.originals],
            "found_via": self.found_via,
            "package": self.package.to_json() if self.package else {},
        }


class LiveOutcome(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    TIMED_OUT = "timed-out"

    @property
    def exit_code(self) -> int:
        return {LiveOutcome.PASSED: 0, LiveOutcome.FAILED: 1}.get(self, 2)


@dataclass(frozen=True)
class LiveResult:
    """What `--live` saw: the outcome, the argv run, the child's capabilities, the log lines."""

    outcome: LiveOutcome
    dialect: str
    argv: tuple[str, ...]
    returncode: int | None
    child_caps: str
    evidence: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "dialect": self.dialect,
            "argv": list(self.argv),
            "returncode": self.returncode,
            "child_caps": self.child_caps,
            "evidence": list(self.evidence),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class VerifyReport:
    """The verdict on one target, with the files read and why."""

    target: str
    status: Status
    lxc_start: ScannedFile | None
    liblxc: ScannedFile | None
    evidence: tuple[str, ...]
    live: LiveResult | None = None

    @property
    def files(self) -> list[ScannedFile]:
        return [f for f in (self.lxc_start, self.liblxc) if f is not None]

    @property
    def package(self) -> PackageInfo | None:
        """The owner of the library (or of lxc-start when no library was read)."""
        for scanned in (self.liblxc, self.lxc_start):
            if scanned is not None and scanned.package is not None:
                return scanned.package
        return None

    @property
    def version(self) -> str | None:
        return self.package.version if self.package else None

    def tokens(self) -> dict[str, bool]:
        """Recipe → whether any copy read carries its token."""
        return {recipe: any(f.tokens()[recipe] for f in self.files) for recipe in TOKENS}

    @property
    def exit_code(self) -> int:
        code = self.status.exit_code
        if self.live is not None:
            code = max(code, self.live.outcome.exit_code)
        return code

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "status": self.status.value,
            "lxc_start": self.lxc_start.path if self.lxc_start else None,
            "liblxc": self.liblxc.path if self.liblxc else None,
            "version": self.version,
            "evidence": list(self.evidence),
            "package": self.package.to_json() if self.package else {},
            "tokens": self.tokens(),
            "files": [f.to_json() for f in self.files],
            "live": self.live.to_json() if self.live else None,
            "exit_code": self.exit_code,
        }

    def human(self) -> str:
        lines = [f"verify {self.target}: {self.status.value}"]
        for scanned in self.files:
            lines.append(f"  {scanned.role.value:<9} {scanned.path}: {scanned.findings.label}")
            if scanned.package:
                lines.append(f"            {scanned.package.describe()}")
        recipes = ", ".join(f"{r} {'yes' if v else 'no'}" for r, v in self.tokens().items())
        lines.append(f"  tokens: {recipes}")
        lines.extend(f"  - {e}" for e in self.evidence)
        if self.live is not None:
            lines.append(f"  live run ({self.live.dialect}): {self.live.outcome.value}")
            lines.append(f"    child capabilities: {self.live.child_caps}")
            lines.extend(f"    {e}" for e in self.live.evidence)
            lines.extend(f"    note: {n}" for n in self.live.notes)
        return "\n".join(lines)


# --- the edge: from a request to a report


@dataclass(frozen=True)
class VerifyRequest:
    root: Path | None = None
    debs: tuple[Path, ...] = ()
    lib: Path | None = None
    binary: Path | None = None
    live: bool = False
    timeout: float = 60.0


def _inside(root: Path, path: Path, option: str) -> PurePosixPath:
    full = path.absolute()
    try:
        return PurePosixPath("/", full.relative_to(root.absolute()).as_posix())
    except ValueError as exc:
        raise UsageError(
            f"{option} {path} is not inside the root {root}",
            hint=f"give a path under {root}, or leave out --root",
        ) from exc


def _scan_file(
    view: RootView,
    packages: Packages,
    role: Role,
    inside: PurePosixPath,
    elf: ElfFile,
    found_via: str | None,
) -> ScannedFile:
    host = view.host(inside)
    return ScannedFile(
        role=role,
        path=str(inside),
        host=host,
        findings=scan(elf.sections),
        package=packages.owner(str(inside), host),
        found_via=found_via,
    )


def _evidence_of(scanned: ScannedFile) -> list[str]:
    lines: list[str] = []
    for recipe, hit in scanned.findings.tokens.items():
        lines.append(f"{scanned.path}: token of {recipe} at {hit}")
    lines.extend(f"{scanned.path}: original message at {h}" for h in scanned.findings.originals)
    if not scanned.findings.has_start_code:
        lines.append(f"{scanned.path}: no CAP_SYS_BOOT failure message and no lxcpatch token")
    return lines


def inspect(
    root: Path,
    packages: Packages,
    target: str,
    binary: PurePosixPath | None = None,
    lib: PurePosixPath | None = None,
    search_binary: bool = True,
) -> VerifyReport:
    """Verify inside `root`: the given files, or lxc-start found there and the liblxc it loads."""
    view = RootView(root)
    evidence: list[str] = []
    start_elf: ElfFile | None = None
    library_elf: ElfFile | None = None
    start: ScannedFile | None = None
    library: ScannedFile | None = None

    found_via = None
    if binary is None and search_binary:
        found = view.find_lxc_start()
        if not found:
            evidence.append(
                f"no lxc-start in {', '.join(BINARY_DIRS)} of {root} "
                "(install the package that ships it, or point at the files with --binary/--lib)"
            )
        else:
            (where, binary), *shadowed = found
            found_via = f"found at {where}, first on PATH"
            evidence.extend(
                f"{other} ({resolved}) is another lxc-start, shadowed by {where} on PATH; "
                "verify it alone with --binary"
                for other, resolved in shadowed
            )
    elif binary is not None:
        resolved = view.resolve(binary)
        if resolved is None or not view.host(resolved).is_file():
            raise VerifyError(f"{view.host(binary)} does not exist", hint="check --binary")
        binary = resolved
    if binary is not None:
        start_elf = read_elf(view.host(binary))
        start = _scan_file(view, packages, Role.LXC_START, binary, start_elf, found_via)

    if lib is not None:
        resolved_lib = view.resolve(lib)
        if resolved_lib is None or not view.host(resolved_lib).is_file():
            raise VerifyError(f"{view.host(lib)} does not exist", hint="check --lib")
        library_elf = read_elf(view.host(resolved_lib))
        library = _scan_file(view, packages, Role.LIBLXC, resolved_lib, library_elf, "--lib")
    elif start_elf is not None and binary is not None:
        needed = start_elf.liblxc_needed
        if needed is None:
            evidence.append(f"{binary} does not link liblxc: its own copy of the code runs")
        else:
            hit = view.find_library(needed, start_elf, binary.parent)
            if hit is None:
                searched = ", ".join(d for d, _ in view.library_dirs(start_elf, binary.parent))
                evidence.append(f"{binary} needs {needed}, not found in the root ({searched})")
            else:
                where, resolved_lib, why = hit
                library_elf = read_elf(view.host(resolved_lib))
                library = _scan_file(
                    view,
                    packages,
                    Role.LIBLXC,
                    resolved_lib,
                    library_elf,
                    f"{needed} via {why} at {where}",
                )

    for scanned in (start, library):
        if scanned is not None:
            evidence.extend(_evidence_of(scanned))
    status, reason = decide(
        start.findings if start else None,
        library.findings if library else None,
        needs_liblxc=bool(start_elf and start_elf.liblxc_needed),
        is_liblxc=library_elf.is_liblxc if library_elf else True,
    )
    if reason:
        evidence.append(f"unknown: {reason}")
    return VerifyReport(
        target=target, status=status, lxc_start=start, liblxc=library, evidence=tuple(evidence)
    )


def verify(request: VerifyRequest) -> VerifyReport:
    """Verify the target the request names; with `live`, also run its lxc-start."""
    if request.debs:
        if request.root is not None or request.lib or request.binary:
            raise UsageError(
                "--deb cannot be combined with --root, --lib or --binary",
                hint="verify the packages alone, or install them and use --root",
            )
        return _verify_debs(request)
    root = (request.root or Path("/")).absolute()
    if not root.is_dir():
        raise VerifyError(f"the root {root} is not a folder", hint="give --root an existing folder")
    binary = _inside(root, request.binary, "--binary") if request.binary else None
    lib = _inside(root, request.lib, "--lib") if request.lib else None
    named = [f"--binary {request.binary}"] if request.binary else []
    named += [f"--lib {request.lib}"] if request.lib else []
    target = " ".join(named) or str(root)
    report = inspect(
        root,
        packages_of(root),
        target,
        binary=binary,
        lib=lib,
        search_binary=request.lib is None or request.binary is not None,
    )
    if request.live:
        return _with_live(report, root, request.timeout)
    return report


def _verify_debs(request: VerifyRequest) -> VerifyReport:
    for deb in request.debs:
        if not deb.is_file():
            raise VerifyError(f"{deb} does not exist", hint="give --deb a .deb file")
    packages = DebSet(request.debs)
    target = " ".join(f"--deb {d.name}" for d in request.debs)
    with tempfile.TemporaryDirectory(prefix="lxcpatch-verify-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        for deb in request.debs:
            run(["dpkg-deb", "-x", deb, root])
        report = inspect(root, packages, target)
        if report.lxc_start is None and report.liblxc is None:
            hint = (
                "the packages given ship no lxc-start: add the package that does "
                "(e.g. --deb lxc_….deb), or check a library alone with --lib"
            )
            report = dataclasses.replace(report, evidence=(*report.evidence, hint))
        if request.live:
            return _with_live(report, root, request.timeout)
        return report


def _with_live(report: VerifyReport, root: Path, timeout: float) -> VerifyReport:
    if report.lxc_start is None:
        raise UsageError(
            f"--live needs an lxc-start and none was found in {report.target}",
            hint="give --binary PATH or a --root that has lxc-start",
        )
    lib_dir = None
    if report.liblxc is not None and root != Path("/"):
        # Make the run load the very library verify read, not the host's.
        lib_dir = report.liblxc.host.parent
    new_keys = bool(report.liblxc and uses_new_config_keys(read_elf(report.liblxc.host).sections))
    live = run_live(
        report.lxc_start.host,
        lib_dir=lib_dir,
        new_keys=new_keys,
        private_unified=report.status in (Status.PATCHED, Status.UNPATCHED),
        timeout=timeout,
    )
    return dataclasses.replace(report, live=live)


# --- --live: run lxc-start for real


@dataclass(frozen=True)
class LxcOptions:
    """What an lxc-start's --help says it accepts."""

    is_lxc: bool
    foreground: bool
    lxcpath: bool


def parse_help(text: str) -> LxcOptions:
    """Read lxc-start's --help: LXC's shows --logpriority and --rcfile; 1.0+ has --foreground."""
    is_lxc = "--logpriority" in text and "--rcfile" in text
    return LxcOptions(
        is_lxc=is_lxc,
        foreground=is_lxc and "--foreground" in text,
        lxcpath=is_lxc and "--lxcpath" in text,
    )


def container_config(name: str, new_keys: bool) -> str:
    """A throwaway container: no rootfs (the host's root), an empty network, no console."""
    if new_keys:
        keys = {
            "lxc.uts.name": name,
            "lxc.net.0.type": "empty",
            "lxc.console.path": "none",
            "lxc.apparmor.profile": "unconfined",
        }
    else:
        keys = {
            "lxc.utsname": name,
            "lxc.network.type": "empty",
            "lxc.console": "none",
            "lxc.aa_profile": "unconfined",
        }
    return "".join(f"{k} = {v}\n" for k, v in keys.items())


def judge_live(log_text: str, returncode: int | None) -> tuple[LiveOutcome, tuple[str, ...]]:
    """Did the run get past the CAP_SYS_BOOT step? Decided from its log and exit code."""
    lines = log_text.splitlines()
    token = TOKENS[CAP_SYS_BOOT_RECIPE]
    failed = [ln for ln in lines if ORIGINAL_MESSAGE.search(ln.encode())]
    if failed:
        return LiveOutcome.FAILED, tuple(failed)
    passed = [
        ln
        for ln in lines
        if token in ln or DROPPED_MESSAGE.search(ln) or NOT_DROPPING_MESSAGE.search(ln)
    ]
    if passed:
        return LiveOutcome.PASSED, tuple(passed)
    if returncode == 0:
        return LiveOutcome.PASSED, ("exited 0 and logged no capability failure",)
    errors = [ln for ln in lines if "ERROR" in ln][-8:]
    return LiveOutcome.INCONCLUSIVE, (
        f"exited {returncode} before the capability step showed in the log",
        *errors,
    )


def _child_prefix(private_unified: bool) -> list[str]:
    """argv that runs what follows as PID 1 of a throwaway PID and mount namespace, capless.

    --kill-child: when the timeout kills unshare, the kernel kills the whole PID namespace.
    capsh drops both capabilities from the bounding set; as root, execve then gives the next
    program the bounding set as its permitted and effective sets, so they are gone from the
    effective set too (LXC 0.8 - 2.0 only attempt the drop then). run_live's probe checks it.
    """
    script = 'exec "$@"'
    if private_unified:
        # LXC before 2.1 cannot create its cgroup in a unified hierarchy without controllers;
        # this mount namespace is private, so the host keeps its mount.
        script = (
            "if mountpoint -q /sys/fs/cgroup/unified; then umount -l /sys/fs/cgroup/unified; fi; "
            + script
        )
    return [
        "unshare",
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--",
        "sh",
        "-c",
        script,
        "sh",
        "capsh",
        "--drop=cap_sys_boot,cap_setpcap",
    ]


def run_live(
    binary: Path,
    *,
    lib_dir: Path | None,
    new_keys: bool,
    private_unified: bool,
    timeout: float,
    command: Sequence[str] = ("/bin/true",),
) -> LiveResult:
    """Run `binary` (an lxc-start) on a throwaway container without CAP_SYS_BOOT/CAP_SETPCAP."""
    if os.geteuid() != 0:
        raise PrerequisiteError("--live needs root (lxc-start creates namespaces and cgroups)")
    for program in ("unshare", "capsh", "mountpoint"):
        which(program)
    env = {"LD_LIBRARY_PATH": str(lib_dir)} if lib_dir else {}
    prefix = _child_prefix(private_unified)

    probe = run([*prefix, "--shell=/bin/cat", "--", "/proc/self/status"], env=env, timeout=30)
    caps = capabilities.parse_status(probe.stdout)
    if caps is None or caps.has("cap_sys_boot") or caps.has("cap_setpcap"):
        raise VerifyError(
            "could not start a child without CAP_SYS_BOOT and CAP_SETPCAP",
            hint="run verify --live as root with libcap2-bin (capsh) installed",
        )
    child_caps = (
        f"CapEff {caps.effective:#x}, CapBnd {caps.bounding:#x}: no cap_sys_boot, no cap_setpcap"
    )

    helped = run([binary, "--help"], env=env, check=False, timeout=30)
    options = parse_help(helped.stdout + helped.stderr)
    lxcpath = Path(tempfile.mkdtemp(prefix="lxcpatch-live-"))
    before = _Snapshot.take(lxcpath)
    name = f"lxcpatch-verify-{secrets.token_hex(4)}"
    notes: list[str] = []
    try:
        if options.is_lxc:
            dialect = "lxc"
            logfile = lxcpath / f"{name}.log"
            config = lxcpath / name / "config"
            config.parent.mkdir()
            config.write_text(container_config(name, new_keys))
            args = ["-n", name, "-f", str(config), "-l", "DEBUG", "-o", str(logfile)]
            if options.lxcpath:
                args += ["-P", str(lxcpath)]
            if options.foreground:
                args.append("-F")  # 1.0 and later daemonize by default; 0.x runs in the foreground
            args += ["--", *command]
        else:
            # lxcpatch's lxc-mini fixture: its lxc-start takes no LXC options, runs the same start
            # code (the CAP_SYS_BOOT drop) and then execs its arguments; it logs to stderr. It has
            # no container config, namespaces, cgroups or log file, so none is made for it.
            dialect = "lxc-mini"
            logfile = None
            args = list(command)
            notes.append(
                "this lxc-start takes no LXC options (the lxc-mini fixture): "
                "ran it as `lxc-start /bin/true` and read its stderr"
            )
        argv = [*prefix, f"--shell={binary}", "--", *args]
        try:
            proc = run(argv, env=env, check=False, timeout=timeout)
        except CommandError as exc:
            if not isinstance(exc.__cause__, subprocess.TimeoutExpired):
                raise
            return LiveResult(
                LiveOutcome.TIMED_OUT,
                dialect,
                tuple(argv),
                None,
                child_caps,
                (f"killed after {timeout:g} s",),
                tuple(notes),
            )
        text = proc.stderr
        if logfile is not None and logfile.is_file():
            text = logfile.read_text(errors="replace") + "\n" + proc.stderr
        outcome, evidence = judge_live(text, proc.returncode)
        return LiveResult(
            outcome, dialect, tuple(argv), proc.returncode, child_caps, evidence, tuple(notes)
        )
    finally:
        _clean_up(before, lxcpath, name)


CGROUP_ROOT = Path("/sys/fs/cgroup")
RUN_LOCKS = Path("/run/lxc/lock")


def _dirs(top: Path, depth: int = 6) -> set[Path]:
    """Every folder under `top`, down to `depth` levels."""
    found: set[Path] = set()
    if not top.is_dir():
        return found
    for folder, subdirs, _ in os.walk(top):
        if len(Path(folder).relative_to(top).parts) >= depth:
            subdirs.clear()
        found.update(Path(folder, s) for s in subdirs)
    return found


def leftovers(before: set[Path], after: set[Path], name: str) -> list[Path]:
    """The folders a run created for container `name`, deepest first.

    Those named after it (LXC's lxc/NAME, lxc.payload.NAME, …), the new parents above them and
    new "lxc" and "lxc.*" folders (LXC's own); never a folder that existed before.
    """
    new = after - before
    # LXC removes the container's own cgroup on a failed start but leaves its new parent "lxc";
    # 4.0 and later leave "lxc.pivot", where the monitor waited while the container's went.
    ours = {
        p
        for p in new
        if any(name in part for part in p.parts) or p.name == "lxc" or p.name.startswith("lxc.")
    }
    for path in list(ours):
        ours.update(parent for parent in path.parents if parent in new)
    return sorted(ours, key=lambda p: len(p.parts), reverse=True)


@dataclass(frozen=True)
class _Snapshot:
    """The folders that existed before a live run, so that cleaning up removes only new ones."""

    cgroups: set[Path]
    locks: set[Path]

    @classmethod
    def take(cls, lxcpath: Path) -> _Snapshot:
        lock = RUN_LOCKS / lxcpath.relative_to("/")
        return cls(_dirs(CGROUP_ROOT), {p for p in lock.parents if p.is_dir()})


def _clean_up(before: _Snapshot, lxcpath: Path, name: str) -> None:
    """Remove the container's cgroups, its lxcpath and LXC's lock folders, if they are new."""
    for folder in leftovers(before.cgroups, _dirs(CGROUP_ROOT), name):
        try:
            folder.rmdir()  # a cgroup goes with rmdir once it has no processes
        except OSError as exc:
            log.warning("could not remove the cgroup %s: %s", folder, exc.strerror)
    shutil.rmtree(lxcpath, ignore_errors=True)
    lock = RUN_LOCKS / lxcpath.relative_to("/")
    shutil.rmtree(lock, ignore_errors=True)
    for parent in lock.parents:
        if parent in before.locks:
            break
        try:
            parent.rmdir()
        except OSError:
            break
