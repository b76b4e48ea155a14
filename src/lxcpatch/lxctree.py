"""Is a folder an LXC source tree, and which release: version from configure.ac or meson.build.

LXC's configure.ac computes its version with m4 (`m4_define([lxc_version_major], 2)` …
`AC_INIT([lxc], [lxc_version])` since 1.0), so reading it takes a small m4 evaluator that knows
`m4_define`/`define` and `ifelse`/`m4_if`, which is all those files use.
"""

from __future__ import annotations

import enum
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from lxcpatch.errors import LxcpatchError

START_C = "src/lxc/start.c"
NOT_LXC_HINT = (
    "--source must name an LXC release: a git repository and --ref tag (e.g. lxc-2.0.11), "
    "a release tarball, a Debian source package, or a directory holding such a tree"
)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VERSION = re.compile(r"^\d+(?:\.\d+)+(?:[-.~+][0-9A-Za-z.~+-]+)?$")
_DEFINE = re.compile(r"\b(?:m4_define|define)\(")
_AC_INIT = re.compile(r"\bAC_INIT\(")
_MESON_PROJECT = re.compile(r"\bproject\s*\(")
_MESON_VERSION = re.compile(r"\bversion\s*:\s*'([^'\n]*)'")
_BUDGET = 20_000  # macro expansions per evaluation; real files need a few dozen


class BuildSystem(enum.StrEnum):
    AUTOTOOLS = "autotools"
    MESON = "meson"


@dataclass(frozen=True)
class TreeInfo:
    version: str
    build_system: BuildSystem
    debian: bool  # the tree carries a debian/ folder


class _M4Error(ValueError):
    pass


def _matching_bracket(text: str, start: int) -> int:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "[":
            depth += 1
        elif text[i] == "]":
            depth -= 1
            if depth == 0:
                return i
    raise _M4Error("unbalanced [")


def _call_args(text: str, open_paren: int) -> tuple[list[str], int]:
    """The raw arguments of the call whose '(' is at `open_paren`, and the index after its ')'."""
    args: list[str] = []
    start = open_paren + 1
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "[":
            i = _matching_bracket(text, i) + 1
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                args.append(text[start:i])
                # m4 drops the unquoted whitespace before each argument.
                return [a.lstrip() for a in args], i + 1
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(text[start:i])
            start = i + 1
        i += 1
    raise _M4Error("unterminated macro call")


def _ifelse(args: list[str]) -> str:
    while len(args) >= 3:
        if args[0] == args[1]:
            return args[2]
        if len(args) == 4:
            return args[3]
        args = args[3:]
    return ""


class _Expander:
    def __init__(self) -> None:
        self.defs: dict[str, str] = {}
        self.budget = _BUDGET

    def expand(self, text: str) -> str:
        """Expand macros in `text` as m4 would, removing one level of [quotes]."""
        out: list[str] = []
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "[":
                end = _matching_bracket(text, i)
                out.append(text[i + 1 : end])
                i = end + 1
                continue
            word = _IDENT.match(text, i)
            if word is None:
                out.append(ch)
                i += 1
                continue
            name, end = word.group(), word.end()
            if name in {"ifelse", "m4_if"} and text[end : end + 1] == "(":
                raw, after = _call_args(text, end)
                result = _ifelse([self.expand(a) for a in raw])
            elif name in self.defs:
                result, after = self.defs[name], end
            else:
                out.append(name)
                i = end
                continue
            self.budget -= 1
            if self.budget < 0:
                raise _M4Error("macro expansion does not terminate")
            # m4 rescans what a macro expands to.
            text, i = result + text[after:], 0
        return "".join(out)

    def define(self, raw_args: list[str]) -> None:
        if len(raw_args) >= 1:
            name = self.expand(raw_args[0]).strip()
            self.defs[name] = self.expand(raw_args[1]) if len(raw_args) > 1 else ""


def _without_comments(text: str) -> str:
    kept = []
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("#") or stripped.startswith("dnl"):
            continue
        kept.append(line)
    return "\n".join(kept)


def version_from_configure(text: str) -> str | None:
    """The version in configure.ac's AC_INIT (literal or computed with m4_define), else None."""
    text = _without_comments(text)
    init = _AC_INIT.search(text)
    if init is None:
        return None
    expander = _Expander()
    try:
        for define in _DEFINE.finditer(text, 0, init.start()):
            expander.define(_call_args(text, define.end() - 1)[0])
        args = _call_args(text, init.end() - 1)[0]
        if len(args) < 2:
            return None
        # AC_INIT uses its argument unquoted, so what the quotes held is expanded in turn.
        version = expander.expand(expander.expand(args[1])).strip()
    except _M4Error:
        return None
    return version if _VERSION.match(version) else None


def version_from_meson(text: str) -> str | None:
    """The literal `version:` of meson.build's project(), else None."""
    project = _MESON_PROJECT.search(text)
    if project is None:
        return None
    depth = 0
    in_string = False
    end = len(text)
    for i in range(project.end() - 1, len(text)):
        ch = text[i]
        if ch == "'" and text[i - 1] != "\\":
            in_string = not in_string
        elif not in_string and ch == "(":
            depth += 1
        elif not in_string and ch == ")":
            depth -= 1
            if depth == 0:
                end = i
                break
    found = _MESON_VERSION.search(text, project.end(), end)
    if found is None:
        return None
    version = found.group(1).strip()
    return version if _VERSION.match(version) else None


def _regular_file_inside(tree: Path, relative: str) -> bool:
    path = tree / relative
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    if stat.S_ISLNK(mode):
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(Path(os.path.realpath(tree))):
            return False
        return real.is_file()
    return stat.S_ISREG(mode)


def _read(path: Path) -> str | None:
    if not _regular_file_inside(path.parent, path.name):
        return None
    return path.read_text(encoding="utf-8", errors="replace")


def inspect_tree(tree: Path, *, what: str) -> TreeInfo:
    """Check that `tree` looks like LXC and read its version; `what` names the source in errors."""
    if not _regular_file_inside(tree, START_C):
        state = "is a link out of the tree" if (tree / START_C).is_symlink() else "is missing"
        raise LxcpatchError(
            f"{what} is not an LXC source tree: {START_C} {state}", hint=NOT_LXC_HINT
        )
    looked = []
    for name in ("configure.ac", "configure.in"):
        text = _read(tree / name)
        if text is None:
            continue
        version = version_from_configure(text)
        if version is not None:
            return TreeInfo(version, BuildSystem.AUTOTOOLS, (tree / "debian").is_dir())
        looked.append(f"{name} has no AC_INIT version lxcpatch can read")
    text = _read(tree / "meson.build")
    if text is not None:
        version = version_from_meson(text)
        if version is not None:
            return TreeInfo(version, BuildSystem.MESON, (tree / "debian").is_dir())
        looked.append("meson.build has no literal project(…, version: '…')")
    if not looked:
        looked.append("there is neither configure.ac nor meson.build")
    raise LxcpatchError(
        f"{what} is not an LXC source tree: no version found ({'; '.join(looked)})",
        hint=NOT_LXC_HINT,
    )
