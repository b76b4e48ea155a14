"""The pure core of `build` and `deps`: versions, build numbers, profiles, control text, lintian."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from lxcpatch import debbuild, deps
from lxcpatch.debbuild import Flavor, PatchState, SeriesEntry
from lxcpatch.recipes import builddeps, buildprofile

ENTRY = SeriesEntry(
    name="0001-cap-sys-boot.patch",
    recipe="@cap-sys-boot",
    sha256="ab" * 32,
    description="Tolerate a CAP_SYS_BOOT that is already gone from the bounding set",
    path=Path("/nowhere/0001-cap-sys-boot.patch"),
)
MANIFEST = {
    "source": "https://github.com/lxc/lxc.git",
    "ref": "lxc-2.0.11",
    "commit": "8c238670c48f07907fcab23c565493b79c2fdcaf",
    "version": "2.0.11",
}


def _dpkg_compare(a: str, op: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, op, b], check=False).returncode == 0


def test_version_marks_patched_and_unpatched_builds() -> None:
    assert debbuild.package_version("2.0.11", 1, PatchState.PATCHED) == "2.0.11+lxcpatch1"
    assert debbuild.package_version("2.0.11", 3, PatchState.NOT_NEEDED) == "2.0.11+lxcpatch3"
    assert debbuild.package_version("2.0.11", 1, PatchState.UNPATCHED) == "2.0.11~unpatched1"
    debian = debbuild.package_version("1:5.0.2-1", 1, PatchState.PATCHED)
    assert debian == "1:5.0.2-1+lxcpatch1"


def test_versions_sort_as_documented() -> None:
    # Above the distribution's build of the same version, below its next revision.
    assert _dpkg_compare("1:5.0.2-1+lxcpatch1", "gt", "1:5.0.2-1")
    assert _dpkg_compare("1:5.0.2-1+lxcpatch1", "lt", "1:5.0.2-2")
    assert _dpkg_compare("2.0.11+lxcpatch2", "gt", "2.0.11+lxcpatch1")
    # A control build never wins over the release or a patched build.
    assert _dpkg_compare("2.0.11~unpatched1", "lt", "2.0.11")
    assert _dpkg_compare("2.0.11~unpatched1", "lt", "2.0.11+lxcpatch1")


def test_build_number_follows_the_series() -> None:
    key = debbuild.series_key("pristine", PatchState.PATCHED, [ENTRY])
    assert debbuild.next_build_number(None, "2.0.11", key) == 1
    previous = {"base_version": "2.0.11", "build_number": 4, "series_key": key}
    assert debbuild.next_build_number(previous, "2.0.11", key) == 4
    other = dataclasses.replace(ENTRY, sha256="cd" * 32)
    touched = debbuild.series_key("pristine", PatchState.PATCHED, [other])
    assert touched != key
    assert debbuild.next_build_number(previous, "2.0.11", touched) == 5
    assert debbuild.next_build_number(previous, "2.0.12", touched) == 1


def test_description_and_changelog_name_every_patch_and_its_sha256() -> None:
    second = SeriesEntry("0002-x.patch", "patches/x.patch", "cd" * 32, "Another", Path("/x"))
    lines = debbuild.description_lines(MANIFEST, PatchState.PATCHED, [ENTRY, second])
    text = "\n".join(lines)
    for entry in (ENTRY, second):
        assert entry.name in text and entry.sha256 in text
    assert all(len(line) <= 79 for line in lines)
    changes = debbuild.changelog_changes(
        MANIFEST, PatchState.PATCHED, [ENTRY, second], Flavor.DEBIAN
    )
    joined = "".join(line.strip() for line in changes)
    assert ENTRY.sha256 in joined and second.sha256 in joined
    assert all(len(line) <= 80 for line in changes)
    assert "lxc-2.0.11" in joined and "8c238670c48f" in joined


def test_description_says_why_nothing_was_applied() -> None:
    text = "\n".join(debbuild.description_lines(MANIFEST, PatchState.NOT_NEEDED, []))
    assert "does not drop CAP_SYS_BOOT" in text
    text = "\n".join(debbuild.description_lines(MANIFEST, PatchState.UNPATCHED, []))
    assert "UNPATCHED" in text


def test_changelog_text_parses_back() -> None:
    from debian.changelog import Changelog

    text = debbuild.changelog_text("lxc", "2.0.11+lxcpatch1", "A <a@example.org>", 86400, ["  * x"])
    parsed = Changelog(text, strict=True)
    assert str(parsed.version) == "2.0.11+lxcpatch1"
    assert parsed.date == "Fri, 02 Jan 1970 00:00:00 +0000"


def test_control_stands_in_for_the_distribution_packages() -> None:
    from debian.deb822 import Deb822, PkgRelation

    fields = debbuild.control_fields(
        version="2.0.11+lxcpatch1",
        architecture="amd64",
        maintainer="A <a@example.org>",
        installed_size=12,
        depends="libc6 (>= 2.34)",
        synopsis="LXC",
        description=["one", ".", "two"],
    )
    parsed = Deb822(fields.dump())
    provides = {
        r[0]["name"]: r[0]["version"] for r in PkgRelation.parse_relations(parsed["Provides"])
    }
    assert provides["liblxc1"] == ("=", "2.0.11+lxcpatch1")
    for name in ("liblxc1", "liblxc-common", "lxc1"):
        assert name in parsed["Conflicts"] and name in parsed["Replaces"]
    assert parsed["Description"].splitlines()[1:] == [" one", " .", " two"]


def test_md5sums_are_sorted_relative_paths() -> None:
    text = debbuild.md5sums_text({"usr/bin/b": "2" * 32, "etc/a": "1" * 32})
    assert text == f"{'1' * 32}  etc/a\n{'2' * 32}  usr/bin/b\n"


HELP_2_0 = """
  --disable-werror        do not treat warnings as errors
  --enable-doc            make man pages [default=auto]
  --enable-python         enable python binding [default=auto]
  --enable-capabilities   enable kernel capabilities support [default=auto]
  --with-systemdsystemunitdir=DIR
  --with-init-script[=TYPE[,TYPE,...]]
"""
HELP_1_0 = """
  --enable-doc            make man pages [default=auto]
  --enable-lua            enable lua binding [default=auto]
"""


def test_autotools_profile_takes_only_what_configure_offers() -> None:
    assert buildprofile.autotools_profile(HELP_2_0) == [
        "--disable-werror",
        "--disable-doc",
        "--disable-python",
        "--enable-capabilities",
        "--with-init-script=systemd",
        "--with-systemdsystemunitdir=/lib/systemd/system",
    ]
    assert buildprofile.offers_werror_switch(HELP_2_0)
    assert buildprofile.autotools_profile(HELP_1_0) == ["--disable-doc", "--disable-lua"]
    assert not buildprofile.offers_werror_switch(HELP_1_0)


def test_meson_profile_follows_option_types() -> None:
    options = """
option('man', type: 'boolean', value: 'true')
option('sd-bus', type: 'feature', value: 'auto')
option('capabilities', type : 'boolean', value: 'true')
option('init-script', type : 'array', choices : ['systemd', 'sysvinit'])
option('something-else', type: 'boolean')
"""
    assert buildprofile.meson_profile(options) == [
        "-Dwerror=false",
        "-Dman=false",
        "-Dsd-bus=disabled",
        "-Dcapabilities=true",
        "-Dinit-script=systemd",
    ]


def test_make_overrides_put_no_error_after_a_configured_werror(tmp_path: Path) -> None:
    (tmp_path / "Makefile").write_text("CC = gcc\nCFLAGS = -g -O2 -Wno-error -Wall -Werror\n")
    assert debbuild._make_overrides(tmp_path) == [
        "CFLAGS=-g -O2 -Wno-error -Wall -Werror -Wno-error"
    ]
    # LXC 4.0 turns single warnings into errors in AM_CFLAGS (before CFLAGS on compile lines);
    # glibc 2.36's mount_setattr() makes its conf.c trigger one.
    (tmp_path / "Makefile").write_text(
        "AM_CFLAGS = -Wvla -Werror=return-type -Werror=incompatible-pointer-types\n"
        "CFLAGS = -g -O2\n"
    )
    assert debbuild._make_overrides(tmp_path) == [
        "CFLAGS=-g -O2 -Wno-error=return-type -Wno-error=incompatible-pointer-types"
    ]
    (tmp_path / "Makefile").write_text("CFLAGS = -g -O2 -Werror-implicit-function-declaration\n")
    assert debbuild._make_overrides(tmp_path) == []


def test_lintian_output_is_parsed() -> None:
    text = (
        "E: lxc: no-shlibs [usr/lib/x86_64-linux-gnu/liblxc.so.1]\n"
        "W: lxc-mini source: some-source-tag\n"
        "N: a note that is not a finding\n"
        "I: lxc: no-manual-page [usr/bin/lxc-start]\n"
    )
    findings = debbuild.parse_lintian(text)
    assert [(f.severity, f.package, f.tag) for f in findings] == [
        ("E", "lxc", "no-shlibs"),
        ("W", "lxc-mini", "some-source-tag"),
        ("I", "lxc", "no-manual-page"),
    ]
    assert findings[0].info == "[usr/lib/x86_64-linux-gnu/liblxc.so.1]"


def test_a_missing_program_in_a_build_script_names_its_package() -> None:
    hint = debbuild.missing_tool_hint("./autogen.sh: 4: autoreconf: not found\n")
    assert hint is not None and "apt-get install autoconf" in hint
    assert debbuild.missing_tool_hint("start.c:3: error: expected ';'") is None


def test_license_is_recognised_from_copying() -> None:
    assert debbuild.license_text("GNU Lesser General Public License v2.1")[0] == "LGPL-2.1+"
    assert debbuild.license_text("GNU GENERAL PUBLIC LICENSE Version 2")[0] == "GPL-2+"
    assert debbuild.license_text(None)[0] == "see-upstream"


def test_flavor_and_configure_args_parsing() -> None:
    assert debbuild.parse_flavor("debian") is Flavor.DEBIAN
    with pytest.raises(debbuild.UsageError):
        debbuild.parse_flavor("rpm")
    assert debbuild.split_args("--enable-seccomp CFLAGS='-O1 -g'") == (
        "--enable-seccomp",
        "CFLAGS=-O1 -g",
    )


def test_upstream_deps_list_per_build_system() -> None:
    autotools = builddeps.upstream_builddeps("autotools")
    meson = builddeps.upstream_builddeps("meson")
    assert {"autoconf", "automake", "libtool", "libcap-dev"} <= set(autotools)
    assert {"meson", "ninja-build", "libcap-dev"} <= set(meson)
    assert "autoconf" not in meson
    arguments, wanted = deps.plan_command(Flavor.UPSTREAM, "autotools", None)
    assert (
        arguments[:2] == ["install", "--no-install-recommends"] and tuple(arguments[2:]) == wanted
    )
    arguments, wanted = deps.plan_command(Flavor.DEBIAN, "autotools", Path("/t/lxc"))
    assert arguments == ["build-dep", "--no-install-recommends", "/t/lxc/"] and wanted == ()


def test_apt_simulation_lists_what_would_be_installed() -> None:
    output = (
        "NOTE: This is only a simulation!\n"
        "Inst libcap-dev (1:2.66-4 Debian:12/stable [amd64])\n"
        "Inst ccache (4.8+really4.7.5-1 Debian:12/stable [amd64])\n"
        "Conf libcap-dev (1:2.66-4 Debian:12/stable [amd64])\n"
    )
    assert deps.simulated_installs(output) == ("libcap-dev", "ccache")
