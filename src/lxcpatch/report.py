"""What a task returns to the CLI edge: data for --json, text for people, an exit code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.console import RenderableType


class Report(Protocol):
    def to_json(self) -> dict[str, Any]:
        """The one JSON document printed on stdout under --json."""
        ...

    def human(self) -> RenderableType:
        """What a person reads on stderr (a string or a rich renderable)."""
        ...

    @property
    def exit_code(self) -> int:
        """0 success, 1 failed or refused, 2 bad usage or missing prerequisite."""
        ...
