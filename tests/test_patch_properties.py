"""Properties of patches: the diff of any edits applies back exactly; patch then revert is the
identity on real trees, git or not, whatever the layout of the file."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from lxcpatch.patch import (
    PatchReport,
    PatchRequest,
    Status,
    apply_hunks,
    parse_patch,
    revert,
    run_patch,
    unified_diff,
)
from lxcpatch.recipes.tolerate import Edit, apply
from lxcpatch.workspace import Workspace
from tests.test_locate_properties import layouts, reformat
from tests.test_patch_support import copy_tree, fixtures, init_git, snapshot

LINE = st.builds(
    lambda text, end: text + end,
    st.text(alphabet="ab{} \t;", max_size=6).map(lambda t: t.encode()),
    st.sampled_from([b"\n", b"\r\n"]),
)


@st.composite
def edited(draw: st.DrawFn) -> tuple[bytes, list[Edit]]:
    lines = draw(st.lists(LINE, min_size=1, max_size=30))
    if draw(st.booleans()):
        lines[-1] = lines[-1].rstrip(b"\r\n")  # no newline at the end of the file
    old = b"".join(lines)
    cuts = sorted(draw(st.sets(st.integers(0, len(old)), max_size=8)))
    edits = []
    for start, end in zip(cuts[::2], cuts[1::2], strict=False):
        text = b"".join(draw(st.lists(LINE, max_size=4)))
        edits.append(Edit(start, end, text))
    return old, edits


@settings(max_examples=300, deadline=None)
@given(case=edited())
def test_the_diff_of_any_edits_applies_back_exactly(case: tuple[bytes, list[Edit]]) -> None:
    old, edits = case
    new = apply(old, edits)
    diff = unified_diff("f.c", old, edits)
    if old == new:
        assert diff == b"--- a/f.c\n+++ b/f.c\n"
        return
    patchset = parse_patch(diff, name="generated")
    assert apply_hunks(old, patchset[0]) == new


@settings(max_examples=12, deadline=None)
@given(
    name=st.sampled_from([n for n in fixtures("found") if n.startswith("lxc-")]),
    layout=layouts,
    as_git=st.booleans(),
)
def test_patch_then_revert_is_the_identity(
    name: str, layout: dict[str, object], as_git: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tree = copy_tree(name, Path(tmp), as_git=False)
        start_c = tree / "src/lxc/start.c"
        start_c.write_bytes(reformat(start_c.read_bytes(), **layout))  # type: ignore[arg-type]
        if as_git:
            init_git(tree)
        pristine = snapshot(tree)

        report = run_patch(Workspace(Path(tmp) / "build"), PatchRequest(trees=(str(tree),)))

        assert isinstance(report, PatchReport)
        assert report.trees[0].results[0].status is Status.PATCHED
        assert snapshot(tree) != pristine
        revert([tree])
        assert snapshot(tree) == pristine


@settings(max_examples=40, deadline=None)
@given(case=edited())
def test_git_apply_agrees_with_the_generated_diff(case: tuple[bytes, list[Edit]]) -> None:
    # git is the independent judge of the diff format (CRLF, lone CR, missing final newline).
    old, edits = case
    new = apply(old, edits)
    if old == new:
        return
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "f.c").write_bytes(old)
        (Path(tmp) / "change.patch").write_bytes(unified_diff("f.c", old, edits))
        subprocess.run(
            ["git", "apply", "--whitespace=nowarn", "change.patch"],
            cwd=tmp,
            env={**os.environ, "GIT_CEILING_DIRECTORIES": tmp},
            check=True,
            capture_output=True,
        )
        assert (Path(tmp) / "f.c").read_bytes() == new
