"""The build matrix: LXC releases x container images, kept in one file (patches/matrix.toml).

`parse` turns the file's text into entries (pure); `run_matrix` builds every entry on this
machine by driving the `lxcpatch` tasks as separate processes, one workspace per entry.
"""

from __future__ import annotations

import enum
import json
import logging
import re
import shlex
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lxcpatch.errors import PrerequisiteError, UsageError
from lxcpatch.run import run
from lxcpatch.sources import name_for_ref, upstream_tag
from lxcpatch.workspace import Workspace, atomic_write_bytes, check_name

if TYPE_CHECKING:
    from rich.console import RenderableType

log = logging.getLogger(__name__)

# Like patches/series: the repository's own file, whatever the current folder.
DEFAULT_FILE = Path(__file__).resolve().parents[2] / "patches" / "matrix.toml"

_RELEASE_KEYS = {"name", "version", "source", "ref", "patch", "build"}
_IMAGE_KEYS = {"name", "container"}
_EXCLUDE_KEYS = {"release", "image", "reason"}


@dataclass(frozen=True)
class Release:
    """One LXC release to build: from upstream by `version`, or from `source` (at `ref`)."""

    name: str
    version: str | None = None
    source: str | None = None
    ref: str | None = None
    patch_args: tuple[str, ...] = ()
    build_args: tuple[str, ...] = ()

    def fetch_args(self) -> tuple[str, ...]:
        """Options for `lxcpatch fetch` that produce this release's tree under its name."""
        if self.version is not None:
            return ("--version", self.version, "--name", self.name)
        assert self.source is not None
        ref = ("--ref", self.ref) if self.ref else ()
        return ("--source", self.source, *ref, "--name", self.name)


@dataclass(frozen=True)
class Image:
    """A distribution the packages are for (`name`) and the image CI builds them in."""

    name: str
    container: str


@dataclass(frozen=True)
class Exclusion:
    release: str
    image: str
    reason: str


@dataclass(frozen=True)
class Entry:
    """One release built in one image."""

    release: Release
    image: Image

    @property
    def name(self) -> str:
        """`lxc-2.0.11-debian-bookworm`: usable as an artifact, folder and job name."""
        return f"{self.release.name}-{image_slug(self.image.name)}"

    def to_json(self) -> dict[str, str]:
        """One `include:` item; the option strings are shell words (the workflow evals them)."""
        return {
            "name": self.name,
            "release": self.release.name,
            "tree": self.release.name,
            "image": self.image.name,
            "container": self.image.container,
            "fetch": shlex.join(self.release.fetch_args()),
            "patch": shlex.join(self.release.patch_args),
            "build": shlex.join(self.release.build_args),
        }


def image_slug(image: str) -> str:
    """`debian:bookworm` → `debian-bookworm`, `ghcr.io/x/y:1` → `ghcr.io-x-y-1`."""
    return image.replace("/", "-").replace(":", "-").replace("@", "-")


@dataclass(frozen=True)
class Matrix:
    path: Path
    releases: tuple[Release, ...]
    images: tuple[Image, ...]
    exclusions: tuple[Exclusion, ...]

    def excluded(self, release: Release, image: Image) -> Exclusion | None:
        for exclusion in self.exclusions:
            if exclusion.release == release.name and exclusion.image == image.name:
                return exclusion
        return None

    def entries(self) -> list[Entry]:
        """Every release x image pair that is not excluded, release by release."""
        return [
            Entry(release, image)
            for release in self.releases
            for image in self.images
            if self.excluded(release, image) is None
        ]

    def include(self) -> dict[str, list[dict[str, str]]]:
        """The document for GitHub's `strategy.matrix: ${{ fromJSON(…) }}`: only `include`,
        because any other key would become a matrix dimension."""
        return {"include": [entry.to_json() for entry in self.entries()]}


def _fail(path: Path, where: str, problem: str, hint: str | None = None) -> UsageError:
    return UsageError(
        f"{path}: {where}: {problem}",
        hint=hint or "see the comment at the top of patches/matrix.toml for the keys",
    )


def _text(path: Path, where: str, table: Mapping[str, Any], key: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, where, f"{key} must be a non-empty string, not {value!r}")
    return value


def _words(path: Path, where: str, table: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(path, where, f'{key} must be a list of strings, e.g. {key} = ["--jobs", "2"]')
    return tuple(value)


def _tables(path: Path, document: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = document.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _fail(path, key, f"write each one as a [[{key}]] table")
    return value


def _unknown(path: Path, where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise _fail(path, where, f"unknown key {extra[0]!r} (known: {', '.join(sorted(allowed))})")


def _release(path: Path, index: int, table: Mapping[str, Any], base: Path) -> Release:
    where = f"[[release]] #{index + 1}"
    _unknown(path, where, table, _RELEASE_KEYS)
    version = _text(path, where, table, "version")
    source = _text(path, where, table, "source")
    ref = _text(path, where, table, "ref")
    if (version is None) == (source is None):
        raise _fail(path, where, "give either version (upstream) or source, not both or neither")
    if ref is not None and source is None:
        raise _fail(path, where, "ref goes with source; with version the tag follows from it")
    if source is not None and source.startswith(("./", "../")):
        source = str((base / source).resolve())
    name = _text(path, where, table, "name")
    if version is not None:
        # Checked even with a name given: every upstream release must be one fetch can fetch.
        default = _upstream_name(path, where, version)
        name = name or default
    if name is None:
        raise _fail(path, where, "a release with a source needs a name (the tree name)")
    try:
        check_name(name)
    except UsageError as exc:
        raise _fail(path, where, exc.message, exc.hint) from None
    return Release(
        name=name,
        version=version,
        source=source,
        ref=ref,
        patch_args=_words(path, where, table, "patch"),
        build_args=_words(path, where, table, "build"),
    )


def _upstream_name(path: Path, where: str, version: str) -> str:
    """The tree name of an upstream release, refused unless `fetch --version` understands it."""
    try:
        return name_for_ref(upstream_tag(version)) or f"lxc-{version}"
    except UsageError as exc:
        raise _fail(path, where, exc.message, exc.hint) from None


def parse(text: str, *, path: Path) -> Matrix:
    """Read and check a matrix file's text; `path` names it in errors and anchors ./sources."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}", hint="fix the line it names") from None
    _unknown(path, "top level", document, {"release", "image", "exclude"})
    base = path.parent
    releases = tuple(
        _release(path, i, table, base) for i, table in enumerate(_tables(path, document, "release"))
    )
    images = []
    for i, table in enumerate(_tables(path, document, "image")):
        where = f"[[image]] #{i + 1}"
        _unknown(path, where, table, _IMAGE_KEYS)
        name = _text(path, where, table, "name")
        if name is None:
            raise _fail(path, where, "name is missing (the image, e.g. debian:bookworm)")
        images.append(Image(name, _text(path, where, table, "container") or name))
    if not releases or not images:
        raise _fail(
            path, "top level", "the matrix needs at least one [[release]] and one [[image]]"
        )
    for kind, names in (
        ("release", [r.name for r in releases]),
        ("image", [image_slug(i.name) for i in images]),
    ):
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise _fail(path, kind, f"{twice[0]} is listed twice")
    exclusions = []
    for i, table in enumerate(_tables(path, document, "exclude")):
        where = f"[[exclude]] #{i + 1}"
        _unknown(path, where, table, _EXCLUDE_KEYS)
        release = _text(path, where, table, "release")
        image = _text(path, where, table, "image")
        reason = _text(path, where, table, "reason")
        if release not in {r.name for r in releases}:
            raise _fail(path, where, f"release {release!r} is not a [[release]] name")
        if image not in {i.name for i in images}:
            raise _fail(path, where, f"image {image!r} is not an [[image]] name")
        if reason is None:
            raise _fail(path, where, "reason is missing: say why this pair cannot build")
        exclusions.append(Exclusion(release, image, reason))
    matrix = Matrix(path, releases, tuple(images), tuple(exclusions))
    if not matrix.entries():
        raise _fail(path, "exclude", "every pair is excluded: nothing would be built")
    return matrix


def load(path: Path | None = None) -> Matrix:
    """Parse the matrix file (default: lxcpatch's own patches/matrix.toml)."""
    chosen = path or DEFAULT_FILE
    try:
        text = chosen.read_text(encoding="utf-8")
    except FileNotFoundError:
        error = UsageError if path is not None else PrerequisiteError
        raise error(
            f"matrix file {chosen} not found",
            hint="name one with --file (the default comes with a checkout of lxcpatch)",
        ) from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read matrix file {chosen}: {exc}") from None
    return parse(text, path=chosen.absolute())


@dataclass(frozen=True)
class MatrixReport:
    """`invoke matrix`: the entries for people, the `include:` document for CI."""

    matrix: Matrix

    def to_json(self) -> dict[str, Any]:
        return self.matrix.include()

    def human(self) -> RenderableType:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        matrix = self.matrix
        table = Table(title=f"{matrix.path}: {len(matrix.entries())} entries")
        table.add_column("release")
        for image in matrix.images:
            table.add_column(image.name)
        notes = []
        for release in matrix.releases:
            cells = []
            for image in matrix.images:
                exclusion = matrix.excluded(release, image)
                cells.append("build" if exclusion is None else f"excluded: {exclusion.reason}")
            table.add_row(release.name, *cells)
            for step, args in (("patch", release.patch_args), ("build", release.build_args)):
                if args:
                    # As the matrix file writes them: shell quoting would obscure them.
                    notes.append(f"{release.name}: {step} = {json.dumps(list(args))}")
            if release.version is None:
                notes.append(f"{release.name}: fetch {shlex.join(release.fetch_args())}")
        notes += [
            f"{image.name}: built in {image.container}"
            for image in matrix.images
            if image.container != image.name
        ]
        return Group(table, *(Text(note) for note in notes))

    @property
    def exit_code(self) -> int:
        return 0


class Outcome(enum.StrEnum):
    BUILT = "built"
    FAILED = "failed"


@dataclass(frozen=True)
class StepResult:
    step: str
    argv: tuple[str, ...]
    exit_code: int
    seconds: float
    log: Path
    message: str


@dataclass(frozen=True)
class EntryResult:
    entry: Entry
    workspace: Path
    steps: tuple[StepResult, ...]
    debs: tuple[Path, ...]
    verify: str | None

    @property
    def outcome(self) -> Outcome:
        ok = self.steps and all(s.exit_code == 0 for s in self.steps)
        return Outcome.BUILT if ok and len(self.steps) == len(STEPS) else Outcome.FAILED

    @property
    def failed_step(self) -> StepResult | None:
        return next((s for s in self.steps if s.exit_code != 0), None)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        failed = self.failed_step
        return {
            **self.entry.to_json(),
            "outcome": self.outcome.value,
            "failed_step": failed.step if failed else None,
            "message": failed.message if failed else None,
            "workspace": str(self.workspace),
            "debs": [str(d) for d in self.debs],
            "verify": self.verify,
            "seconds": round(self.seconds, 1),
            "steps": [
                {
                    "step": s.step,
                    "argv": list(s.argv),
                    "exit_code": s.exit_code,
                    "seconds": round(s.seconds, 1),
                    "log": str(s.log),
                }
                for s in self.steps
            ],
        }


@dataclass(frozen=True)
class RunReport:
    """`invoke matrix --run`: one row per entry; exit 1 when any entry failed."""

    matrix: Matrix
    results: tuple[EntryResult, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "matrix": str(self.matrix.path),
            "entries": [r.to_json() for r in self.results],
            "failed": [r.entry.name for r in self.results if r.outcome is Outcome.FAILED],
        }

    def human(self) -> RenderableType:
        from rich.table import Table

        n_failed = sum(r.outcome is Outcome.FAILED for r in self.results)
        title = f"{self.matrix.path}: {len(self.results) - n_failed} built, {n_failed} failed"
        table = Table(title=title)
        for column in ("entry", "outcome", "packages", "verify", "time", "details"):
            table.add_column(column)
        for r in self.results:
            failed = r.failed_step
            if failed is None:
                details = str(r.workspace / "debs" / r.entry.release.name)
            else:
                details = (
                    f"{failed.step} failed (exit {failed.exit_code}): {failed.message}\n"
                    f"log: {failed.log}"
                )
            table.add_row(
                r.entry.name,
                r.outcome.value,
                str(len(r.debs)),
                r.verify or "-",
                f"{r.seconds:.0f} s",
                details,
                style="red" if r.outcome is Outcome.FAILED else None,
            )
        return table

    @property
    def exit_code(self) -> int:
        return 1 if any(r.outcome is Outcome.FAILED for r in self.results) else 0


STEPS = ("fetch", "patch", "build", "verify")


def _document(stdout: str) -> dict[str, Any]:
    try:
        document = json.loads(stdout)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


# In a failed command's tail, the line that says why (a compiler or linker error).
_CAUSE = re.compile(r"\berror:|undefined reference|No such file or directory", re.IGNORECASE)


def summarize(error: str) -> str:
    """One line for the table: the error's first line, and the first compiler or linker error
    in the output it quotes, which says more than "make failed"."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if not lines:
        return "no output"
    cause = next((line for line in lines[1:] if _CAUSE.search(line)), None)
    return lines[0] if cause is None else f"{lines[0]} … {cause}"


def _message(document: Mapping[str, Any], stderr: str) -> str:
    if isinstance(document.get("error"), str):
        return summarize(str(document["error"]))
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def _step(root: Path, step: str, args: Sequence[str]) -> tuple[StepResult, dict[str, Any]]:
    """Run `lxcpatch STEP ARGS --workdir ROOT --json` as its own process."""
    argv = (sys.executable, "-m", "lxcpatch", step, *args, "--workdir", str(root), "--json")
    logfile = root / "logs" / f"matrix-{step}.log"
    started = time.monotonic()
    proc = run(argv, check=False)
    seconds = time.monotonic() - started
    atomic_write_bytes(
        logfile, f"+ {shlex.join(argv)}\n{proc.stderr}\n--- stdout\n{proc.stdout}".encode()
    )
    document = _document(proc.stdout)
    message = "" if proc.returncode == 0 else _message(document, proc.stderr)
    return StepResult(step, argv, proc.returncode, seconds, logfile, message), document


def run_entry(ws: Workspace, entry: Entry) -> EntryResult:
    """fetch, patch, build and verify one entry in its own workspace; stop at the first failure."""
    root = ws.matrix(entry.name)
    root.mkdir(parents=True, exist_ok=True)
    # Entries share the parent workspace's download cache: the same tarball is fetched once.
    ws.cache.mkdir(parents=True, exist_ok=True)
    if not (root / "cache").exists():
        (root / "cache").symlink_to(ws.cache, target_is_directory=True)
    tree = entry.release.name
    debs_dir = Workspace(root).debs(tree)
    plan: list[tuple[str, tuple[str, ...]]] = [
        # --force: a rerun replaces the entry's tree from a previous run.
        ("fetch", (*entry.release.fetch_args(), "--force")),
        ("patch", entry.release.patch_args),
        ("build", entry.release.build_args),
    ]
    steps: list[StepResult] = []
    debs: tuple[Path, ...] = ()
    verdict = None
    for step, args in plan:
        log.info("%s: %s", entry.name, step)
        result, _ = _step(root, step, args)
        steps.append(result)
        if result.exit_code != 0:
            log.warning("%s: %s failed: %s", entry.name, step, result.message)
            return EntryResult(entry, root, tuple(steps), debs, verdict)
    debs = tuple(sorted(debs_dir.glob("*.deb")))
    if not debs:
        # Without --deb, verify would look at this machine's own lxc-start instead.
        missing = StepResult("verify", (), 1, 0.0, root / "logs", f"no .deb files in {debs_dir}")
        return EntryResult(entry, root, (*steps, missing), debs, verdict)
    log.info("%s: verify (%d package files)", entry.name, len(debs))
    verify_args = [word for deb in debs for word in ("--deb", str(deb))]
    result, document = _step(root, "verify", verify_args)
    steps.append(result)
    status = document.get("status")
    verdict = status if isinstance(status, str) else None
    return EntryResult(entry, root, tuple(steps), debs, verdict)


def run_matrix(ws: Workspace, matrix: Matrix) -> RunReport:
    """Build every entry here, one after another; a failed entry does not stop the others."""
    with ws.lock("matrix"):
        results = tuple(run_entry(ws, entry) for entry in matrix.entries())
    return RunReport(matrix, results)


def matrix_report(
    ws: Workspace, path: Path | None = None, *, build: bool = False
) -> MatrixReport | RunReport:
    """The matrix in `path` (default patches/matrix.toml), or with `build` the result of
    building every entry on this machine."""
    loaded = load(path)
    return run_matrix(ws, loaded) if build else MatrixReport(loaded)
