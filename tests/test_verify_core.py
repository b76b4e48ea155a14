"""verify's pure core: scanning bytes, classifying copies, ld.so.conf, md5sums, paths in a root."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from lxcpatch.recipes import TOKENS
from lxcpatch.verify import (
    Findings,
    LiveOutcome,
    Status,
    classify,
    container_config,
    decide,
    expand_origin,
    installed_package,
    judge_live,
    leftovers,
    parse_help,
    parse_ld_so_conf,
    parse_md5sums,
    path_aliases,
    resolve_in_root,
    scan,
)

OLD = b"failed to remove CAP_SYS_BOOT capability"  # 0.7 - 2.0.8
NEW = (
    b"%s - Failed to remove the CAP_SYS_BOOT capability."  # 2.0.9 - 2.0.11, with SYSERROR's prefix
)
TOKEN = TOKENS["@cap-sys-boot"].encode()


def rodata(*strings: bytes) -> list[tuple[str, bytes]]:
    return [(".rodata", b"\0".join((b"", *strings, b"")))]


@pytest.mark.parametrize(
    "message", [OLD, NEW, OLD.upper(), b"Failed to remove CAP_SYS_BOOT capability"]
)
def test_every_era_of_the_message_is_unpatched(message: bytes) -> None:
    findings = scan(rodata(b"Dropped cap_sys_boot", message, b"other"))
    assert findings.status is Status.UNPATCHED
    assert findings.originals[0].text == message.decode()
    assert findings.originals[0].section == ".rodata"


def test_token_means_patched_even_beside_the_original_message() -> None:
    findings = scan(rodata(NEW, b"CAP_SYS_BOOT is already absent (" + TOKEN + b")"))
    assert findings.status is Status.PATCHED
    assert set(findings.tokens) == {"@cap-sys-boot"}
    assert findings.tokens["@cap-sys-boot"].text.endswith(TOKEN.decode() + ")")


def test_each_recipe_token_is_reported() -> None:
    drop = TOKENS["@cap-drops"].encode()
    findings = scan([(".rodata", b"\0" + TOKEN + b"\0"), (".data.rel.ro", b"x\0" + drop + b"\0")])
    assert findings.tokens["@cap-sys-boot"].section == ".rodata"
    assert findings.tokens["@cap-drops"].section == ".data.rel.ro"
    only_drops = scan([(".rodata", b"\0" + drop + b"\0")])
    # The cap-drops token alone does not say the CAP_SYS_BOOT drop was handled.
    assert only_drops.status is Status.NOT_NEEDED
    assert set(only_drops.tokens) == {"@cap-drops"}


def test_neither_is_not_needed_and_wording_must_match() -> None:
    assert (
        scan(rodata(b"Failed to remove %s capability", b"CAP_SYS_BOOT")).status is Status.NOT_NEEDED
    )


def test_classify_any_unpatched_copy_decides() -> None:
    patched = scan(rodata(TOKEN))
    unpatched = scan(rodata(OLD))
    neither = scan(rodata(b"lxc"))
    assert classify([patched, unpatched]) is Status.UNPATCHED
    assert classify([unpatched, patched]) is Status.UNPATCHED
    assert classify([neither, patched]) is Status.PATCHED
    assert classify([neither, neither]) is Status.NOT_NEEDED
    assert classify([]) is Status.UNKNOWN
    assert [s.exit_code for s in Status] == [0, 1, 0, 2]


def test_findings_are_frozen() -> None:
    findings = scan(rodata(OLD))
    assert isinstance(findings, Findings)
    with pytest.raises(AttributeError):
        findings.originals = ()  # type: ignore[misc]


def test_expand_origin() -> None:
    origin = PurePosixPath("/opt/lxc/bin")
    assert expand_origin("$ORIGIN/../lib", origin) == "/opt/lxc/bin/../lib"
    assert expand_origin("${ORIGIN}/lib", origin) == "/opt/lxc/bin/lib"
    assert expand_origin("/usr/lib/lxc", origin) == "/usr/lib/lxc"
    assert expand_origin("$LIB/lxc", origin) is None
    assert expand_origin("lib", origin) is None


def test_parse_ld_so_conf() -> None:
    text = (
        "# libc default configuration\n"
        "include /etc/ld.so.conf.d/*.conf\n"
        "/usr/local/lib  # local\n"
        "hwcap 1 nosegneg\n"
        "/opt/a:/opt/b, /opt/c\n"
        "/usr/X11R6/lib=libc5\n"
    )
    conf = parse_ld_so_conf(text)
    assert conf.includes == ("/etc/ld.so.conf.d/*.conf",)
    assert conf.dirs == ("/usr/local/lib", "/opt/a", "/opt/b", "/opt/c", "/usr/X11R6/lib")


def test_parse_md5sums_and_aliases() -> None:
    sums = parse_md5sums(
        "82b2c732f56fba3f2cf7010af9e9d2d9  usr/lib/x86_64-linux-gnu/liblxc.so.1.7.0\n"
        "BFA277C102982043FEB78DFD6FD6C8A6  usr/share/doc/liblxc1/NEWS.Debian.gz\n\n"
    )
    assert sums["usr/lib/x86_64-linux-gnu/liblxc.so.1.7.0"] == "82b2c732f56fba3f2cf7010af9e9d2d9"
    assert sums["usr/share/doc/liblxc1/NEWS.Debian.gz"] == "bfa277c102982043feb78dfd6fd6c8a6"
    assert path_aliases("/usr/lib/liblxc.so.1") == ["/usr/lib/liblxc.so.1", "/lib/liblxc.so.1"]
    assert path_aliases("/bin/lxc-start") == ["/bin/lxc-start", "/usr/bin/lxc-start"]
    assert path_aliases("/opt/x") == ["/opt/x"]


STATUS = """\
Package: liblxc1
Status: deinstall ok config-files
Architecture: i386
Version: 1:4.0.6-2

Package: liblxc1
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 1:5.0.2-1+deb12u4
Description: Linux Containers userspace tools (library)
 continuation line

Package: lxc
Status: install ok installed
Architecture: amd64
Version: 1:5.0.2-1+deb12u4
"""


def test_installed_package() -> None:
    assert installed_package(STATUS, "liblxc1", "amd64") == ("1:5.0.2-1+deb12u4", "amd64")
    assert installed_package(STATUS, "liblxc1", "i386") == ("1:4.0.6-2", "i386")
    assert installed_package(STATUS, "lxc", None) == ("1:5.0.2-1+deb12u4", "amd64")
    assert installed_package(STATUS, "lxd", None) is None


def test_resolve_in_root_keeps_symlinks_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/real.so").write_text("in root")
    (root / "lib").symlink_to("usr/lib")
    (root / "usr/lib/abs.so").symlink_to("/usr/lib/real.so")
    (root / "usr/lib/up.so").symlink_to("../../../../../../usr/lib/real.so")
    outside = tmp_path / "outside.so"
    outside.write_text("host")
    (root / "usr/lib/escape.so").symlink_to(outside)
    (root / "usr/lib/loop.so").symlink_to("loop.so")

    assert resolve_in_root(root, "/lib/abs.so") == PurePosixPath("/usr/lib/real.so")
    assert resolve_in_root(root, "/lib/up.so") == PurePosixPath("/usr/lib/real.so")
    # The host path exists, but not inside the root: not found rather than read from the host.
    assert resolve_in_root(root, "/usr/lib/escape.so") is None
    assert resolve_in_root(root, "/usr/lib/loop.so") is None
    assert resolve_in_root(root, "/usr/lib/missing.so") is None
    assert resolve_in_root(root, "/usr/lib/real.so/x") is None


@pytest.mark.parametrize(
    ("log", "code", "outcome"),
    [
        (
            "lxc-start 2026 ERROR lxc_start - start.c:do_start:1180 - Operation not permitted - "
            "Failed to remove the CAP_SYS_BOOT capability.",
            1,
            LiveOutcome.FAILED,
        ),
        (
            "lxc-start ERROR failed to remove CAP_SYS_BOOT capability - Operation not permitted",
            1,
            LiveOutcome.FAILED,
        ),
        (
            "INFO CAP_SYS_BOOT is already absent (lxcpatch:cap-sys-boot-tolerated)",
            0,
            LiveOutcome.PASSED,
        ),
        (
            "DEBUG lxc_start - start.c:do_start:1183 - Dropped the CAP_SYS_BOOT capability.",
            1,
            LiveOutcome.PASSED,
        ),
        ("DEBUG lxc_start - Dropped cap_sys_boot", 1, LiveOutcome.PASSED),
        ("DEBUG Not dropping CAP_SYS_BOOT or watching utmp.", 0, LiveOutcome.PASSED),
        ("INFO nothing about capabilities", 0, LiveOutcome.PASSED),
        ("ERROR cgfsng - Failed to create cgroup", 1, LiveOutcome.INCONCLUSIVE),
    ],
)
def test_judge_live(log: str, code: int, outcome: LiveOutcome) -> None:
    judged, evidence = judge_live(log, code)
    assert judged is outcome
    assert evidence


def test_parse_help() -> None:
    lxc2 = (
        "Usage: lxc-start --name=NAME\n  -F, --foreground\n  -o, --logfile=FILE\n"
        "  -l, --logpriority=LEVEL\n  -P, --lxcpath=PATH\n  -f, --rcfile=FILE\n"
    )
    options = parse_help(lxc2)
    assert options.is_lxc and options.foreground and options.lxcpath
    lxc07 = "  -d, --daemon\n  -o, --logfile=FILE\n  -l, --logpriority=LEVEL\n  -f, --rcfile=FILE\n"
    old = parse_help(lxc07)
    assert old.is_lxc and not old.foreground and not old.lxcpath
    assert not parse_help("execvp: --help: No such file or directory").is_lxc


def test_container_config_keys_by_era() -> None:
    assert "lxc.utsname = c1\n" in container_config("c1", new_keys=False)
    assert "lxc.network.type = empty\n" in container_config("c1", new_keys=False)
    assert "lxc.uts.name = c1\n" in container_config("c1", new_keys=True)
    assert "lxc.net.0.type = empty\n" in container_config("c1", new_keys=True)


def test_leftovers_only_new_and_ours() -> None:
    cg = Path("/sys/fs/cgroup")
    before = {cg / "cpu", cg / "cpu/system", cg / "memory", cg / "memory/lxc", cg / "memory/other"}
    after = before | {
        cg / "cpu/lxc",
        cg / "cpu/lxc/c1",
        cg / "cpu/lxc/c1/ns",
        cg / "memory/lxc/c1",
        cg / "cpu/someone-else",
        cg / "pids/lxc.pivot",
    }
    found = leftovers(before, after, "c1")
    assert found == sorted(found, key=lambda p: len(p.parts), reverse=True)
    assert set(found) == {
        cg / "cpu/lxc",
        cg / "cpu/lxc/c1",
        cg / "cpu/lxc/c1/ns",
        cg / "memory/lxc/c1",
        cg / "pids/lxc.pivot",
    }


def test_resolve_in_root_counts_symlinks(tmp_path: Path) -> None:
    chain = tmp_path / "root"
    chain.mkdir()
    (chain / "l0").write_text("end")
    for i in range(1, 45):
        os.symlink(f"l{i - 1}", chain / f"l{i}")
    assert resolve_in_root(chain, "/l40") == PurePosixPath("/l0")
    assert resolve_in_root(chain, "/l44") is None


def test_decide_which_copies_run() -> None:
    patched, unpatched, neither = scan(rodata(TOKEN)), scan(rodata(OLD)), scan(rodata(b"lxc"))
    # Upstream: lxc-start without the code, liblxc with it.
    assert decide(neither, patched, needs_liblxc=True) == (Status.PATCHED, None)
    assert decide(neither, unpatched, needs_liblxc=True) == (Status.UNPATCHED, None)
    # Debian-like: both carry the code; one unpatched copy is enough to fail.
    assert decide(unpatched, patched, needs_liblxc=True)[0] is Status.UNPATCHED
    # The library is missing: unknown, unless lxc-start's own copy already fails.
    assert decide(patched, None, needs_liblxc=True)[0] is Status.UNKNOWN
    assert decide(unpatched, None, needs_liblxc=True)[0] is Status.UNPATCHED
    # A statically linked lxc-start is judged alone; a program with no code is no lxc-start.
    assert decide(patched, None, needs_liblxc=False) == (Status.PATCHED, None)
    assert decide(neither, None, needs_liblxc=False)[0] is Status.UNKNOWN
    # --lib: a library that is not liblxc and has no code says nothing.
    assert decide(None, neither, needs_liblxc=False, is_liblxc=True)[0] is Status.NOT_NEEDED
    status, why = decide(None, neither, needs_liblxc=False, is_liblxc=False)
    assert status is Status.UNKNOWN and why is not None and "not liblxc" in why
    assert decide(None, None, needs_liblxc=False)[0] is Status.UNKNOWN
