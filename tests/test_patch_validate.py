"""unidiff validation of generated patches: one file, changes only where the drop was located."""

from __future__ import annotations

import pytest

from lxcpatch.errors import LxcpatchError
from lxcpatch.patch import parse_patch, unified_diff, validate_recipe_patch
from lxcpatch.recipes.tolerate import Edit

OLD = b"".join(b"line %d\n" % n for n in range(1, 31))
FILE = "src/lxc/start.c"


def _diff(*edits: Edit, file: str = FILE) -> bytes:
    return unified_diff(file, OLD, list(edits))


def _at(line: int) -> int:
    return OLD.index(b"line %d\n" % line)


def test_changes_inside_the_region_pass() -> None:
    data = _diff(Edit(_at(12), _at(13), b"line twelve\n"), Edit(_at(20), _at(20), b"new\n"))
    patchset = validate_recipe_patch(data, name="x", allowed={FILE: [(11, 13), (19, 20)]})
    assert len(patchset) == 1 and patchset[0].is_modified_file


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (Edit(_at(25), _at(26), b"changed\n"), "removes line 25"),
        (Edit(_at(25), _at(25), b"added\n"), "adds a line after line 24"),
    ],
)
def test_a_change_outside_the_region_is_rejected(edit: Edit, message: str) -> None:
    with pytest.raises(LxcpatchError, match=message):
        validate_recipe_patch(_diff(edit), name="x", allowed={FILE: [(11, 13)]})


def test_another_file_or_a_second_file_is_rejected() -> None:
    edit = Edit(_at(12), _at(13), b"x\n")
    with pytest.raises(LxcpatchError, match=r"expected modifications of src/lxc/start\.c"):
        validate_recipe_patch(_diff(edit, file="src/lxc/conf.c"), name="x", allowed={FILE: []})
    two = _diff(edit) + _diff(edit, file="src/lxc/conf.c")
    with pytest.raises(LxcpatchError, match="expected modifications"):
        validate_recipe_patch(two, name="x", allowed={FILE: [(1, 30)]})


def test_hunk_counts_must_match_their_lines() -> None:
    data = _diff(Edit(_at(12), _at(13), b"x\n")).replace(b"+9,7 @@", b"+9,9 @@")
    with pytest.raises(LxcpatchError, match=r"hunk 1|not a valid unified diff"):
        parse_patch(data, name="x")
