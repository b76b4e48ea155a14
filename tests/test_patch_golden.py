"""Golden diffs: the patch each recipe writes for each fixture, byte for byte.

The goldens under tests/golden/ (@cap-sys-boot) and tests/golden/cap-drops/ (@cap-drops, whose
patch may span several files) are generated from our own fixtures. After a deliberate change
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
from tests.test_patch_support import DROPS, ERAS, fixtures, source

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
    assert sorted(p.stem for p in (GOLDEN / "cap-drops").glob("*.patch")) == sorted(DROPS)


@pytest.mark.parametrize("name", sorted(DROPS))
def test_cap_drops_golden_diff(name: str) -> None:
    # As `patch` builds it: every file of the tree with drops to rewrite, in the recipe's order.
    recipe = get("@cap-drops")
    tree = ERAS / name
    changes, allowed = [], {}
    for file in recipe.targets(tree):
        old = (tree / file).read_bytes()
        found = recipe.locate(old, file)
        if found.outcome.value == "found":
            changes.append((file, old, recipe.edits(found, old)))
            allowed[file] = regions(found)
    data = make_patch(recipe, changes, DATE)
    golden = GOLDEN / "cap-drops" / f"{name}.patch"
    if os.environ.get("LXCPATCH_REGEN_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_bytes(data)
    assert data == golden.read_bytes(), f"regenerate with LXCPATCH_REGEN_GOLDEN=1 ({golden})"
    validate_recipe_patch(data, name=golden.name, allowed=allowed)
