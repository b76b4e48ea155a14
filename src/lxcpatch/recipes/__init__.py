"""Built-in recipes: rewrites that know LXC's code. Series files name them as `@name`.

The tokens compiled into patched code live here and nowhere else; `verify` imports them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lxcpatch.errors import UsageError

if TYPE_CHECKING:
    from lxcpatch.locate import LocateResult
    from lxcpatch.recipes.tolerate import Edit

TOKENS = {
    "@cap-sys-boot": "lxcpatch:cap-sys-boot-tolerated",
    "@cap-drops": "lxcpatch:cap-drop-tolerated",
}

# Recipe name -> module defining RECIPE (imported on use: recipes pull in tree-sitter).
_MODULES = {
    "@cap-sys-boot": "lxcpatch.recipes.cap_sys_boot",
    "@cap-drops": "lxcpatch.recipes.cap_drops",
}


@dataclass(frozen=True)
class Recipe:
    """A built-in rewrite: which files it reads, how it locates its sites, how it rewrites them."""

    name: str  # "@cap-sys-boot"
    token: str  # compiled into the patched code, found again by `verify`
    summary: str  # DEP-3 Description, first line (also the commit subject)
    explanation: str  # DEP-3 Description, the rest
    targets: Callable[[Path], list[str]]  # files (relative to the tree) it reads
    locate: Callable[[bytes, str], LocateResult]  # (source, file) -> outcome
    edits: Callable[[LocateResult, bytes], list[Edit]]  # a FOUND result -> the changes
    render: Callable[[LocateResult, bytes], bytes]  # a FOUND result -> the new source
    # True: a drop the recipe cannot rewrite is left alone and named (LocateResult.skipped)
    # while the others are rewritten; False: it refuses the whole recipe.
    partial: bool = False

    @property
    def slug(self) -> str:
        return self.name.lstrip("@")


def names() -> list[str]:
    return sorted(_MODULES)


def get(name: str) -> Recipe:
    """The built-in recipe called `name` (with its `@`)."""
    if name not in _MODULES:
        known = ", ".join(names())
        planned = " (planned, not built in yet)" if name in TOKENS else ""
        raise UsageError(
            f"unknown recipe {name}{planned}",
            hint=f"built-in recipes: {known}; or name a unified diff under patches/",
        )
    recipe: Recipe = importlib.import_module(_MODULES[name]).RECIPE
    return recipe
