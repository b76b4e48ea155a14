"""Build Debian packages from a patched tree.

Two flavors. *debian*: the tree's own `debian/` builds it, with lxcpatch's patches moved into
`debian/patches/` and a changelog entry (`dpkg-buildpackage`). *upstream*: configure for /usr,
`make install` into a staging folder, and `dpkg-deb` one `lxc` package that stands in for the
distribution's LXC packages. Packages are assembled in a temporary folder and land in
`build/debs/<tree>/` with `SHA256SUMS` and `build.json` only when all are built.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import enum
import gzip
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import stat
import tarfile
import textwrap
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lxcpatch import __version__, run
from lxcpatch.errors import CommandError, LxcpatchError, PrerequisiteError, UsageError
from lxcpatch.recipes import buildprofile
from lxcpatch.workspace import Workspace, atomic_write_json

if TYPE_CHECKING:
    import subprocess

    from debian.deb822 import Deb822
    from rich.console import RenderableType

log = logging.getLogger(__name__)

PACKAGE = "lxc"
DEFAULT_MAINTAINER = "lxcpatch <lxcpatch@example.org>"
HOMEPAGE = "https://linuxcontainers.org/lxc/"
SYSTEMD_UNIT_DIR = "/lib/systemd/system"
CHANGELOG_DISTRIBUTION = "unstable"
# A control build sorts below the release it was made from ("~"), never above a patched one.
PATCHED_MARK = "+lxcpatch"
UNPATCHED_MARK = "~unpatched"
_C_SOURCES = {".c", ".h"}


class Flavor(enum.StrEnum):
    AUTO = "auto"
    UPSTREAM = "upstream"
    DEBIAN = "debian"


class PatchState(enum.StrEnum):
    PATCHED = "patched"
    NOT_NEEDED = "not-needed"  # the release never drops CAP_SYS_BOOT (2.1 and later)
    UNPATCHED = "unpatched"  # built with --allow-unpatched, as a control


@dataclass(frozen=True)
class SeriesEntry:
    """One patch lxcpatch applied to the tree, in order."""

    name: str
    recipe: str
    sha256: str
    description: str
    path: Path


@dataclass(frozen=True)
class BuildRequest:
    tree: str | None = None
    flavor: Flavor = Flavor.AUTO
    jobs: int | None = None
    ccache: bool = True
    allow_unpatched: bool = False
    configure_args: tuple[str, ...] = ()
    lint: bool = False
    build_number: int | None = None


@dataclass(frozen=True)
class ToolRun:
    step: str
    argv: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class StepTime:
    name: str
    seconds: float
    tool_seconds: float
    log: Path | None
    reused: bool = False


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    architecture: str
    file: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class LintFinding:
    severity: str  # E, W, I, P, X, O, N
    package: str
    tag: str
    info: str


@dataclass(frozen=True)
class BuildResult:
    """What `build` made: the packages in build/debs/<tree>/ and how long each step took."""

    tree: str
    flavor: Flavor
    build_system: str
    version: str
    state: PatchState
    series: tuple[SeriesEntry, ...]
    packages: tuple[Package, ...]
    steps: tuple[StepTime, ...]
    tools: tuple[ToolRun, ...]
    total_seconds: float
    debs: Path
    lint: tuple[LintFinding, ...] | None = None

    @property
    def tool_seconds(self) -> float:
        return sum(t.seconds for t in self.tools)

    @property
    def exit_code(self) -> int:
        return 0

    def to_json(self) -> dict[str, Any]:
        return {
            "tree": self.tree,
            "flavor": str(self.flavor),
            "build_system": self.build_system,
            "version": self.version,
            "state": str(self.state),
            "series": [_series_json(e) for e in self.series],
            "packages": [_package_json(p) for p in self.packages],
            "steps": [_step_json(s) for s in self.steps],
            "total_seconds": round(self.total_seconds, 3),
            "tool_seconds": round(self.tool_seconds, 3),
            "overhead_seconds": round(self.total_seconds - self.tool_seconds, 3),
            "debs": str(self.debs),
            "lint": None if self.lint is None else [dataclasses.asdict(f) for f in self.lint],
        }

    def human(self) -> RenderableType:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, pad_edge=False)
        table.add_column("package")
        table.add_column("version")
        table.add_column("size", justify="right")
        table.add_column("sha256")
        for p in self.packages:
            table.add_row(p.name, p.version, f"{p.size / 1024:.0f} KiB", p.sha256[:16])
        what = {
            PatchState.PATCHED: f"{len(self.series)} patch(es): "
            + ", ".join(e.name for e in self.series),
            PatchState.NOT_NEEDED: "no patch needed (this release does not drop CAP_SYS_BOOT)",
            PatchState.UNPATCHED: "UNPATCHED control build (--allow-unpatched)",
        }[self.state]
        parts: list[RenderableType] = [
            Text(f"built {self.tree} ({self.flavor} flavor, {self.build_system}), {what}"),
            table,
            Text(
                f"in {self.debs}  ({self.total_seconds:.1f} s, of which tools "
                f"{self.tool_seconds:.1f} s)"
            ),
        ]
        if self.lint is not None:
            counts = {s: sum(1 for f in self.lint if f.severity == s) for s in "EWI"}
            parts.append(
                Text(
                    f"lintian: {counts['E']} error(s), {counts['W']} warning(s), {counts['I']} info"
                )
            )
            for f in self.lint:
                parts.append(Text(f"  {f.severity}: {f.package}: {f.tag} {f.info}".rstrip()))
        return Group(*parts)


def _series_json(entry: SeriesEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "recipe": entry.recipe,
        "sha256": entry.sha256,
        "description": entry.description,
        "path": str(entry.path),
    }


def _package_json(p: Package) -> dict[str, Any]:
    return {
        "name": p.name,
        "version": p.version,
        "architecture": p.architecture,
        "file": p.file.name,
        "size": p.size,
        "sha256": p.sha256,
    }


def _step_json(s: StepTime) -> dict[str, Any]:
    return {
        "step": s.name,
        "seconds": round(s.seconds, 3),
        "tool_seconds": round(s.tool_seconds, 3),
        "log": None if s.log is None else str(s.log),
        "reused": s.reused,
    }


# --- pure core ------------------------------------------------------------------------------


def package_version(base: str, build_number: int, state: PatchState) -> str:
    """`2.0.11+lxcpatch1`; a control build of an unpatched tree is `2.0.11~unpatched1`."""
    mark = UNPATCHED_MARK if state is PatchState.UNPATCHED else PATCHED_MARK
    return f"{base}{mark}{build_number}"


def series_key(pristine: str, state: PatchState, series: Sequence[SeriesEntry]) -> str:
    """What the build number follows: the same source and patches keep it, a change bumps it."""
    text = json.dumps([pristine, str(state), [(e.name, e.sha256) for e in series]])
    return hashlib.sha256(text.encode()).hexdigest()


def next_build_number(previous: Mapping[str, Any] | None, base_version: str, key: str) -> int:
    """1 for a first build; the previous number when nothing changed; one more when it did."""
    if not previous or previous.get("base_version") != base_version:
        return 1
    number = int(previous.get("build_number", 0))
    if previous.get("series_key") == key:
        return max(number, 1)
    return number + 1


def description_lines(
    manifest: Mapping[str, Any], state: PatchState, series: Sequence[SeriesEntry]
) -> list[str]:
    """The extended description: where the source came from and every patch with its sha256."""
    commit = str(manifest.get("commit") or "")[:12]
    origin = f"{manifest.get('source', '?')}"
    if manifest.get("ref"):
        origin += f" at {manifest['ref']}"
    if commit:
        origin += f", commit {commit}"
    lines = textwrap.wrap(
        f"LXC {manifest.get('version', '?')} (liblxc, the lxc-* tools and their headers) "
        f"built by lxcpatch {__version__} from {origin}.",
        width=78,
        break_long_words=True,
    )
    lines.append(".")
    if state is PatchState.PATCHED:
        lines.append("Patches applied (sha256):")
        for entry in series:
            lines.append(f" {entry.name} ({entry.recipe})")
            lines.append(f"  sha256 {entry.sha256}")
    elif state is PatchState.NOT_NEEDED:
        lines.append("No patch applied: this release does not drop CAP_SYS_BOOT.")
    else:
        lines.append("UNPATCHED control build (--allow-unpatched): lxc-start still fails")
        lines.append("where CAP_SYS_BOOT is already gone from the bounding set.")
    return lines


def changelog_changes(
    manifest: Mapping[str, Any], state: PatchState, series: Sequence[SeriesEntry], flavor: Flavor
) -> list[str]:
    """The bullet lines of lxcpatch's changelog entry."""
    commit = str(manifest.get("commit") or "")[:12]
    items = [
        f"Built by lxcpatch {__version__} ({flavor} flavor) from {manifest.get('source', '?')}"
        + (f" at {manifest['ref']}" if manifest.get("ref") else "")
        + (f", commit {commit}" if commit else "")
        + "."
    ]
    if state is PatchState.PATCHED:
        items += [f"{e.name} ({e.recipe}), sha256 {e.sha256}: {e.description}" for e in series]
    elif state is PatchState.NOT_NEEDED:
        items.append("No patch applied: this release does not drop CAP_SYS_BOOT.")
    else:
        items.append("UNPATCHED control build (--allow-unpatched).")
    changes = []
    for item in items:
        wrapped = textwrap.wrap(item, width=76, break_long_words=True, break_on_hyphens=False)
        changes += ["  * " + wrapped[0], *("    " + line for line in wrapped[1:])]
    return changes


def changelog_text(
    package: str, version: str, author: str, epoch: int, changes: Sequence[str]
) -> str:
    from debian.changelog import Changelog

    changelog = Changelog()
    _add_changelog_block(
        changelog, package, version, CHANGELOG_DISTRIBUTION, author, epoch, changes
    )
    return str(changelog)


def _add_changelog_block(
    changelog: Any,
    package: str,
    version: str,
    distribution: str,
    author: str,
    epoch: int,
    changes: Sequence[str],
) -> None:
    changelog.new_block(
        package=package,
        version=version,
        distributions=distribution,
        urgency="medium",
        author=author,
        date=email.utils.formatdate(epoch).replace("-0000", "+0000"),
    )
    changelog.add_change("")
    for line in changes:
        changelog.add_change(line)
    changelog.add_change("")


def control_fields(
    *,
    version: str,
    architecture: str,
    maintainer: str,
    installed_size: int,
    depends: str,
    synopsis: str,
    description: Sequence[str],
) -> Deb822:
    """The DEBIAN/control stanza of the upstream-flavor `lxc` package."""
    from debian.deb822 import Deb822

    provides = ", ".join(f"{p} (= {version})" for p in buildprofile.REPLACED_PACKAGES)
    fields = Deb822()
    fields["Package"] = PACKAGE
    fields["Version"] = version
    fields["Architecture"] = architecture
    fields["Maintainer"] = maintainer
    fields["Installed-Size"] = str(installed_size)
    if depends:
        fields["Depends"] = depends
    fields["Conflicts"] = ", ".join(buildprofile.REPLACED_PACKAGES)
    fields["Replaces"] = ", ".join(
        buildprofile.REPLACED_PACKAGES + buildprofile.OVERWRITTEN_PACKAGES
    )
    fields["Provides"] = provides
    fields["Section"] = "admin"
    fields["Priority"] = "optional"
    fields["Homepage"] = HOMEPAGE
    fields["Description"] = synopsis + "".join(
        "\n " + (line if line.strip() else ".") for line in description
    )
    return fields


def md5sums_text(sums: Mapping[str, str]) -> str:
    """DEBIAN/md5sums: `<md5>  <path>` for every regular file, paths without the leading /."""
    return "".join(f"{sums[path]}  {path}\n" for path in sorted(sums))


def parse_lintian(text: str) -> list[LintFinding]:
    findings = []
    for line in text.splitlines():
        match = _LINTIAN_LINE.match(line)
        if match:
            findings.append(
                LintFinding(
                    severity=match["severity"],
                    package=match["package"],
                    tag=match["tag"],
                    info=(match["info"] or "").strip(),
                )
            )
    return findings


_LINTIAN_LINE = re.compile(
    r"^(?P<severity>[EWIPXON]): (?P<package>[^\s:]+)(?: [a-z]+)?: (?P<tag>\S+)(?P<info> .*)?$"
)
_NOT_FOUND = re.compile(r"(?:^|[\s:'`])([A-Za-z0-9_.+-]+): (?:command )?not found", re.MULTILINE)


def missing_tool_hint(output: str) -> str | None:
    """When a build script failed because a program is missing, name the package that has it."""
    for name in _NOT_FOUND.findall(output):
        if name in run.PACKAGE_FOR:
            return f"{name} is missing: apt-get install {run.PACKAGE_FOR[name]} (or `invoke deps`)"
    return None


def license_text(copying: str | None) -> tuple[str, str]:
    """(short name, paragraph) for the copyright file from the upstream COPYING text."""
    if copying and re.search(r"lesser general public license", copying, re.IGNORECASE):
        return "LGPL-2.1+", (
            "On Debian systems, the complete text of the GNU Lesser General Public License\n"
            "version 2.1 can be found in /usr/share/common-licenses/LGPL-2.1."
        )
    if copying and re.search(r"general public license", copying, re.IGNORECASE):
        return "GPL-2+", (
            "On Debian systems, the complete text of the GNU General Public License\n"
            "version 2 can be found in /usr/share/common-licenses/GPL-2."
        )
    return "see-upstream", (copying or "The upstream tree has no COPYING file.").strip()


def copyright_text(manifest: Mapping[str, Any], copying: str | None, year: int) -> str:
    name, paragraph = license_text(copying)
    body = "\n".join(" " + (line if line.strip() else ".") for line in paragraph.splitlines())
    return (
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        "Upstream-Name: lxc\n"
        f"Source: {manifest.get('source', HOMEPAGE)}\n"
        "Comment: Built by lxcpatch; the patches it applied are listed in\n"
        " changelog.Debian.gz and in the package description.\n"
        "\n"
        "Files: *\n"
        f"Copyright: {year} the LXC contributors (see AUTHORS in the upstream source)\n"
        f"License: {name}\n"
        f"{body}\n"
    )


# --- the edge -------------------------------------------------------------------------------


class BuildError(LxcpatchError):
    """The build ran and failed (exit 1); the previous packages are untouched."""


def build(ws: Workspace, request: BuildRequest) -> BuildResult:
    """Build the tree's packages into build/debs/<tree>/ (see the module docstring)."""
    started = time.monotonic()
    name = request.tree or ws.current_tree()
    tree = ws.tree(name)
    if not tree.is_dir():
        raise PrerequisiteError(
            f"no tree {name} in {ws.src}", hint="run `lxcpatch fetch` first, or check --tree"
        )
    if request.jobs is not None and request.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {request.jobs}")
    if request.build_number is not None and request.build_number < 1:
        raise UsageError(f"--build-number must be at least 1, not {request.build_number}")
    manifest = _load_manifest(ws, name)
    flavor = _choose_flavor(request.flavor, tree, manifest)
    build_system = _build_system(tree, manifest)
    state, series = _patch_state(ws, tree, request.allow_unpatched)
    with ws.lock("build"):
        job = _Job(ws, name, tree, manifest, flavor, build_system, state, series, request, started)
        return job.execute()


def _load_manifest(ws: Workspace, name: str) -> dict[str, Any]:
    from lxcpatch import fetch

    return fetch.load_manifest(ws, name).document()


def _choose_flavor(asked: Flavor, tree: Path, manifest: Mapping[str, Any]) -> Flavor:
    has_debian = (tree / "debian" / "control").is_file() and (tree / "debian" / "rules").is_file()
    if asked is Flavor.DEBIAN and not has_debian:
        raise UsageError(
            f"--flavor debian needs debian/control and debian/rules in {tree}",
            hint="fetch a .dsc or apt:lxc source, or build with --flavor upstream",
        )
    if asked is Flavor.AUTO:
        return Flavor.DEBIAN if has_debian or manifest.get("debian") is True else Flavor.UPSTREAM
    return asked


def _build_system(tree: Path, manifest: Mapping[str, Any]) -> str:
    chosen = manifest.get("build_system")
    if chosen in {"autotools", "meson"}:
        return str(chosen)
    if (tree / "meson.build").is_file():
        return "meson"
    return "autotools"


def _patch_state(
    ws: Workspace, tree: Path, allow_unpatched: bool
) -> tuple[PatchState, tuple[SeriesEntry, ...]]:
    """What lxcpatch applied to the tree; or, when nothing, whether the series needs anything."""
    from lxcpatch import patch

    applied = patch.applied(tree)
    if applied:
        series = tuple(
            SeriesEntry(
                name=a.name,
                recipe=a.recipe,
                sha256=a.sha256,
                description=a.description,
                path=Path(a.path),
            )
            for a in applied
        )
        return PatchState.PATCHED, series
    report = patch.run_patch(ws, patch.PatchRequest(trees=(str(tree),), check=True))
    assert isinstance(report, patch.PatchReport)
    results = [r for t in report.trees for r in t.results]
    pending = [r for r in results if r.status not in {patch.Status.NOT_NEEDED}]
    if not pending:
        log.info("%s: nothing to patch (%s)", tree.name, "; ".join(r.reason for r in results))
        return PatchState.NOT_NEEDED, ()
    if allow_unpatched:
        log.warning("building %s UNPATCHED, as a control (--allow-unpatched)", tree.name)
        return PatchState.UNPATCHED, ()
    why = "; ".join(f"{r.recipe}: {r.status} ({r.reason})" for r in pending)
    raise LxcpatchError(
        f"{tree.name} is not patched: {why}",
        hint="run `lxcpatch patch` first, or pass --allow-unpatched to build it as a control "
        f"(its version is marked {UNPATCHED_MARK}N)",
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tree_files(root: Path) -> dict[str, str]:
    """{relative path: sha256 (or "link:<target>")} of everything but .git."""
    files: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d != ".git"]
        for entry in list(dirnames) + filenames:
            path = Path(dirpath) / entry
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                files[rel] = "link:" + os.readlink(path)
            elif entry in filenames and path.is_file():
                files[rel] = _sha256(path)
    return files


@dataclass
class _Job:
    """One build: the steps, their timing, and the assembly of the result."""

    ws: Workspace
    name: str
    tree: Path
    manifest: dict[str, Any]
    flavor: Flavor
    build_system: str
    state: PatchState
    series: tuple[SeriesEntry, ...]
    request: BuildRequest
    started: float
    tools: list[ToolRun] = field(default_factory=list)
    steps: list[StepTime] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    # -- timing and running --

    @property
    def jobs(self) -> int:
        return self.request.jobs or len(os.sched_getaffinity(0)) or 1

    @contextlib.contextmanager
    def step(self, step: str, *, logged: bool = True) -> Iterator[Path | None]:
        logfile = self.ws.log(self.name, step) if logged else None
        if logfile is not None:
            logfile.parent.mkdir(parents=True, exist_ok=True)
            logfile.unlink(missing_ok=True)
        log.info("%s: %s …", self.name, step)
        begin, first_tool = time.monotonic(), len(self.tools)
        try:
            yield logfile
        except CommandError as exc:
            hint = missing_tool_hint(exc.tail) or (
                f"read {exc.log or logfile}; fix the tree or the options "
                "(--configure-args, --flavor) and build again; the previous packages are untouched"
            )
            raise CommandError(exc.argv, exc.returncode, exc.tail, log=exc.log, hint=hint) from exc
        seconds = time.monotonic() - begin
        tool_seconds = sum(t.seconds for t in self.tools[first_tool:])
        self.steps.append(StepTime(step, seconds, tool_seconds, logfile))
        log.info("%s: %s done in %.1f s", self.name, step, seconds)

    def skipped(self, step: str, why: str) -> None:
        log.info("%s: %s reused (%s)", self.name, step, why)
        self.steps.append(StepTime(step, 0.0, 0.0, None, reused=True))

    def tool(
        self,
        step: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        cwd: Path | None = None,
        logfile: Path | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        begin = time.monotonic()
        try:
            return run.run(
                argv, cwd=cwd, env={**self.env, **(env or {})}, logfile=logfile, check=check
            )
        finally:
            self.tools.append(ToolRun(step, tuple(str(a) for a in argv), time.monotonic() - begin))

    # -- the build --

    def execute(self) -> BuildResult:
        self._check_tools()
        epoch = self._source_date_epoch()
        self.env = {
            "SOURCE_DATE_EPOCH": str(epoch),
            "TZ": "UTC",
            "CCACHE_DIR": str(self.ws.cache / "ccache"),
            "CCACHE_BASEDIR": str(self.ws.work(self.name)),
        }
        previous = _read_json(self.ws.debs(self.name) / "build.json")
        key = series_key(str(self.manifest.get("pristine", "")), self.state, self.series)
        with self.ws.staging(f"build-{self.name}") as tmp:
            out = tmp / "debs"
            out.mkdir()
            if self.flavor is Flavor.DEBIAN:
                base, packages = self._debian(tmp, out, epoch, previous, key)
            else:
                base, packages = self._upstream(tmp, out, epoch, previous, key)
            lint = self._lint(packages) if self.request.lint else None
            version = packages[0].version if packages else ""
            number = _build_number(version)
            total = time.monotonic() - self.started
            result = BuildResult(
                tree=self.name,
                flavor=self.flavor,
                build_system=self.build_system,
                version=version,
                state=self.state,
                series=self.series,
                packages=tuple(
                    dataclasses.replace(p, file=self.ws.debs(self.name) / p.file.name)
                    for p in packages
                ),
                steps=tuple(self.steps),
                tools=tuple(self.tools),
                total_seconds=total,
                debs=self.ws.debs(self.name),
                lint=None if lint is None else tuple(lint),
            )
            (out / "SHA256SUMS").write_text(
                "".join(f"{p.sha256}  {p.file.name}\n" for p in sorted(packages, key=_by_file))
            )
            document = {
                **result.to_json(),
                "base_version": base,
                "build_number": number,
                "series_key": key,
                "source": self.manifest,
                "source_date_epoch": int(self.env["SOURCE_DATE_EPOCH"]),
                "jobs": self.jobs,
                "ccache": self._ccache is not None,
                "configure_args": list(self.request.configure_args),
                "tools": [
                    {"step": t.step, "argv": list(t.argv), "seconds": round(t.seconds, 3)}
                    for t in self.tools
                ],
                "lxcpatch": __version__,
            }
            atomic_write_json(out / "build.json", document)
            (out / "build.json").chmod(0o644)
            _replace_dir(out, self.ws.debs(self.name))
        log.info("%s: packages in %s", self.name, self.ws.debs(self.name))
        return result

    def _check_tools(self) -> None:
        """Fail before building anything when a program the build needs is missing."""
        needed = ["dpkg", "dpkg-deb", "git"]
        if self.flavor is Flavor.DEBIAN:
            needed += ["dpkg-buildpackage", "dpkg-source"]
        elif self.build_system == "meson":
            needed += ["gcc", "meson", "ninja", "strip", "dpkg-shlibdeps", "dpkg-architecture"]
        else:
            needed += ["gcc", "make", "strip", "dpkg-shlibdeps", "dpkg-architecture"]
            if not (self.tree / "configure").is_file():
                needed += ["autoreconf", "automake", "libtoolize"]
                configure_ac = self.tree / "configure.ac"
                if configure_ac.is_file() and "PKG_CHECK_MODULES" in configure_ac.read_text(
                    errors="replace"
                ):
                    needed.append("pkg-config")
        if self.request.lint:
            needed.append("lintian")
        for program in needed:
            run.which(program)

    @property
    def _ccache(self) -> str | None:
        return shutil.which("ccache") if self.request.ccache else None

    def _source_date_epoch(self) -> int:
        pristine = str(self.manifest.get("pristine") or "")
        argv = ["git", "-C", str(self.tree), "log", "-1", "--format=%ct"]
        proc = self.tool("prepare", [*argv, pristine] if pristine else argv)
        return int(proc.stdout.strip())

    def _maintainer(self) -> str:
        name, mail = os.environ.get("DEBFULLNAME"), os.environ.get("DEBEMAIL")
        if name and mail:
            return f"{name} <{mail}>"
        return DEFAULT_MAINTAINER

    def _version_for(
        self, base: str, previous: Mapping[str, Any] | None, key: str
    ) -> tuple[str, int]:
        number = self.request.build_number or next_build_number(previous, base, key)
        return package_version(base, number, self.state), number

    # -- upstream flavor --

    def _upstream(
        self, tmp: Path, out: Path, epoch: int, previous: Mapping[str, Any] | None, key: str
    ) -> tuple[str, list[Package]]:
        base = str(self.manifest.get("version") or "")
        if not re.match(r"^[0-9][A-Za-z0-9.+~]*$", base):
            raise PrerequisiteError(
                f"the manifest of {self.name} has no usable LXC version ({base!r})",
                hint="fetch the tree again with `lxcpatch fetch --force`",
            )
        version, _ = self._version_for(base, previous, key)
        multiarch = self.tool("prepare", ["dpkg-architecture", "-qDEB_HOST_MULTIARCH"])
        architecture = self.tool("prepare", ["dpkg", "--print-architecture"]).stdout.strip()
        libdir = f"/usr/lib/{multiarch.stdout.strip()}"
        work = self.ws.work(self.name)
        src = work / "src"
        pkgdir = tmp / "pkg"
        root = pkgdir / "debian" / PACKAGE
        root.mkdir(parents=True)

        cc = os.environ.get("CC", "gcc")
        if self._ccache:
            cc = f"{self._ccache} {cc}"
        cflags = f"-g -O2 -ffile-prefix-map={src}=."
        if self.build_system == "autotools":
            reuse = self._sync(work, src, ["autotools", cc, cflags, *self.request.configure_args])
            self._autotools(src, root, reuse, cc, cflags, libdir)
        else:
            reuse = self._sync(work, src, ["meson", cc, cflags, *self.request.configure_args])
            self._meson(src, root, reuse, cc, cflags, libdir)

        with self.step("package") as logfile:
            package = self._package(
                pkgdir, root, out, version, architecture, libdir, epoch, [work, tmp], logfile
            )
        return base, [package]

    def _sync(self, work: Path, src: Path, config: list[str]) -> bool:
        """Bring the build copy up to date with the tree; True when its configured state holds.

        Only C sources and headers may change in place (make rebuilds what depends on them);
        any other change, or a new or deleted file, starts from a fresh copy.
        """
        # The build folder's own path is part of what configure wrote (a moved workspace starts
        # afresh).
        config = [str(src), *config]
        with self.step("prepare", logged=False):
            files = _tree_files(self.tree)
            shape = {
                rel: digest for rel, digest in files.items() if Path(rel).suffix not in _C_SOURCES
            }
            key = hashlib.sha256(
                json.dumps([config, sorted(files), shape], sort_keys=True).encode()
            ).hexdigest()
            state_file = work / "state.json"
            state = _read_json(state_file) or {}
            if state.get("key") == key and state.get("configured") and src.is_dir():
                old = state.get("files", {})
                changed = [rel for rel, digest in files.items() if old.get(rel) != digest]
                for rel in changed:
                    # A fresh mtime, so that make rebuilds what depends on it.
                    target = src / rel
                    target.unlink(missing_ok=True)
                    shutil.copyfile(self.tree / rel, target)
                    shutil.copymode(self.tree / rel, target)
                atomic_write_json(state_file, {**state, "files": files})
                log.info(
                    "%s: build folder reused, %d changed file(s): %s",
                    self.name,
                    len(changed),
                    ", ".join(changed[:5]) or "none",
                )
                return True
            if work.exists():
                shutil.rmtree(work)
            work.mkdir(parents=True)
            shutil.copytree(self.tree, src, symlinks=True, ignore=shutil.ignore_patterns(".git"))
            atomic_write_json(state_file, {"key": key, "configured": False, "files": files})
            return False

    def _mark_configured(self) -> None:
        state_file = self.ws.work(self.name) / "state.json"
        state = _read_json(state_file) or {}
        atomic_write_json(state_file, {**state, "configured": True})

    def _autotools(
        self, src: Path, root: Path, reuse: bool, cc: str, cflags: str, libdir: str
    ) -> None:
        if reuse:
            self.skipped("autogen", "inputs unchanged")
            self.skipped("configure", "inputs unchanged")
        else:
            if not (src / "configure").is_file():
                with self.step("autogen") as logfile:
                    argv = ["./autogen.sh"] if (src / "autogen.sh").is_file() else [
                        "autoreconf", "--force", "--install"
                    ]  # fmt: skip
                    self.tool("autogen", argv, cwd=src, logfile=logfile)
            with self.step("configure") as logfile:
                help_text = self.tool("configure", ["sh", "./configure", "--help"], cwd=src).stdout
                profile = buildprofile.autotools_profile(help_text)
                flags = cflags
                if not buildprofile.offers_werror_switch(help_text):
                    flags += " -Wno-error"
                argv = [
                    "sh",
                    "./configure",
                    "--prefix=/usr",
                    "--sysconfdir=/etc",
                    "--localstatedir=/var",
                    f"--libdir={libdir}",
                    f"--libexecdir={'/usr/libexec'}",
                    *profile,
                    *self.request.configure_args,
                    f"CC={cc}",
                    f"CFLAGS={flags}",
                ]
                self.tool("configure", argv, cwd=src, logfile=logfile)
            self._mark_configured()
        overrides = _make_overrides(src)
        with self.step("compile") as logfile:
            self.tool("compile", ["make", f"-j{self.jobs}", *overrides], cwd=src, logfile=logfile)
        with self.step("install") as logfile:
            # automake's install rules run in parallel (the files are the same as with -j1).
            argv = [
                "make",
                f"-j{self.jobs}",
                "install",
                f"DESTDIR={root}",
                f"SYSTEMD_UNIT_DIR={SYSTEMD_UNIT_DIR}",
                *overrides,
            ]
            self.tool("install", argv, cwd=src, logfile=logfile)

    def _meson(self, src: Path, root: Path, reuse: bool, cc: str, cflags: str, libdir: str) -> None:
        builddir = src / "_lxcpatch_build"
        if reuse:
            self.skipped("configure", "inputs unchanged")
        else:
            with self.step("configure") as logfile:
                options = ""
                for candidate in ("meson_options.txt", "meson.options"):
                    if (src / candidate).is_file():
                        options += (src / candidate).read_text(errors="replace")
                argv = [
                    "meson",
                    "setup",
                    str(builddir),
                    "--prefix=/usr",
                    "--sysconfdir=/etc",
                    "--localstatedir=/var",
                    f"--libdir={libdir}",
                    "--libexecdir=/usr/libexec",
                    "--buildtype=debugoptimized",
                    *buildprofile.meson_profile(options),
                    *self.request.configure_args,
                ]
                self.tool(
                    "configure", argv, cwd=src, logfile=logfile, env={"CC": cc, "CFLAGS": cflags}
                )
            self._mark_configured()
        with self.step("compile") as logfile:
            argv = ["ninja", "-C", str(builddir), f"-j{self.jobs}"]
            self.tool("compile", argv, cwd=src, logfile=logfile)
        with self.step("install") as logfile:
            argv = ["meson", "install", "-C", str(builddir), "--no-rebuild", "--destdir", str(root)]
            self.tool("install", argv, cwd=src, logfile=logfile)

    def _package(
        self,
        pkgdir: Path,
        root: Path,
        out: Path,
        version: str,
        architecture: str,
        libdir: str,
        epoch: int,
        forbidden: Sequence[Path],
        logfile: Path | None,
    ) -> Package:
        # Libtool archives and static libraries are not shipped: the package is the runtime
        # (meson's static liblxc.a even names the build folder in its member table).
        for archive in [*root.rglob("*.la"), *root.rglob("*.a")]:
            if archive.is_file() and not archive.is_symlink():
                archive.unlink()
        elves = _elf_files(root)
        self._strip(elves, logfile)
        _check_paths(root, forbidden)
        _compress_manpages(root)
        doc = root / "usr" / "share" / "doc" / PACKAGE
        doc.mkdir(parents=True, exist_ok=True)
        copying = next(
            (p.read_text(errors="replace") for p in (self.tree / "COPYING",) if p.is_file()), None
        )
        year = time.gmtime(epoch).tm_year
        (doc / "copyright").write_text(copyright_text(self.manifest, copying, year))
        changes = changelog_changes(self.manifest, self.state, self.series, self.flavor)
        changelog = changelog_text(PACKAGE, version, self._maintainer(), epoch, changes)
        (doc / "changelog.Debian.gz").write_bytes(
            gzip.compress(changelog.encode(), compresslevel=9, mtime=0)
        )
        _normalize_modes(root, {p for p, kind in elves.items() if kind == "library"})

        control = root / "DEBIAN"
        control.mkdir()
        libraries = sorted(p for p, kind in elves.items() if kind == "library")
        sonames = [_soname(p) for p in libraries]
        shlibs = sorted({s for s in sonames if s})
        if shlibs:
            (control / "shlibs").write_text(
                "".join(f"{lib} {ver} {PACKAGE} (>= {version})\n" for lib, ver in shlibs)
            )
            (control / "triggers").write_text("activate-noawait ldconfig\n")
        etc = root / "etc"
        conffiles = sorted(
            "/" + p.relative_to(root).as_posix()
            for p in etc.rglob("*")
            if p.is_file() and not p.is_symlink()
        ) if etc.is_dir() else []  # fmt: skip
        if conffiles:
            (control / "conffiles").write_text("".join(f"{p}\n" for p in conffiles))
        depends = self._shlibdeps(pkgdir, root, elves, libdir, logfile)
        sums = {}
        size = 0
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if rel.parts[0] == "DEBIAN":
                continue
            if path.is_file() and not path.is_symlink():
                sums[rel.as_posix()] = hashlib.md5(path.read_bytes()).hexdigest()
                size += (path.stat().st_size + 1023) // 1024
            else:
                size += 1
        (control / "md5sums").write_text(md5sums_text(sums))
        fields = control_fields(
            version=version,
            architecture=architecture,
            maintainer=self._maintainer(),
            installed_size=size,
            depends=depends,
            synopsis="Linux Containers userspace tools and library (patched by lxcpatch)"
            if self.state is not PatchState.UNPATCHED
            else "Linux Containers userspace tools and library (UNPATCHED control build)",
            description=description_lines(self.manifest, self.state, self.series),
        )
        (control / "control").write_text(fields.dump())
        for entry in control.iterdir():
            entry.chmod(0o644)
        control.chmod(0o755)
        _clamp_mtimes(root, epoch)
        deb = out / f"{PACKAGE}_{_noepoch(version)}_{architecture}.deb"
        self.tool(
            "package",
            ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(deb)],
            logfile=logfile,
        )
        return _package_of(deb)

    def _strip(self, elves: Mapping[Path, str], logfile: Path | None) -> None:
        libraries = sorted(str(p) for p, kind in elves.items() if kind == "library")
        programs = sorted(str(p) for p, kind in elves.items() if kind != "library")
        common = ["--remove-section=.comment", "--remove-section=.note"]
        if libraries:
            self.tool(
                "package", ["strip", *common, "--strip-unneeded", *libraries], logfile=logfile
            )
        if programs:
            self.tool("package", ["strip", *common, *programs], logfile=logfile)

    def _shlibdeps(
        self,
        pkgdir: Path,
        root: Path,
        elves: Mapping[Path, str],
        libdir: str,
        logfile: Path | None,
    ) -> str:
        dynamic = sorted(p for p, kind in elves.items() if kind != "static")
        if not dynamic:
            return ""
        # Depends follows from what the files import and from the system's shlibs and symbols
        # files (all in dpkg's database): when neither changed, the last answer still holds.
        cache = self.ws.work(self.name) / "shlibdeps.json"
        key = _imports_key(root, dynamic)
        cached = _read_json(cache) or {}
        if cached.get("key") == key:
            log.info("%s: Depends unchanged since the last build (same imports)", self.name)
            return str(cached["depends"])
        # dpkg-shlibdeps wants a debian/control to know which packages are being built.
        (pkgdir / "debian" / "control").write_text(
            f"Source: {PACKAGE}\nMaintainer: {self._maintainer()}\n\n"
            f"Package: {PACKAGE}\nArchitecture: any\n"
        )
        substvars = pkgdir / "substvars"
        argv = [
            "dpkg-shlibdeps",
            f"-O{substvars}",
            f"-x{PACKAGE}",
            f"-l{root}{libdir}",
            *[f"-e{p}" for p in dynamic],
        ]
        self.tool("package", argv, cwd=pkgdir, logfile=logfile)
        depends = ""
        for line in substvars.read_text().splitlines():
            if line.startswith("shlibs:Depends="):
                depends = line.partition("=")[2].strip()
        atomic_write_json(cache, {"key": key, "depends": depends})
        return depends

    # -- debian flavor --

    def _debian(
        self, tmp: Path, out: Path, epoch: int, previous: Mapping[str, Any] | None, key: str
    ) -> tuple[str, list[Package]]:
        from debian.changelog import Changelog

        work = self.ws.work(self.name)
        with self.step("prepare") as logfile:
            pristine = str(self.manifest["pristine"])
            with (self.tree / "debian" / "changelog").open(encoding="utf-8") as fh:
                current = Changelog(fh, max_blocks=1)
            source = str(current.package)
            base = str(current.version)
            upstream = str(current.upstream_version)
            version, _ = self._version_for(base, previous, key)
            if work.exists():
                shutil.rmtree(work)
            export = work / f"{source}-{upstream}"
            export.mkdir(parents=True)
            archive = work / "pristine.tar"
            self.tool(
                "prepare",
                ["git", "-C", str(self.tree), "archive", "--format=tar", f"-o{archive}", pristine],
                logfile=logfile,
            )
            with tarfile.open(archive) as tar:
                tar.extractall(export, filter="tar")
            archive.unlink()
            self._quilt_series(export)
            changelog_path = export / "debian" / "changelog"
            with changelog_path.open(encoding="utf-8") as fh:
                changelog = Changelog(fh)
            distribution = str(changelog.distributions or CHANGELOG_DISTRIBUTION)
            # The new entry must be newer than the last; dpkg takes SOURCE_DATE_EPOCH from it.
            epoch = max(epoch, _changelog_epoch(changelog.date) + 1)
            self.env["SOURCE_DATE_EPOCH"] = str(epoch)
            _add_changelog_block(
                changelog,
                source,
                version,
                distribution,
                self._maintainer(),
                epoch,
                changelog_changes(self.manifest, self.state, self.series, self.flavor),
            )
            changelog_path.write_text(str(changelog), encoding="utf-8")
            os.utime(changelog_path, (epoch, epoch))
        env: dict[str, str] = {}
        if self._ccache and Path("/usr/lib/ccache").is_dir():
            env["PATH"] = "/usr/lib/ccache:" + os.environ.get("PATH", "/usr/bin:/bin")
        with self.step("dpkg-buildpackage") as logfile:
            argv = ["dpkg-buildpackage", "-b", "-us", "-uc", f"-j{self.jobs}"]
            self.tool("dpkg-buildpackage", argv, cwd=export, env=env, logfile=logfile)
        packages = []
        for deb in sorted(work.glob("*.deb")):
            target = out / deb.name
            shutil.copyfile(deb, target)
            packages.append(_package_of(target))
        if not packages:
            raise BuildError(
                f"dpkg-buildpackage made no .deb for {self.name}",
                hint=f"read {self.ws.log(self.name, 'dpkg-buildpackage')}",
            )
        return base, packages

    def _quilt_series(self, export: Path) -> None:
        """Move lxcpatch's patches into debian/patches/ (after the distribution's own)."""
        if not self.series:
            return
        fmt = export / "debian" / "source" / "format"
        if not fmt.is_file() or fmt.read_text().strip() != "3.0 (quilt)":
            raise UsageError(
                f"the debian/ of {self.name} is not in format 3.0 (quilt), so lxcpatch cannot add "
                "its patches to debian/patches/series",
                hint="build it with --flavor upstream",
            )
        patches = export / "debian" / "patches"
        patches.mkdir(exist_ok=True)
        series_file = patches / "series"
        existing = series_file.read_text() if series_file.is_file() else ""
        lines = existing.splitlines()
        for entry in self.series:
            name = entry.name
            if (patches / name).exists():
                name = f"lxcpatch-{name}"
            shutil.copyfile(entry.path, patches / name)
            lines.append(name)
            log.info("%s: %s added to debian/patches/series", self.name, name)
        series_file.write_text("\n".join(lines) + "\n")

    # -- lint --

    def _lint(self, packages: Sequence[Package]) -> list[LintFinding]:
        with self.step("lint") as logfile:
            argv = ["lintian", "--tag-display-limit", "0", *[str(p.file) for p in packages]]
            proc = self.tool("lint", argv, check=False)
            text = proc.stdout + proc.stderr
            if logfile is not None:
                logfile.write_text(f"+ {' '.join(argv)}\n{text}")
            if proc.returncode not in (0, 1, 2):
                raise CommandError(argv, proc.returncode, run.tail(text), log=str(logfile))
        return parse_lintian(proc.stdout)


def _changelog_epoch(date: str | None) -> int:
    try:
        return int(email.utils.parsedate_to_datetime(date or "").timestamp())
    except (TypeError, ValueError):
        return 0


def _by_file(p: Package) -> str:
    return p.file.name


def _noepoch(version: str) -> str:
    return version.split(":", 1)[1] if ":" in version else version


def _build_number(version: str) -> int:
    match = re.search(r"(?:\+lxcpatch|~unpatched)(\d+)$", version)
    return int(match.group(1)) if match else 0


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _make_overrides(src: Path) -> list[str]:
    """Old configure scripts append -Werror to CFLAGS after ours (1.0), or -Werror=WARNING to
    AM_CFLAGS, which compile lines put before CFLAGS (4.0); put -Wno-error (-Wno-error=WARNING)
    at the end of CFLAGS."""
    makefile = src / "Makefile"
    if not makefile.is_file():
        return []
    text = makefile.read_text(errors="replace")
    match = re.search(r"^CFLAGS = (.*)$", text, re.MULTILINE)
    if not match:
        return []
    flags = match.group(1).split()
    extra = re.search(r"^AM_CFLAGS = (.*)$", text, re.MULTILINE)
    configured = flags + (extra.group(1).split() if extra else [])
    undo = [
        f"-Wno-error{f.removeprefix('-Werror')}" for f in configured if re.match(r"-Werror(=|$)", f)
    ]
    if not undo:
        return []
    return [f"CFLAGS={' '.join([*flags, *dict.fromkeys(undo)])}"]


def _elf_files(root: Path) -> dict[Path, str]:
    """Every ELF file under root: "library" (has a SONAME), "program", or "static"."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    found: dict[Path, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        with path.open("rb") as fh:
            if fh.read(4) != b"\x7fELF":
                continue
            fh.seek(0)
            try:
                elf = ELFFile(fh)
                kind = "static"
                for section in elf.iter_sections():
                    if isinstance(section, DynamicSection):
                        kind = "program"
                        if any(t.entry.d_tag == "DT_SONAME" for t in section.iter_tags()):
                            kind = "library"
            except ELFError:
                continue
        if elf["e_type"] == "ET_REL":
            continue
        found[path] = kind
    return found


DPKG_STATUS = Path("/var/lib/dpkg/status")


def _imports_key(root: Path, files: Sequence[Path]) -> str:
    """A digest of what dpkg-shlibdeps reads: each file's DT_NEEDED and undefined dynamic
    symbols with their versions, and the state of dpkg's database."""
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile
    from elftools.elf.gnuversions import GNUVerNeedSection, GNUVerSymSection
    from elftools.elf.sections import SymbolTableSection

    digest = hashlib.sha256(_sha256(DPKG_STATUS).encode() if DPKG_STATUS.is_file() else b"")
    for path in files:
        with path.open("rb") as fh:
            elf = ELFFile(fh)
            needed: list[str] = []
            versions: dict[int, str] = {}
            versym: GNUVerSymSection | None = None
            dynsym: SymbolTableSection | None = None
            for section in elf.iter_sections():
                if isinstance(section, DynamicSection):
                    needed += [str(getattr(t, "needed", "")) for t in section.iter_tags()
                               if t.entry.d_tag == "DT_NEEDED"]  # fmt: skip
                elif isinstance(section, GNUVerNeedSection):
                    for _, auxiliaries in section.iter_versions():
                        for aux in auxiliaries:
                            versions[int(aux["vna_other"])] = str(aux.name)
                elif isinstance(section, GNUVerSymSection):
                    versym = section
                elif isinstance(section, SymbolTableSection) and section.name == ".dynsym":
                    dynsym = section
            imports = []
            if dynsym is not None:
                for index, symbol in enumerate(dynsym.iter_symbols()):
                    if symbol["st_shndx"] == "SHN_UNDEF" and symbol.name:
                        ndx = versym.get_symbol(index)["ndx"] if versym is not None else 0
                        version = versions.get(ndx, "") if isinstance(ndx, int) else ""
                        imports.append(f"{symbol.name}@{version}")
        entry = [path.relative_to(root).as_posix(), needed, sorted(imports)]
        digest.update(json.dumps(entry).encode())
    return digest.hexdigest()


def _soname(path: Path) -> tuple[str, str] | None:
    """("liblxc", "1") for liblxc.so.1, as a shlibs file wants it."""
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    with path.open("rb") as fh:
        for section in ELFFile(fh).iter_sections():
            if isinstance(section, DynamicSection):
                for t in section.iter_tags():
                    if t.entry.d_tag == "DT_SONAME":
                        match = re.match(r"^(.*)\.so\.(.+)$", str(getattr(t, "soname", "")))
                        if match:
                            return match.group(1), match.group(2)
                        match = re.match(r"^(.*)-([0-9][^-]*)\.so$", str(getattr(t, "soname", "")))
                        if match:
                            return match.group(1), match.group(2)
    return None


def _check_paths(root: Path, forbidden: Sequence[Path]) -> None:
    """No RPATH/RUNPATH, and no file that names the build or staging folder."""
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    needles = [str(p).encode() for p in forbidden]
    problems = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            if any(n in os.readlink(path).encode() for n in needles):
                problems.append(f"{rel}: link into the build folder")
            continue
        if not path.is_file():
            continue
        data = path.read_bytes()
        if any(n in data for n in needles):
            problems.append(f"{rel}: names the build folder")
        if data[:4] == b"\x7fELF":
            with path.open("rb") as fh:
                for section in ELFFile(fh).iter_sections():
                    if isinstance(section, DynamicSection):
                        for t in section.iter_tags():
                            if t.entry.d_tag in ("DT_RPATH", "DT_RUNPATH"):
                                problems.append(f"{rel}: {t.entry.d_tag[3:]}")
    if problems:
        raise BuildError(
            "the installed files point into the build folder:\n  " + "\n  ".join(problems),
            hint="the tree's build hard-codes its build path (check --configure-args, e.g. "
            "--disable-rpath); lxcpatch refuses to package it",
        )


def _compress_manpages(root: Path) -> None:
    man = root / "usr" / "share" / "man"
    if not man.is_dir():
        return
    for path in sorted(man.rglob("*")):
        if path.suffix == ".gz" or not re.search(r"\.[0-9][a-z]*$", path.name):
            continue
        if path.is_symlink():
            target = os.readlink(path)
            path.unlink()
            path.with_name(path.name + ".gz").symlink_to(target + ".gz")
        elif path.is_file():
            path.with_name(path.name + ".gz").write_bytes(
                gzip.compress(path.read_bytes(), compresslevel=9, mtime=0)
            )
            path.unlink()


def _normalize_modes(root: Path, libraries: Iterable[Path]) -> None:
    """What dh_fixperms does: 755 folders and programs, 644 data and shared libraries."""
    libs = set(libraries)
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        if path.is_dir():
            path.chmod(0o755)
        elif path in libs:
            path.chmod(0o644)
        elif mode & (stat.S_ISUID | stat.S_ISGID):
            path.chmod(stat.S_IMODE(mode) & ~0o022)
        elif mode & 0o111:
            path.chmod(0o755)
        else:
            path.chmod(0o644)
    root.chmod(0o755)


def _clamp_mtimes(root: Path, epoch: int) -> None:
    for path in [*root.rglob("*"), root]:
        if os.lstat(path).st_mtime > epoch:
            os.utime(path, (epoch, epoch), follow_symlinks=False)


def _package_of(deb: Path) -> Package:
    from debian.debfile import DebFile

    with contextlib.closing(DebFile(str(deb))) as debfile:
        control = debfile.debcontrol()
    return Package(
        name=str(control["Package"]),
        version=str(control["Version"]),
        architecture=str(control["Architecture"]),
        file=deb,
        size=deb.stat().st_size,
        sha256=_sha256(deb),
    )


def _replace_dir(new: Path, final: Path) -> None:
    """Put `new` at `final`; a previous `final` is removed only once `new` is in place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    try:
        new.rename(final)
    except OSError:
        if old.exists():
            old.rename(final)
        raise
    if old.exists():
        shutil.rmtree(old)


def parse_flavor(text: str) -> Flavor:
    try:
        return Flavor(text)
    except ValueError:
        raise UsageError(
            f"unknown flavor {text!r}", hint="use --flavor auto, upstream or debian"
        ) from None


def split_args(text: str | None) -> tuple[str, ...]:
    """--configure-args "A B='c d'" → ("A", "B=c d")."""
    return tuple(shlex.split(text)) if text else ()
