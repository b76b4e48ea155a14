"""The series: what `patch` applies, in order, in quilt's format.

One entry a line: a built-in recipe (`@cap-sys-boot`) or a unified diff's path relative to the
series file's folder, optionally followed by `-p0` or `-p1` (default). `#` starts a comment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lxcpatch.errors import PrerequisiteError, UsageError

# The series shipped with lxcpatch, beside the package in the source checkout.
DEFAULT_SERIES = Path(__file__).resolve().parents[2] / "patches" / "series"


@dataclass(frozen=True)
class Entry:
    spec: str  # as written in the series: "@cap-sys-boot" or "local/fix.patch"
    line: int
    path: Path | None = None  # the diff of a static entry
    strip: int = 1

    @property
    def is_recipe(self) -> bool:
        return self.spec.startswith("@")


@dataclass(frozen=True)
class Series:
    file: Path
    entries: tuple[Entry, ...]


def parse(text: str, base: Path, *, origin: str = "series") -> tuple[Entry, ...]:
    """Parse series text; static entries resolve against `base`. Checks syntax only."""
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        fields = line.split()
        spec, options = fields[0], fields[1:]
        where = f"{origin} line {number}"
        strip = 1
        for option in options:
            if option in {"-p0", "-p1"}:
                strip = int(option[2:])
            else:
                raise UsageError(
                    f"{where}: unknown option {option!r} for {spec}",
                    hint="an entry is `@recipe` or `file.patch [-p0|-p1]`",
                )
        if spec in seen:
            raise UsageError(
                f"{where}: {spec} is already listed at line {seen[spec]}",
                hint="list each recipe or patch once",
            )
        seen[spec] = number
        if spec.startswith("@"):
            if options:
                raise UsageError(f"{where}: a recipe takes no options ({' '.join(options)})")
            entries.append(Entry(spec, number))
            continue
        relative = PurePosixPath(spec)
        if relative.is_absolute() or ".." in relative.parts:
            raise UsageError(
                f"{where}: {spec} must be a path inside {base}",
                hint="put the patch under the series file's folder and name it relatively",
            )
        entries.append(Entry(spec, number, base / relative, strip))
    return tuple(entries)


def load(path: Path | None = None) -> Series:
    """Read and check a series file (default: lxcpatch's own patches/series)."""
    from lxcpatch import recipes

    file = (path or DEFAULT_SERIES).absolute()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        error = UsageError if path is not None else PrerequisiteError
        raise error(
            f"series file {file} not found",
            hint="name one with --series FILE (quilt format: one @recipe or patch per line)",
        ) from exc
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise UsageError(f"series file {file} is not a UTF-8 text file: {exc}") from exc
    entries = parse(text, file.parent, origin=str(file))
    for entry in entries:
        if entry.is_recipe:
            try:
                recipes.get(entry.spec)
            except UsageError as exc:
                raise UsageError(f"{file} line {entry.line}: {exc.message}", hint=exc.hint) from exc
        elif entry.path is None or not entry.path.is_file():
            raise UsageError(
                f"{file} line {entry.line}: patch {entry.spec} not found at {entry.path}",
                hint="static patches live beside the series file",
            )
    return Series(file, entries)
