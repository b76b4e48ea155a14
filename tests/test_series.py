"""The series file: quilt format, recipes and static patches, clear errors with line numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from lxcpatch.errors import UsageError
from lxcpatch.series import DEFAULT_SERIES, load, parse


def test_parse_reads_quilt_format(tmp_path: Path) -> None:
    text = (
        "# lxcpatch series\n\n@cap-sys-boot\n"
        "  fixes/one.patch -p0   # trailing comment\n"
        "fixes/two.diff\n# @cap-drops\n"
    )
    entries = parse(text, tmp_path)
    assert [(e.spec, e.line, e.strip, e.is_recipe) for e in entries] == [
        ("@cap-sys-boot", 3, 1, True),
        ("fixes/one.patch", 4, 0, False),
        ("fixes/two.diff", 5, 1, False),
    ]
    assert entries[1].path == tmp_path / "fixes" / "one.patch"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.patch\na.patch\n", "line 2: a.patch is already listed at line 1"),
        ("a.patch -R\n", "line 1: unknown option '-R'"),
        ("@cap-sys-boot -p1\n", "a recipe takes no options"),
        ("../outside.patch\n", "must be a path inside"),
        ("/etc/passwd\n", "must be a path inside"),
    ],
)
def test_parse_rejects_bad_entries(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse(text, tmp_path)


def test_load_checks_recipes_and_files(tmp_path: Path) -> None:
    series = tmp_path / "series"
    series.write_text("@cap-sys-boot\n@no-such-recipe\n")
    with pytest.raises(UsageError, match="line 2: unknown recipe @no-such-recipe") as info:
        load(series)
    assert info.value.hint and "@cap-sys-boot" in info.value.hint

    series.write_text("@cap-sys-boot\nmissing.patch\n")
    with pytest.raises(UsageError, match=r"line 2: patch missing\.patch not found"):
        load(series)

    with pytest.raises(UsageError, match="not found"):
        load(tmp_path / "absent")


def test_the_shipped_series_holds_cap_sys_boot_first() -> None:
    shipped = load()
    assert shipped.file == DEFAULT_SERIES
    assert [e.spec for e in shipped.entries] == ["@cap-sys-boot"]
