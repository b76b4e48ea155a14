"""Properties: reformatting whitespace or line endings never changes what locate decides."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from lxcpatch.locate import Outcome, scan
from lxcpatch.recipes import get
from tests.test_patch_support import EXPECTED, fixtures, source


def reformat(
    text: bytes, *, crlf: bool | None, indent: int, trailing: bytes, spaced_call: bool
) -> bytes:
    """Change layout only: line endings, indentation width, trailing blanks, blanks in calls."""
    lines = text.replace(b"\r\n", b"\n").split(b"\n")
    out = []
    for line in lines:
        if indent:
            stripped = line.lstrip(b"\t")
            line = b" " * (indent * (len(line) - len(stripped))) + stripped
        if trailing and not line.endswith(b"\\"):
            line += trailing
        out.append(line)
    result = b"\n".join(out)
    if spaced_call:
        result = re.sub(rb"PR_CAPBSET_DROP\s*,\s*", b"PR_CAPBSET_DROP  ,\t ", result)
    original_crlf = b"\r\n" in text
    if crlf if crlf is not None else original_crlf:
        result = result.replace(b"\n", b"\r\n")
    return result


layouts = st.fixed_dictionaries(
    {
        "crlf": st.sampled_from([None, True, False]),
        "indent": st.sampled_from([0, 2, 4, 8]),
        "trailing": st.sampled_from([b"", b" ", b"\t", b" \t "]),
        "spaced_call": st.booleans(),
    }
)


@settings(max_examples=120, deadline=None)
@given(name=st.sampled_from(fixtures()), layout=layouts)
def test_layout_never_changes_the_outcome(name: str, layout: dict[str, object]) -> None:
    recipe = get("@cap-sys-boot")
    text = reformat(source(name), **layout)  # type: ignore[arg-type]
    found = recipe.locate(text, "src/lxc/start.c")
    assert found.outcome == EXPECTED[name]["outcome"], found.reason
    # Parsing only the items that mention the drop sees what parsing the whole file sees.
    assert scan(text) == scan(text, whole=True)
    assert found.line == EXPECTED[name].get("line")
    if found.outcome is Outcome.FOUND:
        patched = recipe.render(found, text)
        assert recipe.locate(patched, "src/lxc/start.c").outcome is Outcome.ALREADY_PATCHED
        if layout["indent"]:  # spaces stay spaces in what the rewrite adds
            for line in set(patched.splitlines()) - set(text.splitlines()):
                assert b"\t" not in re.match(rb"[ \t]*", line).group(0), line  # type: ignore[union-attr]
        # The rewrite keeps the file's line endings: no bare LF in a CRLF file, no CR added.
        if b"\r\n" in text:
            assert patched.count(b"\n") == patched.count(b"\r\n")
        else:
            assert b"\r" not in patched
