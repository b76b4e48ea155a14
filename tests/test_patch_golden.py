"""Golden diffs: the patch `@cap-sys-boot` writes for each fixture, byte for byte.

The goldens under tests/golden/ are generated from our own fixtures. After a deliberate change
to the rewrite, regenerate them and review the diff:

    LXCPATCH_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_patch_golden.py
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from lxcpatch.patch import make_patch, regions, validate_recipe_patch
from lxcpatch.recipes import get
from tests.test_patch_support import fixtures, source

GOLDEN = Path(__file__).parent / "golden"
DATE = dt.date(2024, 1, 1)  # Last-Update of every golden


def _patch(name: str) -> tuple[bytes, list[tuple[int, int]]]:
    recipe = get("@cap-sys-boot")
    found = recipe.locate(source(name), "src/lxc/start.c")
    changes = recipe.edits(found, source(name))
    data = make_patch(recipe, [("src/lxc/start.c", source(name), changes)], DATE)
    return data, regions(found)


@pytest.mark.parametrize("name", fixtures("found"))
def test_golden_diff(name: str) -> None:
    data, allowed = _patch(name)
    golden = GOLDEN / f"{name}.patch"
    if os.environ.get("LXCPATCH_REGEN_GOLDEN"):
        golden.write_bytes(data)
    assert data == golden.read_bytes(), f"regenerate with LXCPATCH_REGEN_GOLDEN=1 ({golden})"
    validate_recipe_patch(data, name=golden.name, allowed={"src/lxc/start.c": allowed})


def test_every_golden_belongs_to_a_fixture() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.patch")) == fixtures("found")
