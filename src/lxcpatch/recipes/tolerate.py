"""The tolerant rewrite of a bounding-set drop, shared by every recipe. Pure: bytes in, bytes out.

    if (prctl(PR_CAPBSET_DROP, CAP, …)) {      if (prctl(PR_CAPBSET_DROP, CAP, …)) {
            SYSERROR("…");               =>            int lxcpatch_errno = errno;
            goto out;
    }                                                  if (prctl(PR_CAPBSET_READ, CAP, …) == 0) {
                                                               INFO("<token>: …");
                                                       } else {
                                                               errno = lxcpatch_errno;
                                                               SYSERROR("…");
                                                               goto out;
                                                       }
                                               }

The drop itself and its error statements stay as they were (one level deeper). Only when the
drop fails and PR_CAPBSET_READ says the capability is already out of the bounding set does the
code log and carry on; a capability that is still there keeps the original error path, with the
errno the drop failed with (SYSERROR prints it, `return syserror(…)` returns it), whatever the
PR_CAPBSET_READ call did to errno. The saved errno's name is lxcpatch's own, so that it shadows
nothing (LXC builds with -Wshadow).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lxcpatch.locate import INFO_CALL, READ, Fallback, Form, Site, SiteState

FALLBACK_LINES = (b"#ifndef " + READ.encode(), b"#define " + READ.encode() + b" 23", b"#endif")
SAVED_ERRNO = "lxcpatch_errno"


def c_string(text: str) -> str:
    """`text` as a C string literal usable as a printf-style format."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


@dataclass(frozen=True)
class LogLine:
    """What the tolerated case logs: literal text, then optionally `%d` and an int expression."""

    text: str
    number: str | None = None  # a C expression, safe to evaluate again, printed with %d
    after: str = ""  # literal text after the number

    def arguments(self) -> str:
        """The logging call's arguments, as C source."""
        if self.number is None:
            return c_string(self.text)
        literal = c_string(self.text)[:-1] + "%d" + c_string(self.after)[1:]
        return f"{literal}, (int)({self.number})"


@dataclass(frozen=True)
class Edit:
    """Replace source bytes [start, end) with `text`."""

    start: int
    end: int
    text: bytes


def edits(
    source: bytes,
    sites: Sequence[Site],
    fallback: Fallback | None,
    message: Callable[[Site], LogLine],
) -> list[Edit]:
    """Rewrite every site's error path, and add the PR_CAPBSET_READ fallback #define."""
    found: list[Edit] = []
    for site in sites:
        if site.state is not SiteState.REWRITABLE:
            raise ValueError(f"site at line {site.line} is {site.state}, not rewritable")
        found.append(Edit(*_rewrite(source, site, message(site))))
    if fallback is not None:
        nl = _newline(source, fallback.insert_at - 1)
        text = nl + b"".join(line + nl for line in FALLBACK_LINES)
        found.append(Edit(fallback.insert_at, fallback.insert_at, text))
    return sorted(found, key=lambda e: e.start)


def apply(source: bytes, changes: Sequence[Edit]) -> bytes:
    """The source with `changes` (disjoint) made."""
    result = source
    for edit in sorted(changes, key=lambda e: e.start, reverse=True):
        result = result[: edit.start] + edit.text + result[edit.end :]
    return result


def _line_start(source: bytes, pos: int) -> int:
    return source.rfind(b"\n", 0, pos) + 1


def _indent(source: bytes, pos: int) -> bytes:
    start = _line_start(source, pos)
    match = re.match(rb"[ \t]*", source[start:pos])
    return match.group(0) if match else b""


def _newline(source: bytes, pos: int) -> bytes:
    """The line ending of the line holding `pos` (the file's first one if that line has none)."""
    end = source.find(b"\n", max(pos, 0))
    if end < 0:
        end = source.find(b"\n")
    return b"\r\n" if end > 0 and source[end - 1 : end] == b"\r" else b"\n"


def _unit(source: bytes, outer: bytes, inner: bytes) -> bytes:
    """One level of indentation: inner minus outer, else what the file uses most."""
    if inner.startswith(outer) and len(inner) > len(outer):
        return inner[len(outer) :]
    if b"\t" in outer:
        return b"\t"
    steps: Counter[int] = Counter()
    previous = 0
    for line in source.splitlines():
        stripped = line.lstrip(b" ")
        if not stripped.strip() or stripped.startswith((b"*", b"\t")):
            continue
        width = len(line) - len(stripped)
        if width > previous:
            steps[width - previous] += 1
        previous = width
    if not steps and source.count(b"\n\t") == 0:
        return b"    "
    if not steps:
        return b"\t"
    return b" " * steps.most_common(1)[0][0]


def _reindent(text: bytes, old: bytes, new: bytes, nl: bytes) -> bytes:
    """`text` whose first line starts at indentation `old`, moved to indentation `new`."""
    lines = text.split(b"\n")
    out = [new + lines[0]]
    for line in lines[1:]:
        out.append(new + line[len(old) :] if line.startswith(old) else line)
    return b"\n".join(out)


def _rewrite(source: bytes, site: Site, message: LogLine) -> tuple[int, int, bytes]:
    assert site.condition is not None and site.error_path is not None
    assert site.log_family is not None and site.read_call is not None
    path = site.error_path
    outer = _indent(source, site.condition.start)
    nl = _newline(source, site.condition.start)
    opening = source[path.start + 1 : source.find(b"\n", path.start) + 1]
    closing_line = _line_start(source, path.end - 1)
    compound = source[path.start : path.start + 1] == b"{"
    whole_lines = (
        compound
        and not opening.strip()
        and closing_line > path.start
        and not source[closing_line : path.end - 1].strip()
    )
    if whole_lines:
        interior = source[path.start + 1 + len(opening) : closing_line]
        first = next((ln for ln in interior.split(b"\n") if ln.strip()), b"")
        inner = re.match(rb"[ \t]*", first).group(0)  # type: ignore[union-attr]
        unit = _unit(source, outer, inner)
        level2 = outer + unit * 2
        # Lines at the block's own indentation move to two levels below the `if`; in a file
        # that mixes tabs and spaces (LXC 0.7's conf.c) that is not the same as one more unit.
        body = b"".join(
            line
            if not line.strip() or line.startswith(b"#")
            else level2 + line[len(inner) :]
            if line.startswith(inner)
            else unit + line
            for line in interior.splitlines(keepends=True)
        )
        closing = source[closing_line : path.end - 1]
    else:
        statements = site.error_statements
        first_indent = _indent(source, statements[0].start)
        unit = _unit(source, outer, first_indent if not compound else b"")
        inner = outer + unit * 2
        parts = [
            _reindent(source[s.start : s.end], _indent(source, s.start), inner, nl)
            for s in statements
        ]
        body = b"".join(part + nl for part in parts)
        closing = outer
    level1, level2 = outer + unit, outer + unit * 2
    log = f"{INFO_CALL[site.log_family]}({message.arguments()});".encode("latin-1")
    block = [
        b"{",
        level1 + f"int {SAVED_ERRNO} = errno;".encode(),
        b"",
        level1 + f"if ({site.read_call} == 0) {{".encode("latin-1"),
        level2 + log,
    ]
    if site.form is Form.ASSIGNED and site.variable:
        # The drop's result now reads as a success for whatever tests it later.
        block.append(level2 + f"{site.variable} = 0;".encode("latin-1"))
    block += [level1 + b"} else {", level2 + f"errno = {SAVED_ERRNO};".encode()]
    text = nl.join(block) + nl + body + level1 + b"}" + nl + closing + b"}"
    start = path.start
    gap = source[site.condition.end : path.start]
    if not compound and not gap.strip():
        start, text = site.condition.end, b" " + text
    return start, path.end, text
