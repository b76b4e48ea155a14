"""doctor: the pure checks on /proc content captured from a real machine, then each check made
to fail for real (capsh, an overlay mount, network namespaces, an unmounted /sys/fs/cgroup)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lxcpatch import capabilities
from lxcpatch.doctor import (
    CHECKS,
    CgroupPlace,
    DoctorRequest,
    Verdict,
    cgroup_places,
    check_apparmor,
    check_bridge,
    check_capabilities,
    check_cgroups,
    check_lxc_start,
    check_storage,
    doctor,
    mount_of,
    parse_mountinfo,
)
from lxcpatch.errors import UsageError
from tests.conftest import FIXTURES, needs_root

CAPTURED = FIXTURES / "proc-captured"


def captured(situation: str, name: str) -> str:
    return (CAPTURED / situation / "self" / name).read_text()


# --- pure checks over captured /proc -----------------------------------------------------------


def test_capabilities_of_this_machine_pass() -> None:
    result = check_capabilities(captured("machine", "status"))
    assert result.verdict is Verdict.PASS
    assert "cap_sys_admin: effective" in result.evidence


def test_capabilities_without_sys_admin_and_net_raw_fail() -> None:
    result = check_capabilities(captured("capsh-sys-admin-net-raw", "status"))
    assert result.verdict is Verdict.FAIL
    assert "cap_sys_admin, cap_net_raw" in result.summary
    assert result.fix is not None and "--cap-add SYS_ADMIN --cap-add NET_RAW" in result.fix


def test_capabilities_without_sys_boot_and_setpcap_warn_about_lxc_start() -> None:
    result = check_capabilities(captured("capsh-sys-boot-setpcap", "status"))
    assert result.verdict is Verdict.WARN
    assert "unpatched lxc-start will fail" in result.summary
    assert "cap_sys_boot: absent" in result.evidence
    assert result.fix is not None and "lxcpatch" in result.fix


def test_capabilities_unreadable() -> None:
    assert check_capabilities("Name: x\n").verdict is Verdict.FAIL


def test_capability_names() -> None:
    caps = capabilities.parse_status(captured("capsh-sys-boot-setpcap", "status"))
    assert caps is not None
    assert caps.missing("cap_sys_boot", "cap_setpcap", "cap_sys_admin") == [
        "cap_sys_boot",
        "cap_setpcap",
    ]
    assert capabilities.names(1 << 22 | 1 << 8) == {"cap_sys_boot", "cap_setpcap"}
    assert capabilities.names(1 << 63) == {"cap_63"}


@pytest.mark.parametrize(
    ("label", "verdict", "words"),
    [
        ("docker-default (enforce)\n", Verdict.WARN, "docker-default in enforce mode"),
        ("lxc-container-default-cgns (complain)", Verdict.PASS, "complain mode"),
        ("unconfined\n", Verdict.PASS, "profile unconfined in unconfined mode"),
        ("/usr/sbin/ntpd (enforce)", Verdict.WARN, "/usr/sbin/ntpd in enforce mode"),
        (None, Verdict.PASS, "no AppArmor"),
    ],
)
def test_apparmor(label: str | None, verdict: Verdict, words: str) -> None:
    result = check_apparmor(label, "/proc/self/attr/apparmor/current", enabled=True)
    assert result.verdict is verdict
    assert words in result.summary
    assert result.fix is not None or verdict is Verdict.PASS
    if verdict is Verdict.WARN:
        assert "flags=(attach_disconnected,mediate_deleted,complain)" in (result.fix or "")


def test_apparmor_label_of_another_module() -> None:
    result = check_apparmor("system_u:system_r:spc_t:s0", "/proc/self/attr/current", enabled=False)
    assert result.verdict is Verdict.PASS
    assert "another security module" in result.summary


def test_storage_on_this_machine_passes() -> None:
    result = check_storage(captured("machine", "mountinfo"), ["/var/lib/docker", "/var/lib/lxc"])
    assert result.verdict is Verdict.PASS
    assert result.evidence[0].startswith("/var/lib/docker: ext4 mounted at / ")


def test_storage_on_overlay_fails_by_longest_prefix() -> None:
    text = captured("overlay", "mountinfo")
    assert check_storage(text, ["/tmp/capture"]).verdict is Verdict.PASS
    result = check_storage(text, ["/var/lib/lxc", "/tmp/capture/var-lib-docker/sub"])
    assert result.verdict is Verdict.FAIL
    assert "/tmp/capture/var-lib-docker/sub is on overlay" in result.summary
    assert result.fix is not None and "tmpfs" in result.fix and "volume" in result.fix


def test_mountinfo_escapes_and_overmounts() -> None:
    text = (
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "2 1 0:40 / /srv/with\\040space rw - overlay overlay rw\n"
        "3 1 0:41 / /srv/with\\040space rw - tmpfs tmpfs rw\n"
        "4 1 0:42 / /srv/withx rw,nosuid shared:3 - aufs none rw\n"
    )
    mounts = parse_mountinfo(text)
    assert mounts[1].mount_point == "/srv/with space"
    found = mount_of(mounts, "/srv/with space/lxc")
    assert found is not None and found.fstype == "tmpfs"  # the later mount covers the earlier
    found = mount_of(mounts, "/srv/with")
    assert found is not None and found.fstype == "ext4"  # "/srv/withx" is no prefix of it


def test_cgroup_places_follow_this_process() -> None:
    mounts = parse_mountinfo(captured("machine", "mountinfo"))
    places = cgroup_places(mounts, captured("machine", "cgroup"))
    by_point = {p.mount.mount_point: p.folder for p in places}
    assert len(places) == 10
    own_memory = next(
        line.split(":", 2)[2]
        for line in captured("machine", "cgroup").splitlines()
        if ":memory:" in line
    )
    assert by_point["/sys/fs/cgroup/memory"] == "/sys/fs/cgroup/memory" + own_memory.rstrip("/")
    assert by_point["/sys/fs/cgroup/unified"] == "/sys/fs/cgroup/unified"


def _places(situation: str, writable: bool | list[bool]) -> list[CgroupPlace]:
    found = cgroup_places(
        parse_mountinfo(captured(situation, "mountinfo")), captured("machine", "cgroup")
    )
    flags = writable if isinstance(writable, list) else [writable] * len(found)
    return [CgroupPlace(p.mount, p.folder, w, "") for p, w in zip(found, flags, strict=True)]


def test_cgroups_verdicts() -> None:
    assert check_cgroups(_places("machine", True)).verdict is Verdict.PASS
    partly = check_cgroups(_places("machine", [True] * 9 + [False]))
    assert partly.verdict is Verdict.WARN
    assert "1 of 10" in partly.summary
    assert check_cgroups(_places("machine", False)).verdict is Verdict.FAIL
    unified = check_cgroups(_places("machine", True))
    assert any("LXC before 2.1" in e for e in unified.evidence)
    gone = check_cgroups(_places("no-cgroup", True))
    assert gone.verdict is Verdict.FAIL
    assert gone.fix is not None and "mount -t cgroup2 none /sys/fs/cgroup" in gone.fix


def test_bridge() -> None:
    assert check_bridge(["eth0", "lo"], []).verdict is Verdict.FAIL
    result = check_bridge(["br0", "eth0"], ["br0"])
    assert result.verdict is Verdict.PASS and "br0" in result.summary
    assert "ip link add lxcbr0 type bridge" in (check_bridge([], []).fix or "")


def test_lxc_start_weighs_capabilities() -> None:
    full = capabilities.parse_status(captured("machine", "status"))
    pair_gone = capabilities.parse_status(captured("capsh-sys-boot-setpcap", "status"))
    assert check_lxc_start("unpatched", "s", [], pair_gone).verdict is Verdict.FAIL
    assert check_lxc_start("unpatched", "s", [], full).verdict is Verdict.WARN
    assert check_lxc_start("patched", "s", [], pair_gone).verdict is Verdict.PASS
    assert check_lxc_start("not-needed", "s", [], pair_gone).verdict is Verdict.PASS
    assert check_lxc_start("unknown", "s", [], full).verdict is Verdict.WARN


def test_doctor_on_injected_proc_and_sys(tmp_path: Path) -> None:
    sys_root = tmp_path / "sys"
    for name in ("eth0", "lo", "lxcbr0"):
        (sys_root / "class/net" / name).mkdir(parents=True)
    (sys_root / "class/net/lxcbr0/bridge").mkdir()
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    report = doctor(
        DoctorRequest(
            proc=CAPTURED / "capsh-sys-admin-net-raw",
            sys=sys_root,
            root=root,
            only=("capabilities", "bridge", "lxc-start", "apparmor"),
        )
    )
    verdicts = {c.name: c.verdict for c in report.checks}
    assert verdicts == {
        "capabilities": Verdict.FAIL,
        "apparmor": Verdict.PASS,
        "bridge": Verdict.PASS,
        "lxc-start": Verdict.WARN,
    }
    assert [c.name for c in report.checks] == ["capabilities", "apparmor", "bridge", "lxc-start"]
    assert report.exit_code == 1
    assert report.to_json()["verdict"] == "fail"
    assert "failed: capabilities" in report.human()
    with pytest.raises(UsageError, match="unknown check bogus"):
        doctor(DoctorRequest(only=("bogus",)))


# --- the real thing ------------------------------------------------------------------------------


def lxcpatch(*args: str, prefix: tuple[str, ...] = ()) -> tuple[int, dict[str, Any], str]:
    """Run `lxcpatch ARGS` as a real process, after PREFIX (capsh, unshare, ip netns exec)."""
    if prefix and prefix[0] == "capsh":
        argv = [*prefix, f"--shell={sys.executable}", "--", "-m", "lxcpatch", *args]
    else:
        argv = [*prefix, sys.executable, "-m", "lxcpatch", *args]
    proc = subprocess.run(argv, text=True, capture_output=True, check=False, timeout=120)
    return proc.returncode, json.loads(proc.stdout), " ".join(proc.stderr.split())


def checks(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["checks"]}


@needs_root()
def test_doctor_on_this_machine() -> None:
    rc, doc, human = lxcpatch("doctor", "--json")
    found = checks(doc)
    assert list(found) == list(CHECKS)
    assert all(c["verdict"] in ("pass", "warn", "fail") and c["evidence"] for c in found.values())
    assert rc == (1 if any(c["verdict"] == "fail" for c in found.values()) else 0)
    has_bridge = any(Path(p).is_dir() for p in Path("/sys/class/net").glob("*/bridge"))
    assert found["bridge"]["verdict"] == ("pass" if has_bridge else "fail")
    assert (
        found["capabilities"]["verdict"]
        == check_capabilities(Path("/proc/self/status").read_text()).verdict.value
    )
    lxc_start = shutil.which("lxc-start")
    assert (found["lxc-start"]["summary"].startswith("no lxc-start")) == (lxc_start is None)
    for name in CHECKS:
        assert f" {name}: " in human


@needs_root()
def test_doctor_under_capsh_fails_capabilities() -> None:
    rc, doc, human = lxcpatch(
        "doctor",
        "--json",
        "--only",
        "capabilities",
        prefix=("capsh", "--drop=cap_sys_admin,cap_net_raw"),
    )
    assert rc == 1
    result = checks(doc)["capabilities"]
    assert result["verdict"] == "fail"
    assert "cap_sys_admin: absent" in result["evidence"]
    assert "--cap-add SYS_ADMIN --cap-add NET_RAW" in human

    rc, doc, _ = lxcpatch(
        "doctor",
        "--json",
        "--only",
        "capabilities",
        prefix=("capsh", "--drop=cap_sys_boot,cap_setpcap"),
    )
    assert (rc, checks(doc)["capabilities"]["verdict"]) == (0, "warn")


@needs_root()
def test_doctor_fails_storage_on_an_overlay(tmp_path: Path) -> None:
    for name in ("lower", "upper", "work", "merged"):
        (tmp_path / name).mkdir()
    options = f"lowerdir={tmp_path}/lower,upperdir={tmp_path}/upper,workdir={tmp_path}/work"
    # The overlay lives in a private mount namespace: it goes away with the process.
    script = f'mount -t overlay overlay -o {options} {tmp_path}/merged && exec "$@"'
    rc, doc, human = lxcpatch(
        "doctor",
        "--json",
        "--only",
        "storage",
        "--var-lib",
        str(tmp_path / "merged"),
        "--var-lib",
        str(tmp_path / "upper"),
        prefix=("unshare", "--mount", "sh", "-c", script, "sh"),
    )
    assert rc == 1
    result = checks(doc)["storage"]
    assert result["verdict"] == "fail"
    assert f"{tmp_path}/merged is on overlay" in result["summary"]
    assert "a tmpfs" in human
    rc, doc, _ = lxcpatch("doctor", "--json", "--only", "storage", "--var-lib", str(tmp_path))
    assert (rc, checks(doc)["storage"]["verdict"]) == (0, "pass")


@needs_root()
def test_doctor_bridge_in_network_namespaces() -> None:
    netns = f"lxcpatch-doctor-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        inside = ("ip", "netns", "exec", netns)
        rc, doc, human = lxcpatch("doctor", "--json", "--only", "bridge", prefix=inside)
        assert (rc, checks(doc)["bridge"]["verdict"]) == (1, "fail")
        assert "interfaces: lo" in checks(doc)["bridge"]["evidence"]
        assert "ip link add lxcbr0 type bridge" in human
        subprocess.run([*inside, "ip", "link", "add", "br0", "type", "bridge"], check=True)
        rc, doc, _ = lxcpatch("doctor", "--json", "--only", "bridge", prefix=inside)
        assert (rc, checks(doc)["bridge"]["verdict"]) == (0, "pass")
        assert checks(doc)["bridge"]["summary"] == "bridge: br0"
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=True)


@needs_root()
def test_doctor_fails_cgroups_when_unmounted() -> None:
    rc, doc, human = lxcpatch(
        "doctor",
        "--json",
        "--only",
        "cgroups",
        prefix=("unshare", "--mount", "sh", "-c", 'umount -l /sys/fs/cgroup && exec "$@"', "sh"),
    )
    assert rc == 1
    result = checks(doc)["cgroups"]
    assert result["verdict"] == "fail"
    assert result["summary"] == "no cgroup filesystem is mounted"
    assert "mount -t cgroup2 none /sys/fs/cgroup" in human
    rc, doc, _ = lxcpatch("doctor", "--json", "--only", "cgroups")
    assert checks(doc)["cgroups"]["verdict"] in ("pass", "warn")


def test_doctor_fails_lxc_start_when_unpatched_and_capless(tmp_path: Path) -> None:
    """An unpatched lxc-start on the root, and capabilities without CAP_SYS_BOOT/CAP_SETPCAP."""
    from tests.test_verify_files import build

    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES / "lxc-mini", tree)
    made = build(tree, tmp_path / "prefix")
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    shutil.copy2(made.plain_binary, root / "usr/bin/lxc-start")
    shutil.copy2(made.lib, root / "usr/lib/liblxc.so.1")
    report = doctor(
        DoctorRequest(proc=CAPTURED / "capsh-sys-boot-setpcap", root=root, only=("lxc-start",))
    )
    (result,) = report.checks
    assert result.verdict is Verdict.FAIL
    assert result.summary.startswith("/usr/bin/lxc-start: unpatched: it will fail here")
    assert report.exit_code == 1
