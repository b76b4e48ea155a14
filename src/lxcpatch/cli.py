"""The CLI edge: logging set-up, output (human on stderr, --json on stdout), errors to exit codes.

`lxcpatch <task>` (this Program) and `invoke <task>` (the repository's tasks.py) share one
collection, `lxcpatch.tasks.ns`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit, ParseError
from invoke.program import Program

from lxcpatch import __version__
from lxcpatch.errors import LxcpatchError
from lxcpatch.report import Report

F = TypeVar("F", bound=Callable[..., Report | None])


def debugging() -> bool:
    """`lxcpatch --debug …` (invoke's core flag) or LXCPATCH_DEBUG=1."""
    return logging.getLogger().isEnabledFor(logging.DEBUG) or bool(os.environ.get("LXCPATCH_DEBUG"))


class _RichOnFirstUse(logging.Handler):
    """rich's log handler, imported when the first record arrives: a task that logs nothing
    (`patch --check`) starts without loading rich."""

    def __init__(self) -> None:
        super().__init__()
        self._rich: logging.Handler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._rich is None:
            from rich.console import Console
            from rich.logging import RichHandler

            self._rich = RichHandler(
                console=Console(stderr=True), show_time=False, show_path=False, markup=False
            )
            self._rich.setFormatter(logging.Formatter("%(message)s"))
        self._rich.handle(record)


def _setup_logging() -> None:
    logger = logging.getLogger("lxcpatch")
    logger.propagate = False
    logger.setLevel(logging.DEBUG if debugging() else logging.INFO)
    if not logger.handlers:
        logger.addHandler(_RichOnFirstUse())


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _print_json(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def edge(body: F) -> F:
    """Wrap a task body: it returns a Report (or None) or raises LxcpatchError."""

    @functools.wraps(body)
    def wrapper(c: Context, *args: Any, **kwargs: Any) -> None:
        as_json = bool(kwargs.get("json"))
        _setup_logging()
        try:
            report = body(c, *args, **kwargs)
        except LxcpatchError as exc:
            if debugging():
                logging.getLogger("lxcpatch").exception("traceback (--debug)")
            console = _console()
            console.print(f"error: {exc.message}", style="bold red", markup=False)
            if exc.hint:
                console.print(f"hint: {exc.hint}", style="yellow", markup=False)
            if as_json:
                _print_json({"error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code})
            raise Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            _console().print("interrupted; nothing half-written was kept", style="red")
            raise Exit(code=130) from None
        if report is None:
            return
        if as_json:
            _print_json(report.to_json())
        text = report.human()
        if isinstance(text, str):
            # Plain text goes out verbatim (no wrapping, tabs kept): diffs must stay diffs.
            sys.stderr.write(text if text.endswith("\n") else text + "\n")
            sys.stderr.flush()
        else:
            _console().print(text)
        if report.exit_code:
            raise Exit(code=report.exit_code)

    return wrapper  # type: ignore[return-value]


class _Program(Program):
    """invoke's Program, but bad usage (an unknown option, `--jobs two`) exits 2 with a message
    instead of invoke's exit 1, or a traceback for a value that is not a number."""

    def parse_core(self, argv: list[str] | None) -> None:
        try:
            super().parse_core(argv)
        except (ParseError, ValueError) as exc:
            raise _usage(exc) from None

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except (ParseError, ValueError) as exc:
            raise _usage(exc) from None


def _usage(exc: Exception) -> Exit:
    return Exit(f"error: {exc}\nhint: see `lxcpatch --list` and `lxcpatch TASK --help`", code=2)


def main() -> None:
    """The `lxcpatch` console script."""
    from lxcpatch import tasks

    program = _Program(
        namespace=Collection.from_module(tasks),
        name="lxcpatch",
        binary="lxcpatch",
        version=__version__,
    )
    program.run()
