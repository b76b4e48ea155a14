"""Locate bounding-set drops, `prctl(PR_CAPBSET_DROP, <cap>, …)`, by their C syntax.

Pure core: bytes in, data out. tree-sitter-c parses the file; comments and string literals are
their own nodes, so text that merely looks like a drop never counts, and parse errors around
preprocessor lines elsewhere in the file do not matter. One generic search (`scan`) finds every
drop and classifies it; recipes choose which drops they rewrite (`find_sites(select=…)`).
"""

from __future__ import annotations

import bisect
import enum
import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tree_sitter import Node, Parser, Query

DROP = "PR_CAPBSET_DROP"
READ = "PR_CAPBSET_READ"
START_C = "src/lxc/start.c"

# The logging call that reports a failed drop names its family; the tolerated case logs with
# the family's info-level call. `lxc_log_*` is LXC 0.5 to 0.6.x; the upper-case macros are
# 0.6.2 onwards; the lower-case error-returning macros (`return syserror(…)`) are 4.0 onwards.
_LXC_MACROS = {
    "SYSERROR", "ERROR", "FATAL", "CRIT", "ALERT", "SYSWARN", "WARN", "NOTICE", "SYSNOTICE",
    "INFO", "SYSINFO", "DEBUG", "SYSDEBUG", "TRACE", "SYSTRACE", "CMD_SYSERROR", "CMD_SYSINFO",
    "syserror", "syserror_ret", "syserror_set", "error_ret", "log_error", "log_error_errno",
    "syswarn", "syswarn_ret", "syswarn_set", "log_warn", "log_warn_errno",
}  # fmt: skip
_LXC_LOG_FUNCTIONS = {
    "lxc_log_syserror", "lxc_log_error", "lxc_log_warning", "lxc_log_info", "lxc_log_debug",
    "lxc_log_trace",
}  # fmt: skip
INFO_CALL = {"lxc_log": "lxc_log_info", "lxc": "INFO"}

# Wrappers around a capability argument that only convert it (LXC 3.0+: `prctl_arg(cap)`).
PURE_WRAPPERS = {"prctl_arg"}


class Outcome(enum.StrEnum):
    FOUND = "found"
    ALREADY_PATCHED = "already-patched"
    NOT_NEEDED = "not-needed"
    AMBIGUOUS = "ambiguous"
    UNRECOGNIZED = "unrecognized"


class SiteState(enum.StrEnum):
    REWRITABLE = "rewritable"  # a failure test with an error path the rewrite understands
    TOLERATED = "tolerated"  # the error path already asks PR_CAPBSET_READ
    UNRECOGNIZED = "unrecognized"  # a drop in a form the rewrite cannot handle safely


class Form(enum.StrEnum):
    CONDITION = "condition"  # if (prctl(PR_CAPBSET_DROP, …)) / < 0 / != 0 / == -1 / !!
    ASSIGNED = "assigned"  # ret = prctl(PR_CAPBSET_DROP, …); if (ret < 0) …


@dataclass(frozen=True)
class Span:
    """Bytes [start, end) of the source; lines are 1-based and inclusive."""

    start: int
    end: int
    line: int
    end_line: int


@dataclass(frozen=True)
class Site:
    """One `prctl(PR_CAPBSET_DROP, …)` call and what the rewrite needs to know about it."""

    state: SiteState
    reason: str
    line: int
    call: Span
    capability: str | None  # the capability expression, whitespace and comments removed
    capability_id: str | None  # its identifier once `prctl_arg(…)` / casts are peeled off
    reevaluable: bool  # evaluating the capability expression again has no side effect
    form: Form | None = None
    statement: Span | None = None  # the `if` (and the assignment before it, if any)
    condition: Span | None = None
    error_path: Span | None = None  # the `if`'s consequence: a block or one statement
    error_statements: tuple[Span, ...] = ()
    log_family: str | None = None  # "lxc" (SYSERROR, syserror, …) or "lxc_log" (lxc_log_*)
    log_call: str | None = None  # the error path's logging call, e.g. "SYSERROR"
    variable: str | None = None  # ASSIGNED form: the variable holding prctl's result
    read_call: str | None = None  # the same call asking PR_CAPBSET_READ instead


@dataclass(frozen=True)
class Fallback:
    """Where a `#define PR_CAPBSET_READ 23` fallback goes: after the PR_CAPBSET_DROP one."""

    insert_at: int
    line: int
    end_line: int


@dataclass(frozen=True)
class Scan:
    """Every bounding-set drop in one file, and what else the rewrite needs from the file."""

    sites: tuple[Site, ...]
    drop_fallback_line: int | None  # line of a `#define PR_CAPBSET_DROP` fallback
    read_fallback: Fallback | None  # None when there is no DROP fallback or READ has one


@dataclass(frozen=True)
class LocateResult:
    outcome: Outcome
    file: str
    line: int | None
    reason: str
    sites: tuple[Site, ...] = ()
    read_fallback: Fallback | None = None
    skipped: tuple[Site, ...] = ()  # partial mode: chosen drops left alone, each with its reason
    others: tuple[Site, ...] = ()  # drops in the file that `select` did not choose

    @property
    def site(self) -> Site:
        """The one site of a FOUND result."""
        if self.outcome is not Outcome.FOUND or len(self.sites) != 1:
            raise ValueError(f"{self.file}: no single site to rewrite ({self.outcome})")
        return self.sites[0]


Selector = Callable[[Site], bool]


def cap_sys_boot(site: Site) -> bool:
    """The drops of CAP_SYS_BOOT (what `@cap-sys-boot` rewrites)."""
    return site.capability_id == "CAP_SYS_BOOT"


# --- parsing ------------------------------------------------------------------------------


@functools.cache
def _parser() -> tuple[Parser, Query]:
    import tree_sitter_c
    from tree_sitter import Language, Parser, Query

    language = Language(tree_sitter_c.language())
    # One pass in C over the whole tree: the identifier wherever it is code, the fallback
    # #defines, and macro bodies that mention it.
    query = Query(
        language,
        f"""
        ((identifier) @drop (#eq? @drop "{DROP}"))
        (preproc_def name: (identifier) @define (#any-of? @define "{DROP}" "{READ}"))
        ((preproc_arg) @macro (#match? @macro "{DROP}"))
        """,
    )
    return Parser(language), query


def _captures(root: Node) -> dict[str, list[Node]]:
    from tree_sitter import QueryCursor

    _, query = _parser()
    found = QueryCursor(query).captures(root)
    return {name: sorted(nodes, key=lambda n: n.start_byte) for name, nodes in found.items()}


def _text(node: Node) -> str:
    return (node.text or b"").decode("latin-1")


def _span(node: Node) -> Span:
    return Span(node.start_byte, node.end_byte, node.start_point[0] + 1, node.end_point[0] + 1)


def _named(node: Node) -> list[Node]:
    """Named children that are not comments."""
    return [c for c in node.named_children if c.type != "comment"]


def _ancestors(node: Node) -> Iterator[Node]:
    parent = node.parent
    while parent is not None:
        yield parent
        parent = parent.parent


def _clean(node: Node) -> str:
    """An expression's text without comments, whitespace runs collapsed."""
    data = node.text or b""
    for comment in sorted(_descendants(node, "comment"), key=lambda n: -n.start_byte):
        a, b = comment.start_byte - node.start_byte, comment.end_byte - node.start_byte
        data = data[:a] + b" " + data[b:]
    text = re.sub(r"\s+", " ", data.decode("latin-1")).strip()
    return re.sub(r"\( ", "(", re.sub(r" \)", ")", text))


def _descendants(node: Node, *types: str) -> Iterator[Node]:
    for child in node.children:
        if child.type in types:
            yield child
        yield from _descendants(child, *types)


def _calls(node: Node) -> Iterator[tuple[str, Node]]:
    """(function name, call node) for every call under `node`, in source order."""
    if node.type == "call_expression":
        function = node.child_by_field_name("function")
        if function is not None and function.type == "identifier":
            yield _text(function), node
    for child in node.children:
        yield from _calls(child)


def _prctl_option(call: Node) -> str | None:
    arguments = call.child_by_field_name("arguments")
    function = call.child_by_field_name("function")
    if arguments is None or function is None or _text(function) != "prctl":
        return None
    args = _named(arguments)
    return _text(args[0]) if args and args[0].type == "identifier" else None


# --- classifying one drop -----------------------------------------------------------------


def _in_preprocessor_condition(node: Node) -> bool:
    for up in _ancestors(node):
        if up.type in {"preproc_def", "preproc_function_def", "preproc_ifdef", "preproc_defined"}:
            return True
        if up.type in {"preproc_if", "preproc_elif"}:
            condition = up.child_by_field_name("condition")
            if (
                condition is not None
                and condition.start_byte <= node.start_byte < condition.end_byte
            ):
                return True
    return False


def _capability(expr: Node) -> tuple[str | None, str | None]:
    """The identifier inside a capability expression, and what would make evaluating it again
    unsafe (None when nothing would)."""
    unsafe = _side_effect(expr)
    node = expr
    while True:
        if node.type == "parenthesized_expression" and _named(node):
            node = _named(node)[0]
        elif node.type == "cast_expression" and node.child_by_field_name("value") is not None:
            node = node.child_by_field_name("value")  # type: ignore[assignment]
        elif node.type == "call_expression":
            function = node.child_by_field_name("function")
            arguments = node.child_by_field_name("arguments")
            if function is None or _text(function) not in PURE_WRAPPERS or arguments is None:
                return None, unsafe
            args = _named(arguments)
            if len(args) != 1:
                return None, unsafe
            node = args[0]
        else:
            break
    return (_text(node) if node.type == "identifier" else None), unsafe


# A function-like macro by C's naming convention (CAP_TO_INDEX(x)): it expands to an expression
# of its arguments, unlike a function, which may do anything.
_MACRO_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


def _side_effect(node: Node) -> str | None:
    """What in an expression could act when it is evaluated again, or None: a call of a function
    (not a `prctl_arg` style wrapper, not an upper-case macro), `++`/`--`, an assignment."""
    if node.type == "call_expression":
        function = node.child_by_field_name("function")
        name = _text(function) if function is not None else ""
        if function is None or function.type != "identifier":
            return f"calls through {_clean(function) if function else 'an expression'}"
        if name not in PURE_WRAPPERS and not _MACRO_NAME.fullmatch(name):
            return f"calls the function {name}()"
    elif node.type == "update_expression":
        return f"changes a variable ({_clean(node)})"
    elif node.type == "assignment_expression":
        return f"assigns ({_clean(node)})"
    elif node.type == "ERROR" or node.is_missing:
        return "does not parse cleanly"
    for child in node.named_children:
        found = _side_effect(child)
        if found:
            return found
    return None


# How a comparison with a constant turns prctl's result (0 success, -1 failure) into a test:
# True = the comparison is true on failure, False = true on success.
_COMPARISONS: dict[tuple[str, str], bool] = {
    ("<", "0"): True,
    ("!=", "0"): True,
    ("==", "-1"): True,
    ("==", "0"): False,
    (">=", "0"): False,
    ("!=", "-1"): False,
}
_MIRROR = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "==", "!=": "!="}


def _failure_test(start: Node, stop: Node) -> bool | None:
    """Walk from the tested value up to `stop` (an if's condition): True when the condition is
    true exactly when the drop failed, False when exactly when it succeeded, None otherwise."""
    node, on_failure = start, True
    while node.id != stop.id:
        parent = node.parent
        if parent is None:
            return None
        if parent.type == "parenthesized_expression":
            pass
        elif parent.type == "unary_expression" and _text(parent.children[0]) == "!":
            on_failure = not on_failure
        elif parent.type == "assignment_expression" and _text(parent.children[1]) == "=":
            pass  # if ((ret = prctl(…)) < 0): the assignment's value is prctl's result
        elif parent.type == "binary_expression":
            left, op, right = parent.children[0], _text(parent.children[1]), parent.children[2]
            other = right if left.id == node.id else left
            if other.id == left.id:
                op = _MIRROR.get(op, op)
            sense = _COMPARISONS.get((op, re.sub(r"\s+", "", _text(other))))
            if sense is None:
                return None
            on_failure = on_failure if sense else not on_failure
        else:
            return None
        node = parent
    return on_failure


def _next_statement(node: Node) -> Node | None:
    sibling = node.next_named_sibling
    while sibling is not None and sibling.type == "comment":
        sibling = sibling.next_named_sibling
    return sibling


def _classify(identifier: Node) -> Site:
    line = identifier.start_point[0] + 1
    call: Node | None = None
    parent = identifier.parent
    if (
        parent is not None
        and parent.type == "argument_list"
        and _named(parent)[0].id == identifier.id
    ):
        up = parent.parent
        if up is not None and up.type == "call_expression":
            function = up.child_by_field_name("function")
            if function is not None and _text(function) == "prctl":
                call = up
    if call is None:
        where = parent.type.replace("_", " ") if parent is not None else "file"
        return Site(
            SiteState.UNRECOGNIZED,
            f"{DROP} at line {line} is not the first argument of a prctl() call lxcpatch can "
            f"parse (it sits in a {where})",
            line,
            _span(identifier),
            None,
            None,
            False,
        )

    args = _named(call.child_by_field_name("arguments"))  # type: ignore[arg-type]
    capability = _clean(args[1]) if len(args) > 1 else None
    capability_id, unsafe = _capability(args[1]) if len(args) > 1 else (None, "is missing")
    reevaluable = unsafe is None
    base = {
        "line": line,
        "call": _span(call),
        "capability": capability,
        "capability_id": capability_id,
        "reevaluable": reevaluable,
    }

    def refuse(reason: str) -> Site:
        return Site(SiteState.UNRECOGNIZED, reason, **base)  # type: ignore[arg-type]

    if len(args) < 2:
        return refuse(f"prctl({DROP}, …) at line {line} names no capability")
    if call.has_error:
        return refuse(f"the prctl({DROP}, …) call at line {line} does not parse cleanly")

    # Climb to the `if` whose condition holds the call, or to the assignment of its result.
    node, form, variable, tested, first = call, Form.CONDITION, None, call, call
    while node.parent is not None and node.parent.type in {
        "parenthesized_expression",
        "unary_expression",
        "binary_expression",
        "assignment_expression",
    }:
        grand = node.parent.parent
        if (
            node.parent.type == "assignment_expression"
            and grand
            and grand.type == "expression_statement"
        ):
            break  # an assignment statement: ret = prctl(…);
        node = node.parent
    holder = node.parent
    if_node: Node | None = None
    if holder is not None and holder.type == "if_statement":
        condition = holder.child_by_field_name("condition")
        if condition is not None and condition.id == node.id:
            if_node = holder
    elif (
        holder is not None
        and holder.type == "assignment_expression"
        and holder.parent is not None
        and holder.parent.type == "expression_statement"
        and _text(holder.children[1]) == "="
        and node.id == holder.children[2].id
        and node.id == call.id
    ):
        form, variable, first = Form.ASSIGNED, _clean(holder.children[0]), holder.parent
    elif holder is not None and holder.type == "init_declarator" and node.id == call.id:
        declarator = holder.child_by_field_name("declarator")
        declaration = holder.parent
        if declarator is not None and declaration is not None and declaration.type == "declaration":
            form, variable, first = Form.ASSIGNED, _clean(declarator), declaration

    if form is Form.ASSIGNED:
        following = _next_statement(first)
        if following is None or following.type != "if_statement":
            return refuse(
                f"the result of prctl({DROP}, {capability}, …) at line {line} is stored in "
                f"{variable!r} but the next statement is not an `if` testing it"
            )
        condition = following.child_by_field_name("condition")
        uses = [
            n
            for n in _descendants(condition, "identifier", "field_expression")  # type: ignore[arg-type]
            if _clean(n) == variable
        ]
        if len(uses) != 1:
            return refuse(
                f"the `if` after line {line} does not test {variable!r} alone "
                f"(found {len(uses)} uses of it in its condition)"
            )
        if_node, tested = following, uses[0]
    if if_node is None:
        what = holder.type.replace("_", " ") if holder is not None else "file"
        if holder is not None and holder.type == "expression_statement":
            return refuse(
                f"the result of prctl({DROP}, {capability}, …) at line {line} is ignored: there "
                "is no error path to make tolerant"
            )
        return refuse(
            f"prctl({DROP}, {capability}, …) at line {line} is used in a {what}, not tested by "
            "an `if` (or assigned to a variable the next statement tests)"
        )

    condition = if_node.child_by_field_name("condition")
    consequence = if_node.child_by_field_name("consequence")
    assert condition is not None and consequence is not None
    statement = Span(
        first.start_byte, if_node.end_byte, first.start_point[0] + 1, if_node.end_point[0] + 1
    )
    base |= {
        "form": form,
        "statement": statement,
        "condition": _span(condition),
        "error_path": _span(consequence),
        "variable": variable,
        "read_call": _read_call(call),
    }

    if if_node.has_error:
        return refuse(f"the `if` around line {line} does not parse cleanly; lxcpatch leaves it")
    sense = _failure_test(tested, condition)
    if sense is None:
        return refuse(
            f"the `if` at line {if_node.start_point[0] + 1} combines the drop's result with "
            f"other tests ({_clean(condition)}); lxcpatch only rewrites a plain failure test"
        )
    if not sense:
        return refuse(
            f"the `if` at line {if_node.start_point[0] + 1} tests that the drop succeeded "
            f"({_clean(condition)}); lxcpatch only rewrites a failure test without `else`"
        )
    if if_node.child_by_field_name("alternative") is not None:
        return refuse(
            f"the `if` at line {if_node.start_point[0] + 1} has an `else` branch that a tolerated "
            "failure would skip; lxcpatch leaves it"
        )
    if consequence.type == "compound_statement":
        statements = [c for c in consequence.named_children]
    else:
        statements = [consequence]
    base["error_statements"] = tuple(_span(s) for s in statements)
    if any(_prctl_option(c) == READ for _, c in _calls(consequence)):
        return Site(
            SiteState.TOLERATED,
            f"the failure path of the drop at line {line} already asks {READ}",
            **base,  # type: ignore[arg-type]
        )
    if not [s for s in statements if s.type != "comment"]:
        return refuse(f"the `if` at line {if_node.start_point[0] + 1} has an empty error path")
    if any(s.type.startswith("preproc") for s in statements) and not _whole_lines(consequence):
        return refuse(
            f"the error path at line {if_node.start_point[0] + 1} mixes preprocessor lines with "
            "code on the same line"
        )
    family = None
    for name, _ in _calls(consequence):
        if name in _LXC_MACROS or name in _LXC_LOG_FUNCTIONS:
            family = "lxc_log" if name in _LXC_LOG_FUNCTIONS else "lxc"
            base |= {"log_family": family, "log_call": name}
            break
    if family is None:
        return refuse(
            f"the error path of the drop at line {line} has no LXC logging call (SYSERROR, "
            "syserror, lxc_log_syserror, …) whose family could report a tolerated drop"
        )
    if not reevaluable:
        return refuse(
            f"the capability expression {capability!r} at line {line} {unsafe}: a side effect "
            f"when it is evaluated again for {READ}; lxcpatch leaves this drop alone"
        )
    return Site(
        SiteState.REWRITABLE,
        f"prctl({DROP}, {capability}, …) tested by the `if` at line "
        f"{if_node.start_point[0] + 1}; its error path logs with {base['log_call']}",
        **base,  # type: ignore[arg-type]
    )


def _whole_lines(block: Node) -> bool:
    """A `{ … }` whose braces stand on lines of their own (apart from what precedes `{`)."""
    source_after_open = block.children[1] if len(block.children) > 1 else None
    return (
        block.type == "compound_statement"
        and source_after_open is not None
        and source_after_open.start_point[0] > block.start_point[0]
        and block.children[-1].start_point[0] > block.children[-2].end_point[0]
    )


def _read_call(call: Node) -> str:
    """The same prctl() call, asking PR_CAPBSET_READ instead, on one line."""
    function = call.child_by_field_name("function")
    args = _named(call.child_by_field_name("arguments"))  # type: ignore[arg-type]
    parts = [READ, *(_clean(a) for a in args[1:])]
    return f"{_text(function)}({', '.join(parts)})"  # type: ignore[arg-type]


# --- the file -----------------------------------------------------------------------------


def _read_fallback(source: bytes, names: list[Node]) -> tuple[int | None, Fallback | None]:
    drop_define: Node | None = None
    has_read = False
    for name in names:
        define = name.parent
        if define is None:
            continue
        if _text(name) == READ:
            has_read = True
        if _text(name) == DROP and drop_define is None:
            drop_define = define
    if drop_define is None:
        return None, None
    if has_read:
        return drop_define.start_point[0] + 1, None
    block = drop_define
    parent = drop_define.parent
    alone = parent is not None and [c for c in _named(parent) if c.type == "preproc_def"] == [
        drop_define
    ]
    if parent is not None and alone and parent.type in {"preproc_if", "preproc_ifdef"}:
        block = parent
    end = block.end_byte
    newline = source.find(b"\n", end - 1 if end and source[end - 1 : end] == b"\n" else end)
    insert_at = len(source) if newline < 0 else newline + 1
    fallback = Fallback(insert_at, block.start_point[0] + 1, block.end_point[0] + 1)
    return drop_define.start_point[0] + 1, fallback


# What can end a top-level item (a `}` outside braces, an #endif closing the outermost #if),
# and what must not count as one: comments, string and character literals, other preprocessor
# lines (with their continuations). The leading run lets the regex engine skip plain code
# quickly; a lone `/` is division.
_TOKENS = re.compile(
    rb"[^/\"'#{}]*"
    rb"(/\*.*?\*/|//[^\n]*|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'"
    rb"|#[ \t]*(\w*)(?:[^\n]*\\\r?\n)*[^\n]*|[{}]|/)",
    re.S,
)
_MENTION = re.compile(rb"PR_CAPBSET_(?:DROP|READ)")


def windows(source: bytes) -> list[tuple[int, int]] | None:
    """The top-level items (functions with the declarations before them, #if blocks) that
    mention PR_CAPBSET_DROP or PR_CAPBSET_READ, as byte ranges; None when braces or #if lines
    do not balance."""
    hits = [m.start() for m in _MENTION.finditer(source)]
    if not hits:
        return []
    ends, depth, nesting = [0], 0, 0
    for token in _TOKENS.finditer(source):
        text = token.group(1)
        if text == b"{":
            depth += 1
        elif text == b"}":
            depth -= 1
            if depth < 0:
                return None
            if depth == 0 and nesting == 0:
                ends.append(token.end())
        elif token.group(2) is not None:
            directive = token.group(2)
            if directive in {b"if", b"ifdef", b"ifndef"}:
                nesting += 1
            elif directive == b"endif":
                nesting -= 1
                if nesting < 0:
                    return None
                if nesting == 0 and depth == 0:
                    ends.append(token.end())
        if ends[-1] > hits[-1]:
            break  # the rest of the file mentions nothing
    else:
        if depth or nesting:
            return None
        ends.append(len(source))
    found: list[tuple[int, int]] = []
    for hit in hits:
        index = bisect.bisect_right(ends, hit)
        start, end = ends[index - 1], ends[index]
        if found and start <= found[-1][1]:
            found[-1] = (found[-1][0], max(end, found[-1][1]))
        else:
            found.append((start, end))
    return found


def _parse(source: bytes, whole: bool) -> Node | None:
    """Parse the top-level items that mention the drop (fast), or the whole file."""
    from tree_sitter import Range

    parser, _ = _parser()
    spans = None if whole else windows(source)
    if spans == []:
        return None
    if spans is None:
        parser.included_ranges = []
        del parser.included_ranges
        return parser.parse(source).root_node

    def point(offset: int) -> tuple[int, int]:
        return source.count(b"\n", 0, offset), offset - (source.rfind(b"\n", 0, offset) + 1)

    parser.included_ranges = [Range(point(a), point(b), a, b) for a, b in spans]
    try:
        return parser.parse(source).root_node
    finally:
        del parser.included_ranges


def scan(source: bytes, *, whole: bool = False) -> Scan:
    """Every `PR_CAPBSET_DROP` used in code (not in comments, strings or #define/#if lines).

    Only the top-level items that mention it are parsed, unless `whole` (the result is the same:
    tests compare both on every fixture and upstream tag).
    """
    root = _parse(source, whole)
    if root is None:
        return Scan((), None, None)
    captures = _captures(root)
    sites: tuple[Site, ...] = tuple(
        _classify(identifier)
        for identifier in captures.get("drop", [])
        if not _in_preprocessor_condition(identifier)
    )
    macros = tuple(_macro_drops(captures.get("macro", [])))
    drop_line, fallback = _read_fallback(source, captures.get("define", []))
    return Scan(tuple(sorted(sites + macros, key=lambda s: s.line)), drop_line, fallback)


_MACRO_DROP = re.compile(rf"\bprctl\s*\(\s*{DROP}\s*,\s*([^,()]*(?:\([^()]*\))?[^,()]*)")


def _macro_drops(values: list[Node]) -> Iterator[Site]:
    """Drops inside #define bodies: tree-sitter leaves those unparsed, and lxcpatch does not
    rewrite macros, but a drop hidden there must not pass for `not-needed`."""
    for value in values:
        define = value.parent
        if define is None or define.type not in {"preproc_def", "preproc_function_def"}:
            continue
        text = re.sub(r"/\*.*?\*/|//.*", " ", _text(value), flags=re.S)
        if not re.search(rf"\b{DROP}\b", text):
            continue
        match = _MACRO_DROP.search(text)
        capability = re.sub(r"\s+", " ", match.group(1)).strip() if match else None
        identifier = capability if capability and re.fullmatch(r"\w+", capability) else None
        line = define.start_point[0] + 1
        yield Site(
            SiteState.UNRECOGNIZED,
            f"the macro at line {line} wraps {DROP}; lxcpatch does not rewrite macros, "
            "so patch this file by hand or with a static patch in the series",
            line,
            _span(define),
            capability,
            identifier,
            False,
        )


def find_sites(
    source: bytes,
    *,
    select: Selector = cap_sys_boot,
    single: bool = True,
    partial: bool = False,
    file: str = START_C,
    what: str = "CAP_SYS_BOOT",
) -> LocateResult:
    """Locate the drops `select` picks in one file and decide what a recipe may do with them.

    `single`: the recipe expects exactly one site (two or more are `ambiguous`).
    `partial`: an unrecognized drop does not stop the others from being rewritten; it is left
    alone and listed in `skipped` (the file is `unrecognized` only when nothing else is there).
    """
    found = scan(source)
    chosen = tuple(s for s in found.sites if select(s))
    others = tuple(s for s in found.sites if not select(s))
    if not chosen:
        detail = []
        if found.drop_fallback_line is not None:
            detail.append(f"the {DROP} fallback #define at line {found.drop_fallback_line}")
        if others:
            listed = ", ".join(f"{o.capability or '?'} at line {o.line}" for o in others[:3])
            more = ", …" if len(others) > 3 else ""
            detail.append(f"{len(others)} other drop(s): {listed}{more}")
        return LocateResult(
            Outcome.NOT_NEEDED,
            file,
            None,
            f"{file} does not drop {what} from the bounding set"
            + (f" (only {' and '.join(detail)})" if detail else ""),
            others=others,
        )
    refused = tuple(s for s in chosen if s.state is SiteState.UNRECOGNIZED)
    usable = tuple(s for s in chosen if s.state is not SiteState.UNRECOGNIZED)
    if refused and (not partial or not usable):
        return LocateResult(
            Outcome.UNRECOGNIZED, file, refused[0].line, refused[0].reason, chosen, others=others
        )
    if single and len(chosen) > 1:
        lines = ", ".join(str(s.line) for s in chosen)
        return LocateResult(
            Outcome.AMBIGUOUS,
            file,
            chosen[0].line,
            f"{file} drops {what} at {len(chosen)} places (lines {lines}); lxcpatch changes "
            "nothing when it cannot tell which one runs",
            chosen,
            others=others,
        )
    pending = tuple(s for s in usable if s.state is SiteState.REWRITABLE)
    if not pending:
        return LocateResult(
            Outcome.ALREADY_PATCHED,
            file,
            usable[0].line,
            usable[0].reason,
            usable,
            skipped=refused,
            others=others,
        )
    return LocateResult(
        Outcome.FOUND,
        file,
        pending[0].line,
        pending[0].reason,
        pending,
        found.read_fallback,
        skipped=refused,
        others=others,
    )
