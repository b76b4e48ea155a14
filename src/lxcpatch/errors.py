"""Typed errors. The library raises them; only the CLI edge turns them into exit codes."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike


class LxcpatchError(Exception):
    """Something failed or was refused (exit 1). `hint` says what to do next."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\nhint: {self.hint}"


class UsageError(LxcpatchError):
    """The options do not make sense together, or name nothing usable (exit 2)."""

    exit_code = 2


class PrerequisiteError(LxcpatchError):
    """A program, package or earlier stage that this one needs is missing (exit 2)."""

    exit_code = 2


class BusyError(LxcpatchError):
    """Another lxcpatch process holds the lock on this part of the workspace."""


class CommandError(LxcpatchError):
    """A program exited non-zero: carries its argv, exit code and the tail of its output."""

    def __init__(
        self,
        argv: Sequence[str | PathLike[str]],
        returncode: int,
        tail: str,
        *,
        log: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.returncode = returncode
        self.tail = tail
        self.log = log
        message = f"{self.argv[0]} failed with exit code {returncode}: {' '.join(self.argv)}"
        if tail.strip():
            message += "\n" + tail.rstrip()
        if log:
            message += f"\nfull output: {log}"
        super().__init__(message, hint=hint)
