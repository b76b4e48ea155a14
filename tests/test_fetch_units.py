"""Pure parts of fetch: tag names, source kinds, versions, tar member checks, .dsc parsing."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from lxcpatch.debsource import dsc_files
from lxcpatch.errors import LxcpatchError, UsageError
from lxcpatch.fetch import FetchRequest, plan
from lxcpatch.lxctree import version_from_configure, version_from_meson
from lxcpatch.sources import (
    PINNED,
    UPSTREAM_URL,
    SourceKind,
    check_sha256,
    classify,
    name_for_file,
    name_for_ref,
    upstream_tag,
)
from lxcpatch.unpack import check_members, unsafe_member
from tests.fetch_helpers import member


@pytest.mark.parametrize(
    ("version", "tag"),
    [
        ("0.5.0", "lxc_0_5_0"),
        ("0.6.4", "lxc_0_6_4"),
        ("0.6.5", "lxc-0.6.5"),
        ("0.7.4.1", "lxc-0.7.4.1"),
        ("1.0.0.beta1", "lxc-1.0.0.beta1"),
        ("2.0.11", "lxc-2.0.11"),
        ("5.0.3", "lxc-5.0.3"),
        ("6.0.0", "v6.0.0"),
        ("6.0.5", "v6.0.5"),
        ("10.1.2", "v10.1.2"),
    ],
)
def test_upstream_tag_follows_lxc_naming(version: str, tag: str) -> None:
    assert upstream_tag(version) == tag


@pytest.mark.parametrize("bad", ["2.0", "latest", "2.0.11!", "x.y.z", ""])
def test_upstream_tag_refuses_what_is_not_a_release(bad: str) -> None:
    with pytest.raises(UsageError) as caught:
        upstream_tag(bad)
    assert caught.value.exit_code == 2 and caught.value.hint


def test_upstream_tag_hints_at_ref_for_a_tag() -> None:
    with pytest.raises(UsageError, match=r"X\.Y\.Z") as caught:
        upstream_tag("lxc-2.0.11")
    assert "--ref lxc-2.0.11" in str(caught.value.hint)


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("lxc-2.0.11", "lxc-2.0.11"),
        ("v6.0.5", "lxc-6.0.5"),
        ("lxc_0_6_4", "lxc-0.6.4"),
        ("lxc-1.0.0.beta1", "lxc-1.0.0.beta1"),
        ("main", None),
        ("stable-2.0", None),
        (PINNED["lxc-2.0.11"], None),
    ],
)
def test_tree_name_from_ref(ref: str, name: str | None) -> None:
    assert name_for_ref(ref) == name


@pytest.mark.parametrize(
    ("filename", "name"),
    [
        ("lxc-2.0.11.tar.gz", "lxc-2.0.11"),
        ("lxc-2.0.11.tgz", "lxc-2.0.11"),
        ("lxc-3.0.0.tar.xz", "lxc-3.0.0"),
        ("lxc_2.0.11-1.dsc", "lxc_2.0.11-1"),
        ("lxc_2.0.11-1~bpo.dsc", "lxc_2.0.11-1-bpo"),
        ("weird name!.tar.bz2", "weird-name"),
    ],
)
def test_tree_name_from_file(filename: str, name: str) -> None:
    assert name_for_file(filename) == name


def test_classify_urls() -> None:
    assert classify(UPSTREAM_URL).kind is SourceKind.GIT
    assert classify("git://example.org/lxc").kind is SourceKind.GIT
    assert classify("git@github.com:lxc/lxc.git").kind is SourceKind.GIT
    assert classify("https://example.org/lxc-2.0.11.tar.gz").kind is SourceKind.TARBALL
    assert classify("https://example.org/x/lxc_2.0.11-1.dsc").kind is SourceKind.DSC
    apt = classify("apt:lxc=1:2.0.11-1")
    assert apt.kind is SourceKind.DSC and apt.apt == "lxc=1:2.0.11-1"
    with pytest.raises(UsageError):
        classify("apt:")
    with pytest.raises(UsageError):
        classify("ftp://example.org/lxc-2.0.11.tar.gz")


def test_classify_paths(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "work" / ".git").mkdir(parents=True)
    bare = tmp_path / "bare.git"
    for sub in ("objects", "refs"):
        (bare / sub).mkdir(parents=True)
    (bare / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / "lxc-2.0.11.tar.xz").write_bytes(b"")
    (tmp_path / "lxc_2.0.11-1.dsc").write_text("")
    (tmp_path / "notes.txt").write_text("")
    assert classify("plain", cwd=tmp_path).kind is SourceKind.DIRECTORY
    work = classify(str(tmp_path / "work"))
    assert work.kind is SourceKind.GIT and work.url == (tmp_path / "work").as_uri()
    assert classify(bare.as_uri()).kind is SourceKind.GIT
    assert classify("lxc-2.0.11.tar.xz", cwd=tmp_path).kind is SourceKind.TARBALL
    assert classify(f"file://{tmp_path}/lxc_2.0.11-1.dsc").kind is SourceKind.DSC
    with pytest.raises(UsageError, match="cannot tell"):
        classify("notes.txt", cwd=tmp_path)
    with pytest.raises(UsageError, match="no such file"):
        classify("missing.tar.gz", cwd=tmp_path)


def test_check_sha256() -> None:
    assert check_sha256("AB" * 32) == "ab" * 32
    with pytest.raises(UsageError):
        check_sha256("abc")


def _plan(**kw: str | None) -> None:
    plan(FetchRequest(**kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ref": "lxc-2.0.11", "version": "2.0.11"}, "--version and --ref"),
        ({"source": "https://h/lxc-2.0.11.tar.gz", "ref": "main"}, "--ref applies to git"),
        ({"source": "https://h/lxc-2.0.11.tar.gz", "version": "2.0.11"}, "--version picks"),
        ({"sha256": "0" * 64}, "--sha256 checks"),
        ({"source": "apt:lxc", "sha256": "0" * 64}, "--sha256 checks"),
        ({"ref": "--upload-pack=evil"}, "not a valid git"),
        ({"ref": "a..b"}, "not a valid git"),
    ],
)
def test_plan_refuses_options_that_do_not_fit(options: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        _plan(**options)
    assert caught.value.exit_code == 2 and caught.value.hint


def test_plan_pins_the_default_source_only() -> None:
    default = plan(FetchRequest())
    assert (default.ref, default.pin) == ("lxc-2.0.11", PINNED["lxc-2.0.11"])
    assert plan(FetchRequest(version="1.0.11")).ref == "lxc-1.0.11"
    assert plan(FetchRequest(version="1.0.11")).pin is None
    other = plan(FetchRequest(source="https://example.org/lxc.git", ref="lxc-2.0.11"))
    assert other.pin is None
    commit = "1" * 40
    assert plan(FetchRequest(source="https://example.org/lxc.git", ref=commit)).pin == commit


# configure.ac shapes of each era, written for these tests (not taken from LXC).
LITERAL = "AC_INIT([lxc], [0.7.5])\nAC_CONFIG_SRCDIR([src/lxc/start.c])\n"
UNQUOTED = "dnl old style\nAC_INIT(lxc, 0.6.2)\n"
COMPUTED = """\
# computed like LXC 1.0 to 4.0 do
m4_define([lxc_devel], {devel})
m4_define([lxc_version_major], 2)
m4_define([lxc_version_minor], 0)
m4_define([lxc_version_micro], 11)
m4_define([lxc_version_beta], [{beta}])
m4_define([lxc_version_base], [lxc_version_major.lxc_version_minor.lxc_version_micro])
m4_define([lxc_version_full],
  [ifelse(lxc_version_beta, [], [lxc_version_base], [lxc_version_base.lxc_version_beta])])
m4_define([lxc_version],
  [ifelse(lxc_devel, 1, [lxc_version_full-devel], [lxc_version_full])])

AC_INIT([lxc],[lxc_version])
AC_SUBST([LXC_VERSION_MAJOR], [lxc_version_major])
"""


@pytest.mark.parametrize(
    ("text", "version"),
    [
        (LITERAL, "0.7.5"),
        (UNQUOTED, "0.6.2"),
        (COMPUTED.format(devel=0, beta=""), "2.0.11"),
        (COMPUTED.format(devel=0, beta="rc3"), "2.0.11.rc3"),
        (COMPUTED.format(devel=1, beta=""), "2.0.11-devel"),
        ("AC_INIT([lxc], m4_esyscmd([./version.sh]))\n", None),
        ("m4_define([v], [v])\nAC_INIT([lxc], [v])\n", None),
        ("AC_PREREQ([2.69])\n", None),
        ("AC_INIT([lxc], [2.0.11\n", None),
    ],
)
def test_version_from_configure(text: str, version: str | None) -> None:
    assert version_from_configure(text) == version


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("project('lxc', 'c',\n  version : '4.0.0',\n  license: 'LGPLv2+')\n", "4.0.0"),
        (
            "# (comment)\nproject(\n    'lxc',\n    'c',\n    version: '6.0.5',\n"
            "    default_options: ['b_lto=true', 'c_std=gnu11'],\n"
            "    meson_version: '>= 0.61')\nliblxc_version = '1.9.0'\n",
            "6.0.5",
        ),
        ("project('lxc', 'c')\nversion: '1.2.3'\n", None),
        ("project('lxc', 'c', version: run_command('v').stdout())\n", None),
        ("executable('x')\n", None),
    ],
)
def test_version_from_meson(text: str, version: str | None) -> None:
    assert version_from_meson(text) == version


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        (member("lxc/../../x"), "'..'"),
        (member("/etc/passwd"), "absolute path"),
        (member("lxc/etc", tarfile.SYMTYPE, "/etc"), "absolute path"),
        (member("lxc/up", tarfile.SYMTYPE, "../../up"), "out of the tree"),
        (member("lxc/hard", tarfile.LNKTYPE, "../outside"), "hard link out"),
        (member("lxc/null", tarfile.CHRTYPE), "device"),
        (member("lxc/disk", tarfile.BLKTYPE), "device"),
        (member("lxc/pipe", tarfile.FIFOTYPE), "device"),
    ],
)
def test_unsafe_members_are_named(info: tarfile.TarInfo, reason: str) -> None:
    problem = unsafe_member(info)
    assert problem is not None and reason in problem and info.name in problem


def test_safe_members_pass() -> None:
    members = [
        member("lxc-2.0.11", tarfile.DIRTYPE),
        member("lxc-2.0.11/src/lxc/start.c"),
        member("lxc-2.0.11/config/link", tarfile.SYMTYPE, "../src/lxc/start.c"),
        member("lxc-2.0.11/hard", tarfile.LNKTYPE, "lxc-2.0.11/src/lxc/start.c"),
    ]
    assert check_members(members) == []


def test_member_beneath_a_link_is_refused() -> None:
    # a/b points at the top; a/b/c would be written through it, one level higher than it looks.
    members = [member("a/b", tarfile.SYMTYPE, ".."), member("a/b/c", tarfile.SYMTYPE, "..")]
    problems = check_members(members)
    assert len(problems) == 1 and "beneath the symbolic link" in problems[0]


DSC = """\
Format: 3.0 (quilt)
Source: lxc
Version: 1:2.0.11-1
Checksums-Sha256:
 {digest} 2312 {name}
 {digest} 540 lxc_2.0.11-1.debian.tar.xz
"""


def test_dsc_files_lists_checksums() -> None:
    files = dsc_files(DSC.format(digest="a" * 64, name="lxc_2.0.11.orig.tar.gz"), "x.dsc")
    assert [(f.name, f.size, f.sha256) for f in files] == [
        ("lxc_2.0.11.orig.tar.gz", 2312, "a" * 64),
        ("lxc_2.0.11-1.debian.tar.xz", 540, "a" * 64),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (DSC.format(digest="a" * 64, name="../../etc/passwd"), "unsafe file name"),
        ("Format: 3.0 (native)\nSource: lxc\nVersion: 1\n", "no Checksums-Sha256"),
        ("Hello: world\n", "not a Debian source"),
    ],
)
def test_dsc_files_refuses(text: str, message: str) -> None:
    with pytest.raises(LxcpatchError, match=message):
        dsc_files(text, "x.dsc")
