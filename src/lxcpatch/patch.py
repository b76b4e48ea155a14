"""Apply the patch series to LXC trees: generate, validate, apply, commit, verify; check, revert.

Pure parts (building and validating a patch) take bytes and return data; the edge below them
reads the tree, runs `git apply` and `git commit` through `lxcpatch.run`, and keeps the record
that `applied()` and `revert()` read: commit trailers in a git tree, a folder beside a plain one.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import enum
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from lxcpatch.errors import LxcpatchError, UsageError
from lxcpatch.run import run
from lxcpatch.workspace import Workspace, atomic_write_bytes, atomic_write_json, check_name

if TYPE_CHECKING:
    from unidiff.patch import PatchedFile, PatchSet

    from lxcpatch.locate import LocateResult
    from lxcpatch.recipes import Recipe
    from lxcpatch.recipes.tolerate import Edit
    from lxcpatch.series import Entry, Series

log = logging.getLogger(__name__)

AUTHOR = "lxcpatch <lxcpatch@localhost>"
GIT_IDENTITY = ["-c", "user.name=lxcpatch", "-c", "user.email=lxcpatch@localhost"]
TRAILERS = ("Lxcpatch-Patch", "Lxcpatch-Recipe", "Lxcpatch-Sha256", "Lxcpatch-Path")


class Status(enum.StrEnum):
    PATCHED = "patched"
    ALREADY_PATCHED = "already-patched"
    NOT_NEEDED = "not-needed"
    REFUSED = "refused"
    FAILED = "failed"


OK = {Status.PATCHED, Status.ALREADY_PATCHED, Status.NOT_NEEDED}


@dataclass(frozen=True)
class Skipped:
    """A drop a recipe left alone (and will leave alone on every run), and why."""

    file: str
    line: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "reason": self.reason}


@dataclass(frozen=True)
class EntryResult:
    recipe: str | None  # the series entry ("@cap-sys-boot" or a patch path); None: the tree
    status: Status
    reason: str
    file: str | None = None
    line: int | None = None
    patch: Path | None = None
    diff: str | None = None  # --check: the diff that would be applied
    skipped: tuple[Skipped, ...] = ()  # drops the recipe left alone (recipes with `partial`)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "recipe": self.recipe,
            "status": str(self.status),
            "file": self.file,
            "line": self.line,
            "reason": self.reason,
            "patch": str(self.patch) if self.patch else None,
            "skipped": [s.to_json() for s in self.skipped],
        }
        if self.diff is not None:
            document["diff"] = self.diff
        return document


@dataclass(frozen=True)
class TreeResult:
    tree: Path
    results: tuple[EntryResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.status in OK for r in self.results)

    @property
    def outcome(self) -> str:
        """`complete`: every entry succeeded and no drop was left alone; `partial`: every entry
        succeeded but some drops were left alone (named in `skipped`); `failed` otherwise."""
        if not self.ok:
            return "failed"
        return "partial" if any(r.skipped for r in self.results) else "complete"


@dataclass(frozen=True)
class PatchReport:
    """`patch` and `patch --check`: one result per series entry per tree."""

    trees: tuple[TreeResult, ...]
    check: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "trees": [
                {
                    "tree": str(t.tree),
                    "outcome": t.outcome,
                    "results": [r.to_json() for r in t.results],
                }
                for t in self.trees
            ]
        }

    def human(self) -> str:
        lines: list[str] = []
        for tree in self.trees:
            lines.append(f"{tree.tree}:")
            for r in tree.results:
                where = f" ({r.file}:{r.line})" if r.file and r.line else ""
                what = "would be patched" if self.check and r.status is Status.PATCHED else r.status
                lines.append(f"  {r.recipe or 'tree'}: {what}{where}: {r.reason}")
                if r.patch:
                    lines.append(f"    patch: {r.patch}")
                lines += [f"    left alone: {s.file}:{s.line}: {s.reason}" for s in r.skipped]
            if tree.outcome == "partial":
                lines.append("  partial: the drops left alone above still fail without CAP_SETPCAP")
        diffs = [r.diff for t in self.trees for r in t.results if r.diff]
        return "\n".join([*diffs, *lines]) if diffs else "\n".join(lines)

    @property
    def exit_code(self) -> int:
        return 0 if all(t.ok for t in self.trees) else 1


@dataclass(frozen=True)
class AppliedPatch:
    name: str  # "0001-cap-sys-boot.patch"
    recipe: str  # "@cap-sys-boot" or the series entry of a static patch
    path: Path  # the patch file
    sha256: str
    description: str
    commit: str | None = None  # git trees: the commit that applied it


@dataclass(frozen=True)
class StatusReport:
    applied: tuple[tuple[Path, tuple[AppliedPatch, ...]], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "trees": [
                {
                    "tree": str(tree),
                    "applied": [
                        {
                            "name": p.name,
                            "recipe": p.recipe,
                            "path": str(p.path),
                            "sha256": p.sha256,
                            "description": p.description,
                            "commit": p.commit,
                        }
                        for p in patches
                    ],
                }
                for tree, patches in self.applied
            ]
        }

    def human(self) -> str:
        lines = []
        for tree, patches in self.applied:
            lines.append(f"{tree}: {len(patches) or 'no'} patch(es) applied by lxcpatch")
            lines += [f"  {p.name} ({p.recipe}) sha256 {p.sha256[:16]}…" for p in patches]
        return "\n".join(lines)

    @property
    def exit_code(self) -> int:
        return 0


@dataclass(frozen=True)
class RevertReport:
    reverted: tuple[tuple[Path, tuple[AppliedPatch, ...]], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "trees": [
                {"tree": str(tree), "reverted": [p.name for p in patches]}
                for tree, patches in self.reverted
            ]
        }

    def human(self) -> str:
        return "\n".join(
            f"{tree}: reverted {', '.join(p.name for p in patches)}"
            if patches
            else f"{tree}: nothing to revert"
            for tree, patches in self.reverted
        )

    @property
    def exit_code(self) -> int:
        return 0


@dataclass(frozen=True)
class PatchRequest:
    trees: tuple[str, ...] = ()  # folders, or names of trees in the workspace
    series: Path | None = None
    check: bool = False
    revert: bool = False
    status: bool = False


# --- pure: building and validating patches ------------------------------------------------


def release_date() -> dt.date:
    """Today (UTC), or SOURCE_DATE_EPOCH's day for reproducible patches."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        return dt.datetime.fromtimestamp(int(epoch), dt.UTC).date()
    return dt.datetime.now(dt.UTC).date()


def dep3_header(summary: str, explanation: str, date: dt.date) -> bytes:
    body = "".join(f" {line}\n" if line.strip() else " .\n" for line in explanation.splitlines())
    return (
        f"Description: {summary}\n{body}"
        f"Author: {AUTHOR}\n"
        "Forwarded: not-needed\n"
        f"Last-Update: {date.isoformat()}\n"
        "---\n"
    ).encode()


CONTEXT = 3


def split_lines(data: bytes) -> list[bytes]:
    """Lines as git and diff see them: ended by LF only (a CR stays part of its line)."""
    parts = data.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    return [*lines, parts[-1]] if parts[-1] else lines


def _range(start: int, length: int) -> str:
    """A hunk range as diff writes it (1-based; an empty range names the line before it)."""
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def unified_diff(file: str, old: bytes, changes: Sequence[Edit]) -> bytes:
    """The unified diff (a/ b/ prefixes, 3 lines of context) of `changes` to `old`.

    Built from the edits themselves rather than by comparing whole files: the rewrite knows
    what it changed, and a 2000-line file would otherwise be compared line by line.
    Bytes stay bytes: CRLF endings and any encoding pass through.
    """
    lines = split_lines(old)
    starts = list(itertools.accumulate(map(len, lines), initial=0))

    def line_of(offset: int) -> int:
        if offset == len(old) and old and not old.endswith(b"\n"):
            return len(lines) - 1  # the unterminated last line
        return bisect.bisect_right(starts, offset) - 1

    # Old lines [a, b) and the edits inside them; edits sharing a line form one span.
    spans: list[tuple[int, int, list[Edit]]] = []
    for edit in sorted(changes, key=lambda e: e.start):
        a = line_of(edit.start)
        if edit.start == edit.end and edit.start == starts[a]:
            b = a  # a pure insertion before line a
        else:
            b = max(a + 1, bisect.bisect_left(starts, edit.end))
        if spans and a < spans[-1][1]:
            first, end, group = spans[-1]
            spans[-1] = (first, max(end, b), [*group, edit])
        else:
            spans.append((a, b, [edit]))
    blocks: list[tuple[int, int, list[bytes]]] = []  # old lines [a, b) become new lines
    for a, b, group in spans:
        pieces = [old[starts[a] : group[0].start]]
        for edit, following in zip(group, [*group[1:], None], strict=True):
            pieces += [edit.text, old[edit.end : following.start if following else starts[b]]]
        removed, added = lines[a:b], split_lines(b"".join(pieces))
        while removed and added and removed[0] == added[0]:
            removed, added, a = removed[1:], added[1:], a + 1
        while removed and added and removed[-1] == added[-1]:
            removed, added = removed[:-1], added[:-1]
        if removed or added:
            blocks.append((a, a + len(removed), added))
    out = [f"--- a/{file}\n+++ b/{file}\n".encode()]
    shift, index = 0, 0
    while index < len(blocks):
        hunk = [blocks[index]]
        while index + 1 < len(blocks) and blocks[index + 1][0] - hunk[-1][1] <= 2 * CONTEXT:
            index += 1
            hunk.append(blocks[index])
        index += 1
        first, last = max(hunk[0][0] - CONTEXT, 0), min(hunk[-1][1] + CONTEXT, len(lines))
        body: list[bytes] = []
        cursor, growth = first, 0
        for a, b, added in hunk:
            body += [b" " + line for line in lines[cursor:a]]
            body += [b"-" + line for line in lines[a:b]]
            body += [b"+" + line for line in added]
            cursor, growth = b, growth + len(added) - (b - a)
        body += [b" " + line for line in lines[cursor:last]]
        old_len = last - first
        header = f"@@ -{_range(first, old_len)} +{_range(first + shift, old_len + growth)} @@\n"
        out.append(header.encode())
        out += [
            ln if ln.endswith(b"\n") else ln + b"\n\\ No newline at end of file\n" for ln in body
        ]
        shift += growth
    return b"".join(out)


def make_patch(
    recipe: Recipe, changes: Sequence[tuple[str, bytes, Sequence[Edit]]], date: dt.date
) -> bytes:
    """The DEP-3 header and the diff of each (file, old bytes, edits)."""
    header = dep3_header(recipe.summary, recipe.explanation, date)
    return header + b"".join(unified_diff(file, old, edits) for file, old, edits in changes)


def regions(found: LocateResult) -> list[tuple[int, int]]:
    """The lines a recipe's patch may change: the located statements and the fallback #define."""
    spans = [(s.statement.line, s.statement.end_line) for s in found.sites if s.statement]
    if found.read_fallback is not None:
        spans.append((found.read_fallback.line, found.read_fallback.end_line + 1))
    return spans


def apply_hunks(old: bytes, patched: PatchedFile) -> bytes:
    """Apply one file's hunks exactly where they say (no offset, no fuzz), or raise."""
    lines = split_lines(old)
    out: list[bytes] = []
    cursor = 0
    for number, hunk in enumerate(patched, start=1):
        start = hunk.source_start - 1 if hunk.source_length else hunk.source_start
        before: list[bytes] = []
        after: list[bytes] = []
        previous = ""
        for ln in hunk:
            if ln.line_type == "\\":  # "\ No newline at end of file" after the last line
                for side, kinds in ((before, " -"), (after, " +")):
                    if previous in kinds and side:
                        side[-1] = side[-1].removesuffix(b"\n")
                continue
            previous = ln.line_type
            value = ln.value.encode("latin-1")  # parse_patch decoded the patch as latin-1
            if ln.is_context or ln.is_removed:
                before.append(value)
            if ln.is_context or ln.is_added:
                after.append(value)
        if start < cursor or lines[start : start + len(before)] != before:
            raise LxcpatchError(f"hunk {number} does not match the file at line {start + 1}")
        out += lines[cursor:start] + after
        cursor = start + len(before)
    out += lines[cursor:]
    return b"".join(out)


def parse_patch(data: bytes, *, name: str) -> PatchSet:
    """Parse a unified diff with unidiff, checking every hunk's line counts."""
    from unidiff.errors import UnidiffParseError
    from unidiff.patch import PatchSet

    try:
        # latin-1 maps bytes to characters one to one: any file encoding survives.
        patchset = PatchSet.from_string(data.decode("latin-1"))
    except UnidiffParseError as exc:
        raise LxcpatchError(f"{name} is not a valid unified diff: {exc}") from exc
    if not len(patchset):
        raise LxcpatchError(f"{name} contains no diff", hint="a patch needs ---/+++/@@ lines")
    for patched in patchset:
        for number, hunk in enumerate(patched, start=1):
            old = sum(1 for ln in hunk if ln.is_context or ln.is_removed)
            new = sum(1 for ln in hunk if ln.is_context or ln.is_added)
            if (old, new) != (hunk.source_length, hunk.target_length):
                raise LxcpatchError(
                    f"{name}: hunk {number} of {patched.path} declares "
                    f"-{hunk.source_length} +{hunk.target_length} lines but holds -{old} +{new}"
                )
    return patchset


def validate_recipe_patch(
    data: bytes, *, name: str, allowed: Mapping[str, Sequence[tuple[int, int]]]
) -> PatchSet:
    """Exactly the files in `allowed`, each modified only inside its line ranges (1-based,
    inclusive), hunk counts consistent."""
    patchset = parse_patch(data, name=name)
    patched_files = [(f.source_file, f.target_file) for f in patchset]
    expected = [(f"a/{file}", f"b/{file}") for file in allowed]
    if patched_files != expected or not all(f.is_modified_file for f in patchset):
        raise LxcpatchError(
            f"{name}: patches {', '.join(f.path for f in patchset) or 'nothing'}; "
            f"expected modifications of {', '.join(allowed)}"
        )
    for patched, spans in zip(patchset, allowed.values(), strict=True):

        def inside(line: int, spans: Sequence[tuple[int, int]] = spans) -> bool:
            return any(start <= line <= end for start, end in spans)

        for number, hunk in enumerate(patched, start=1):
            before = hunk.source_start - 1  # the old line after which added lines go
            for ln in hunk:
                if ln.is_removed and not inside(ln.source_line_no or 0):
                    raise LxcpatchError(
                        f"{name}: hunk {number} removes line {ln.source_line_no} of "
                        f"{patched.path}, outside the located region"
                    )
                if ln.is_added and not (inside(before) or inside(before + 1)):
                    raise LxcpatchError(
                        f"{name}: hunk {number} adds a line after line {before} of "
                        f"{patched.path}, outside the located region"
                    )
                if ln.source_line_no is not None:
                    before = ln.source_line_no
    return patchset


def first_mismatch(patchset: PatchSet, read: Any, strip: int) -> str | None:
    """Where a patch stops matching the files: file, hunk and first differing line."""
    for patched in patchset:
        if patched.is_added_file:
            continue
        path = _strip(patched.source_file, strip)
        data = read(path)
        if data is None:
            return f"{path}: the file does not exist"
        lines = [line.decode("latin-1") for line in split_lines(data)]
        for number, hunk in enumerate(patched, start=1):
            expected = [ln.value for ln in hunk if ln.is_context or ln.is_removed]
            start = max(hunk.source_start - 1, 0)
            for offset, want in enumerate(expected):
                have = lines[start + offset] if start + offset < len(lines) else None
                if have != want:
                    return (
                        f"{path}: hunk {number} (@@ -{hunk.source_start},{hunk.source_length} "
                        f"+{hunk.target_start},{hunk.target_length} @@) differs at line "
                        f"{start + offset + 1}: expected {want.rstrip(chr(10))!r}, found "
                        + (repr(have.rstrip("\n")) if have is not None else "the end of the file")
                    )
    return None


def _strip(path: str, strip: int) -> str:
    parts = PurePosixPath(path).parts
    return str(PurePosixPath(*parts[strip:])) if len(parts) > strip else path


def touched_files(patchset: PatchSet, strip: int) -> list[str]:
    names: list[str] = []
    for patched in patchset:
        for raw in (patched.source_file, patched.target_file):
            if raw == "/dev/null":
                continue
            name = _strip(raw, strip)
            pure = PurePosixPath(name)
            if pure.is_absolute() or ".." in pure.parts:
                raise LxcpatchError(f"the patch names {raw}, outside the tree")
            if name not in names:
                names.append(name)
    return names


def slug(spec: str) -> str:
    """A patch-file stem from a series entry: `@cap-sys-boot`, `0003-fix-foo.patch` -> fix-foo."""
    stem = PurePosixPath(spec.lstrip("@")).name
    stem = re.sub(r"\.(patch|diff)$", "", stem)
    stem = re.sub(r"^\d{4}-", "", stem)
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", stem).strip("-") or "patch"


# --- the edge: trees, files, git ----------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    path: Path
    name: str

    @property
    def git(self) -> bool:
        return (self.path / ".git").exists()

    @property
    def record(self) -> Path:
        """lxcpatch's own record for a tree that is not a git repository: beside the tree."""
        return self.path.parent / f".{self.path.name}.lxcpatch"


def _git(tree: Tree, *args: str, check: bool = True, input: str | None = None) -> Any:
    env = {"GIT_CEILING_DIRECTORIES": str(tree.path.parent)}
    return run(["git", *GIT_IDENTITY, *args], cwd=tree.path, env=env, check=check, input=input)


def resolve_trees(ws: Workspace, specs: Sequence[str]) -> list[Tree]:
    """--tree values (folders, or names of fetched trees); default: the current tree."""
    if not specs:
        name = ws.current_tree()
        return [Tree(ws.tree(name), name)]
    trees: list[Tree] = []
    for spec in specs:
        candidate = Path(spec).expanduser()
        if candidate.is_dir():
            path = candidate.absolute()
        elif "/" not in spec and ws.tree(check_name(spec)).is_dir():
            path = ws.tree(spec)
        else:
            raise UsageError(
                f"tree {spec} not found (neither a folder nor a tree in {ws.src})",
                hint="fetch it first (`lxcpatch fetch`) or give the path of an LXC source tree",
            )
        try:
            name = check_name(path.name)
        except UsageError as exc:
            raise UsageError(
                f"tree folder {path} has a name lxcpatch cannot use for build/patches/<name>/",
                hint=exc.hint,
            ) from exc
        if any(t.name == name for t in trees):
            raise UsageError(
                f"two trees are named {name}; their patches would share build/patches/{name}/",
                hint="give every tree folder its own name",
            )
        trees.append(Tree(path, name))
    return trees


class _Files:
    """The tree's files as the series sees them: what is on disk plus the changes so far."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.changed: dict[str, bytes | None] = {}

    def read(self, name: str) -> bytes | None:
        if name in self.changed:
            return self.changed[name]
        path = self.root / name
        return path.read_bytes() if path.is_file() else None


def _scratch_apply(
    files: _Files, data: bytes, names: Sequence[str], strip: int, *, reverse: bool = False
) -> dict[str, bytes | None] | str:
    """`git apply` (no fuzz) on copies of `names`: their new contents, or git's complaint."""
    with tempfile.TemporaryDirectory(prefix="lxcpatch-") as tmp:
        root = Path(tmp) / "tree"
        root.mkdir()
        for name in names:
            content = files.read(name)
            if content is not None:
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(content)
        patch_file = Path(tmp) / "change.patch"
        patch_file.write_bytes(data)
        argv = ["git", "apply", f"-p{strip}", "--whitespace=nowarn"]
        proc = run(
            [*argv, *(["--reverse"] if reverse else []), str(patch_file)],
            cwd=root,
            env={"GIT_CEILING_DIRECTORIES": tmp},
            check=False,
        )
        if proc.returncode != 0:
            return (proc.stderr or proc.stdout).strip()
        return {
            name: (root / name).read_bytes() if (root / name).is_file() else None for name in names
        }


@dataclass(frozen=True)
class _Step:
    """One series entry that changes the tree."""

    entry: Entry
    recipe: Recipe | None
    slug: str
    data: bytes
    description: str  # summary line
    explanation: str
    names: tuple[str, ...]
    after: dict[str, bytes | None] = field(hash=False, compare=False)
    file: str | None = None
    line: int | None = None
    reason: str = ""


def _plan_recipe(
    tree: Tree, files: _Files, entry: Entry, date: dt.date
) -> tuple[EntryResult, _Step | None]:
    from lxcpatch import recipes
    from lxcpatch.locate import Outcome, SiteState
    from lxcpatch.recipes.tolerate import apply as tolerate_apply

    recipe = recipes.get(entry.spec)
    targets = recipe.targets(tree.path)
    if not targets:
        why = f"{tree.path} has no src/lxc/start.c: is it an LXC source tree?"
        return EntryResult(entry.spec, Status.REFUSED, why), None
    located: list[tuple[str, bytes, LocateResult]] = []
    for file in targets:
        source = files.read(file)
        assert source is not None
        located.append((file, source, recipe.locate(source, file)))

    skipped = tuple(
        Skipped(found.file, site.line, site.reason)
        for _, _, found in located
        for site in found.skipped
    )
    if recipe.partial:
        # Files whose every drop is unrecognized are left alone like single drops are.
        skipped += tuple(
            Skipped(found.file, site.line, site.reason)
            for _, _, found in located
            if found.outcome is Outcome.UNRECOGNIZED
            for site in found.sites
            if site.state is SiteState.UNRECOGNIZED
        )
        skipped = tuple(sorted(skipped, key=lambda s: (s.file, s.line)))

    def result(status: Status, reason: str, found: LocateResult) -> EntryResult:
        if skipped and status in OK:
            reason += f"; {len(skipped)} drop(s) left alone: " + "; ".join(
                f"{s.file}:{s.line}" for s in skipped
            )
        return EntryResult(
            entry.spec, status, reason, file=found.file, line=found.line, skipped=skipped
        )

    blocking = {Outcome.AMBIGUOUS} if recipe.partial else {Outcome.AMBIGUOUS, Outcome.UNRECOGNIZED}
    refused = [f for _, _, f in located if f.outcome in blocking]
    if refused:
        first = refused[0]
        why = f"{first.outcome}: {first.reason}; nothing was changed"
        return result(Status.REFUSED, why, first), None
    todo = [(file, source, f) for file, source, f in located if f.outcome is Outcome.FOUND]
    if not todo:
        done = [f for _, _, f in located if f.outcome is Outcome.ALREADY_PATCHED]
        if done:
            return result(Status.ALREADY_PATCHED, _summary(done, "already tolerant"), done[0]), None
        unrecognized = [f for _, _, f in located if f.outcome is Outcome.UNRECOGNIZED]
        if unrecognized:
            first = unrecognized[0]
            why = f"unrecognized: no drop it can rewrite, {len(skipped)} it cannot; nothing changed"
            return result(Status.REFUSED, why, first), None
        return result(Status.NOT_NEEDED, _not_needed(located), located[0][2]), None
    name = f"{recipe.slug}.patch"
    changes = [(file, source, recipe.edits(found, source)) for file, source, found in todo]
    after: dict[str, bytes | None] = {
        file: tolerate_apply(source, edits) for file, source, edits in changes
    }
    data = make_patch(recipe, changes, date)
    first = todo[0][2]
    reason = _summary([f for _, _, f in todo], "rewritten")
    try:
        allowed = {file: regions(found) for file, _, found in todo}
        patchset = validate_recipe_patch(data, name=name, allowed=allowed)
        for patched, (file, source, _) in zip(patchset, todo, strict=True):
            if apply_hunks(source, patched) != after[file]:
                raise LxcpatchError(f"{name} does not turn {file} into the rewrite")
    except LxcpatchError as exc:
        return result(Status.FAILED, f"the generated patch: {exc.message}", first), None
    step = _Step(
        entry, recipe, recipe.slug, data, recipe.summary, recipe.explanation, tuple(after),
        after, first.file, first.line, reason,
    )  # fmt: skip
    return result(Status.PATCHED, reason, first), step


def _summary(found: Sequence[LocateResult], what: str) -> str:
    """One file's reason, or how many drops in how many files."""
    if len(found) == 1 and len(found[0].sites) == 1:
        return found[0].reason
    where = ", ".join(f"{f.file} ({len(f.sites)})" for f in found)
    return f"{sum(len(f.sites) for f in found)} drop(s) {what}: {where}"


def _not_needed(located: Sequence[tuple[str, bytes, LocateResult]]) -> str:
    """Why a recipe has nothing to do: its one file's reason, or each file that has drops."""
    if len(located) == 1:
        return located[0][2].reason
    busy = [f.reason for _, _, f in located if f.others]
    return f"none of the {len(located)} files it reads has a drop it rewrites" + (
        f" ({'; '.join(busy)})" if busy else ""
    )


def _plan_static(files: _Files, entry: Entry) -> tuple[EntryResult, _Step | None]:
    assert entry.path is not None
    data = entry.path.read_bytes()
    try:
        patchset = parse_patch(data, name=entry.spec)
        names = touched_files(patchset, entry.strip)
    except LxcpatchError as exc:
        return EntryResult(entry.spec, Status.FAILED, exc.message), None
    first = names[0] if names else None
    after = _scratch_apply(files, data, names, entry.strip)
    if isinstance(after, str):
        if not isinstance(_scratch_apply(files, data, names, entry.strip, reverse=True), str):
            return EntryResult(
                entry.spec, Status.ALREADY_PATCHED, "the patch is already applied", file=first
            ), None
        where = first_mismatch(patchset, files.read, entry.strip)
        return EntryResult(
            entry.spec,
            Status.FAILED,
            f"{entry.spec} does not apply without fuzz: {where or after}",
            file=first,
        ), None
    summary, explanation = _description(data, entry.spec)
    step = _Step(
        entry, None, slug(entry.spec), data, summary, explanation, tuple(names), after, first,
        None, "applies without fuzz",
    )  # fmt: skip
    return EntryResult(entry.spec, Status.PATCHED, step.reason, file=first), step


def _description(data: bytes, spec: str) -> tuple[str, str]:
    """A static patch's DEP-3 Description (or Subject), else its name."""
    head = data.split(b"\n--- ", 1)[0].decode("utf-8", "replace")
    match = re.search(r"^(?:Description|Subject):[ \t]*(.*)((?:\n[ \t].*)*)", head, re.M)
    if not match:
        return f"Apply {spec}", ""
    rest = "\n".join(
        "" if line.strip() == "." else line.strip() for line in match.group(2).splitlines()
    )
    return match.group(1).strip(), rest.strip()


def _commit_message(step: _Step, name: str, path: Path, sha: str) -> str:
    recipe = step.recipe.name if step.recipe else step.entry.spec
    body = f"\n\n{step.explanation}" if step.explanation else ""
    trailers = dict(zip(TRAILERS, (name, recipe, sha, str(path)), strict=True))
    return f"{step.description}{body}\n\n" + "".join(f"{k}: {v}\n" for k, v in trailers.items())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git_clean(tree: Tree, names: Sequence[str]) -> str | None:
    """Why lxcpatch may not commit in this repository now, or None."""
    from git import Repo
    from git.exc import GitError

    try:
        repo = Repo(tree.path)
        repo.head.commit  # noqa: B018 - raises on a repository without commits
    except (GitError, ValueError) as exc:
        return f"{tree.path} is a git repository without a usable HEAD ({exc})"
    if repo.is_dirty(index=True, working_tree=False):
        return f"{tree.path} has staged changes; commit or unstage them first"
    dirty = [n for n in names if repo.is_dirty(index=False, working_tree=True, path=n)]
    if dirty:
        return f"{tree.path} has uncommitted changes to {', '.join(dirty)}; commit or stash them"
    return None


def _git_head(tree: Tree) -> str:
    return str(_git(tree, "rev-parse", "HEAD").stdout.strip())


def _git_reset(tree: Tree, target: str, names: Sequence[str]) -> None:
    """Put `names` and HEAD back to `target`, leaving every other local change alone."""
    listed = _git(tree, "ls-tree", "-r", "--name-only", target, "--", *names).stdout.split("\n")
    present = [n for n in names if n in listed]
    if present:
        _git(tree, "checkout", "-q", target, "--", *present)
    for name in names:
        if name not in present:
            _git(tree, "rm", "-q", "-f", "--cached", "--ignore-unmatch", "--", name)
            (tree.path / name).unlink(missing_ok=True)
    _git(tree, "reset", "-q", "--soft", target)


def _load_record(tree: Tree) -> dict[str, Any]:
    try:
        record: dict[str, Any] = json.loads((tree.record / "record.json").read_text())
    except FileNotFoundError:
        return {"tree": str(tree.path), "patches": [], "pristine": {}}
    return record


def _save_pristine(tree: Tree, record: dict[str, Any], names: Sequence[str]) -> None:
    for name in names:
        if name in record["pristine"]:
            continue
        source = tree.path / name
        record["pristine"][name] = source.is_file()
        if source.is_file():
            atomic_write_bytes(tree.record / "pristine" / name, source.read_bytes())


def _restore_pristine(tree: Tree, record: dict[str, Any], names: Sequence[str]) -> None:
    for name in names:
        target = tree.path / name
        if record["pristine"].get(name):
            atomic_write_bytes(target, (tree.record / "pristine" / name).read_bytes())
        else:
            target.unlink(missing_ok=True)


def applied(tree: Path) -> list[AppliedPatch]:
    """The patches lxcpatch applied to `tree`, oldest first."""
    spot = Tree(tree.absolute(), tree.name)
    if not spot.git:
        return [
            AppliedPatch(p["name"], p["recipe"], Path(p["path"]), p["sha256"], p["description"])
            for p in _load_record(spot)["patches"]
        ]
    from git import Repo

    repo = Repo(spot.path)
    if not repo.head.is_valid():
        return []
    patches = []
    for commit in repo.iter_commits("HEAD", grep=f"^{TRAILERS[1]}: "):
        trailers = {k: v[-1] for k, v in commit.trailers_dict.items() if v}
        if not all(k in trailers for k in TRAILERS):
            continue
        message = str(commit.message)
        patches.append(
            AppliedPatch(
                trailers["Lxcpatch-Patch"],
                trailers["Lxcpatch-Recipe"],
                Path(trailers["Lxcpatch-Path"]),
                trailers["Lxcpatch-Sha256"],
                message.split("\n", 1)[0],
                commit.hexsha,
            )
        )
    return patches[::-1]


def _changed_files(tree: Tree, base: str) -> list[str]:
    out = _git(tree, "diff", "--name-only", "-z", base, "HEAD").stdout
    return [n for n in out.split("\0") if n]


def revert(trees: Sequence[Path]) -> RevertReport:
    """Undo every patch lxcpatch applied to each tree, restoring the bytes it found."""
    done: list[tuple[Path, tuple[AppliedPatch, ...]]] = []
    for path in trees:
        tree = Tree(path.absolute(), path.name)
        patches = applied(tree.path)
        if not patches:
            done.append((tree.path, ()))
            continue
        if tree.git:
            ours = {p.commit for p in patches}
            stack = _git(tree, "rev-list", "HEAD").stdout.split()
            top = stack[: len(ours)]
            if set(top) != ours:
                raise LxcpatchError(
                    f"{tree.path}: commits were made on top of lxcpatch's patches, so "
                    "reverting them would lose those commits",
                    hint="revert lxcpatch's commits yourself (git revert), or reset the tree",
                )
            base = stack[len(ours)] if len(stack) > len(ours) else None
            if base is None:
                raise LxcpatchError(f"{tree.path}: lxcpatch's commits have no parent to go back to")
            names = _changed_files(tree, base)
            reason = _git_clean(tree, names)
            if reason:
                raise LxcpatchError(f"cannot revert: {reason}")
            _git_reset(tree, base, names)
        else:
            record = _load_record(tree)
            _restore_pristine(tree, record, list(record["pristine"]))
            shutil.rmtree(tree.record)
        log.info("%s: reverted %s", tree.path, ", ".join(p.name for p in patches))
        done.append((tree.path, tuple(patches)))
    return RevertReport(tuple(done))


def status(trees: Sequence[Path]) -> StatusReport:
    return StatusReport(tuple((t, tuple(applied(t))) for t in trees))


@contextlib.contextmanager
def _rollback_on_error(tree: Tree, names: Sequence[str], written: list[Path]) -> Iterator[None]:
    """Return the tree to where the series started if anything below fails."""
    head = _git_head(tree) if tree.git else None
    record_text = None
    if not tree.git and (tree.record / "record.json").is_file():
        record_text = (tree.record / "record.json").read_bytes()
    before = {n: (tree.path / n).read_bytes() for n in names if (tree.path / n).is_file()}
    try:
        yield
    except BaseException:
        log.warning("%s: rolling back to where the series started", tree.path)
        if head is not None:
            _git_reset(tree, head, names)
        else:
            for name in names:
                if name in before:
                    atomic_write_bytes(tree.path / name, before[name])
                else:
                    (tree.path / name).unlink(missing_ok=True)
            if record_text is None:
                shutil.rmtree(tree.record, ignore_errors=True)
            else:
                atomic_write_bytes(tree.record / "record.json", record_text)
        for path in written:
            path.unlink(missing_ok=True)
        raise


def _apply_step(ws: Workspace, tree: Tree, step: _Step, number: int) -> Path:
    """Write the patch file, apply it with git apply, record it, verify it."""
    from lxcpatch.locate import Outcome

    name = f"{number:04d}-{step.slug}.patch"
    path = ws.patches(tree.name) / name
    atomic_write_bytes(path, step.data)
    strip = f"-p{step.entry.strip}"
    sha = _sha256(step.data)
    if tree.git:
        _git(tree, "apply", "--index", strip, "--whitespace=nowarn", str(path))
        message = _commit_message(step, name, path, sha)
        _git(tree, "-c", "commit.gpgsign=false", "commit", "-q", "--no-verify", "-F", "-",
             input=message)  # fmt: skip
    else:
        record = _load_record(tree)
        _save_pristine(tree, record, step.names)
        _git(tree, "apply", strip, "--whitespace=nowarn", str(path))
        record["patches"].append(
            {"name": name, "recipe": step.entry.spec, "path": str(path), "sha256": sha,
             "description": step.description, "files": list(step.names)}
        )  # fmt: skip
        atomic_write_json(tree.record / "record.json", record)
    # Verify: the files are what the plan said, the recipe now finds its work done, and the
    # patch reverses cleanly.
    for file, expected in step.after.items():
        actual = (tree.path / file).read_bytes() if (tree.path / file).is_file() else None
        if actual != expected:
            raise LxcpatchError(f"{tree.path / file} is not what {name} should have made it")
    if step.recipe is not None:
        for file in step.names:
            again = step.recipe.locate((tree.path / file).read_bytes(), file)
            if again.outcome is not Outcome.ALREADY_PATCHED:
                raise LxcpatchError(f"after {name}, {file} locates as {again.outcome}")
    _git(tree, "apply", "--check", "--reverse", strip, "--whitespace=nowarn", str(path))
    log.info("%s: applied %s", tree.path, name)
    return path


def patch_tree(
    ws: Workspace, tree: Tree, series: Series, *, check: bool = False, date: dt.date | None = None
) -> TreeResult:
    """Run the series on one tree: all of it or nothing."""
    date = date or release_date()
    files = _Files(tree.path)
    results: list[EntryResult] = []
    steps: list[tuple[int, _Step]] = []
    for entry in series.entries:
        if entry.is_recipe:
            result, step = _plan_recipe(tree, files, entry, date)
        else:
            result, step = _plan_static(files, entry)
        if step is not None:
            files.changed.update(step.after)
            steps.append((len(results), step))
            if check:
                diff = step.data.decode("utf-8", "replace")
                result = replace(result, diff=diff)
        results.append(result)
        if result.status not in OK:
            return _stopped(tree, results, result)
    if check or not steps:
        return TreeResult(tree.path, tuple(results))

    names = sorted({n for _, step in steps for n in step.names})
    if tree.git:
        reason = _git_clean(tree, names)
        if reason:
            return TreeResult(tree.path, (EntryResult(None, Status.REFUSED, reason),))
    number = len(applied(tree.path))
    written: list[Path] = []
    current = 0
    try:
        with _rollback_on_error(tree, names, written):
            for current, step in steps:
                number += 1
                path = _apply_step(ws, tree, step, number)
                written.append(path)
                results[current] = replace(results[current], patch=path)
    except (LxcpatchError, OSError) as exc:
        message = exc.message if isinstance(exc, LxcpatchError) else str(exc)
        results[current] = replace(results[current], status=Status.FAILED, reason=message)
        return _stopped(tree, results[: current + 1], results[current], rolled_back=True)
    return TreeResult(tree.path, tuple(results))


def _stopped(
    tree: Tree, results: list[EntryResult], culprit: EntryResult, rolled_back: bool = False
) -> TreeResult:
    """A series that stops changes nothing: earlier entries are reported as not applied."""
    why = f"not applied: {culprit.recipe} {culprit.status}, and a series is all or nothing"
    if rolled_back:
        why += " (the tree was rolled back)"
    final = [
        replace(r, status=Status.REFUSED, reason=why, patch=None)
        if r is not culprit and r.status is Status.PATCHED
        else r
        for r in results
    ]
    return TreeResult(tree.path, tuple(final))


def run_patch(ws: Workspace, request: PatchRequest) -> PatchReport | StatusReport | RevertReport:
    """The `patch` task: apply the series (or --check, --revert, --status) on every tree."""
    from lxcpatch import series as serieslib

    modes = [m for m in ("check", "revert", "status") if getattr(request, m)]
    if len(modes) > 1:
        raise UsageError(f"--{' and --'.join(modes)} exclude each other", hint="choose one of them")
    trees = resolve_trees(ws, request.trees)
    if request.status:
        return status([t.path for t in trees])
    if request.revert:
        with contextlib.ExitStack() as stack:
            for tree in trees:
                stack.enter_context(ws.lock(f"tree-{tree.name}"))
            return revert([t.path for t in trees])
    series = serieslib.load(request.series)
    results = []
    for tree in trees:
        with ws.lock(f"tree-{tree.name}"):
            results.append(patch_tree(ws, tree, series, check=request.check))
    return PatchReport(tuple(results), check=request.check)
