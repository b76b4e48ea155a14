"""doctor: can this container run containers? Six checks, each pass / warn / fail with a fix.

Every check is a pure function over the text it needs (/proc/self/status, mountinfo, …); the
edge reads those files from injectable proc and sys roots so that tests can hand in captured ones.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxcpatch import capabilities
from lxcpatch.capabilities import CapSets
from lxcpatch.errors import LxcpatchError, UsageError

CHECKS = ("capabilities", "apparmor", "storage", "cgroups", "bridge", "lxc-start")
DEFAULT_VAR_LIB = (Path("/var/lib/docker"), Path("/var/lib/lxc"))
UNION_FILESYSTEMS = {"overlay", "overlayfs", "aufs", "fuse.fuse-overlayfs", "unionfs"}


class Verdict(enum.Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict, what it read, and what to do about it."""

    name: str
    verdict: Verdict
    summary: str
    evidence: tuple[str, ...] = ()
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "evidence": list(self.evidence),
            "fix": self.fix,
        }


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[CheckResult, ...]

    @property
    def exit_code(self) -> int:
        return 1 if any(c.verdict is Verdict.FAIL for c in self.checks) else 0

    def to_json(self) -> dict[str, Any]:
        verdicts = {c.verdict for c in self.checks}
        worst = next((v for v in (Verdict.FAIL, Verdict.WARN) if v in verdicts), Verdict.PASS)
        return {"verdict": worst.value, "checks": [c.to_json() for c in self.checks]}

    def human(self) -> str:
        lines = []
        for check in self.checks:
            lines.append(f"{check.verdict.value.upper():<4} {check.name}: {check.summary}")
            lines.extend(f"       {e}" for e in check.evidence)
            if check.fix and check.verdict is not Verdict.PASS:
                lines.append(f"       fix: {check.fix}")
        failed = [c.name for c in self.checks if c.verdict is Verdict.FAIL]
        lines.append(f"failed: {', '.join(failed)}" if failed else "nothing failed")
        return "\n".join(lines)


# --- 1. capabilities


def check_capabilities(status_text: str) -> CheckResult:
    """CAP_SYS_ADMIN and CAP_NET_RAW are needed; CAP_SYS_BOOT with CAP_SETPCAP decide lxc-start."""
    caps = capabilities.parse_status(status_text)
    if caps is None:
        return CheckResult(
            "capabilities",
            Verdict.FAIL,
            "no CapEff/CapBnd lines in /proc/self/status",
            fix="run on Linux with /proc mounted",
        )
    evidence = [f"CapEff {caps.effective:#018x}", f"CapBnd {caps.bounding:#018x}"]
    for cap in ("cap_sys_admin", "cap_net_raw", "cap_setpcap", "cap_sys_boot"):
        where = "effective" if caps.has(cap) else "bounding only" if caps.bounded(cap) else "absent"
        evidence.append(f"{cap}: {where}")
    missing = caps.missing("cap_sys_admin", "cap_net_raw")
    pair_missing = not caps.has("cap_sys_boot") and not caps.has("cap_setpcap")
    if pair_missing:
        evidence.append(
            "without CAP_SYS_BOOT and CAP_SETPCAP an unpatched lxc-start (LXC 0.7 - 2.0) fails "
            "with 'failed to remove CAP_SYS_BOOT capability'"
        )
    if missing:
        return CheckResult(
            "capabilities",
            Verdict.FAIL,
            f"missing {', '.join(missing)} (namespaces need CAP_SYS_ADMIN, iptables CAP_NET_RAW)",
            tuple(evidence),
            fix="start this container with those capabilities: docker run --cap-add SYS_ADMIN "
            "--cap-add NET_RAW (or --privileged); in LXC remove them from lxc.cap.drop",
        )
    if pair_missing:
        return CheckResult(
            "capabilities",
            Verdict.WARN,
            "CAP_SYS_BOOT and CAP_SETPCAP are both missing: an unpatched lxc-start will fail",
            tuple(evidence),
            fix="use an lxc-start patched by lxcpatch (lxcpatch fetch patch build, then install "
            "build/debs/<tree>/*.deb), or add a capability: docker run --cap-add SETPCAP",
        )
    return CheckResult(
        "capabilities", Verdict.PASS, "CAP_SYS_ADMIN and CAP_NET_RAW are there", tuple(evidence)
    )


# --- 2. AppArmor

_APPARMOR_LABEL = re.compile(r"^(?P<profile>.+?)(?: \((?P<mode>[a-z_-]+)\))?$")


def check_apparmor(label: str | None, source: str, enabled: bool) -> CheckResult:
    """The current process's AppArmor profile and mode: enforce warns."""
    fix = (
        "run the container's profile in complain mode: add "
        "flags=(attach_disconnected,mediate_deleted,complain) to the profile and reload it "
        "(apparmor_parser -r FILE), or start the container unconfined "
        "(docker run --security-opt apparmor=unconfined; LXC: lxc.apparmor.profile = unconfined)"
    )
    if label is None or not label.strip():
        return CheckResult(
            "apparmor",
            Verdict.PASS,
            "no AppArmor: nothing confines nested containers",
            (f"{source}: not readable",),
        )
    text = label.strip().rstrip("\0").strip()
    if not enabled and source.endswith("/attr/current"):
        return CheckResult(
            "apparmor",
            Verdict.PASS,
            "no AppArmor (the label belongs to another security module)",
            (f"{source}: {text}",),
        )
    match = _APPARMOR_LABEL.match(text)
    profile = match.group("profile") if match else text
    mode = (match.group("mode") if match else None) or (
        "unconfined" if profile == "unconfined" else "enforce"
    )
    evidence = (f"{source}: {text}",)
    if mode in ("unconfined", "complain"):
        return CheckResult(
            "apparmor", Verdict.PASS, f"profile {profile} in {mode} mode", evidence, fix
        )
    return CheckResult(
        "apparmor",
        Verdict.WARN,
        f"profile {profile} in {mode} mode: it may deny the mounts nested containers make",
        evidence,
        fix,
    )


# --- 3. storage


@dataclass(frozen=True)
class Mount:
    """One line of /proc/PID/mountinfo."""

    mount_point: str
    root: str
    fstype: str
    source: str
    options: frozenset[str]
    super_options: frozenset[str] = frozenset()


def _unescape(field_text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field_text)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a mountinfo file, in file order (later ones cover earlier ones)."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        tail = right.split()
        if not sep or len(fields) < 6 or len(tail) < 2:
            continue
        mounts.append(
            Mount(
                mount_point=_unescape(fields[4]),
                root=_unescape(fields[3]),
                fstype=tail[0],
                source=_unescape(tail[1]),
                options=frozenset(fields[5].split(",")),
                super_options=frozenset(tail[2].split(",")) if len(tail) > 2 else frozenset(),
            )
        )
    return mounts


def mount_of(mounts: Sequence[Mount], path: str) -> Mount | None:
    """The mount a path lives on: the longest mount-point prefix, the last mounted on a tie."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.mount_point.rstrip("/") or "/"
        if (path == point or point == "/" or path.startswith(point + "/")) and (
            best is None or len(point) >= len(best.mount_point.rstrip("/") or "/")
        ):
            best = mount
    return best


def check_storage(mountinfo_text: str, paths: Sequence[str]) -> CheckResult:
    """The filesystem under each engine folder: a union filesystem (overlay, aufs) fails."""
    mounts = parse_mountinfo(mountinfo_text)
    evidence = []
    bad = []
    for path in paths:
        mount = mount_of(mounts, path)
        if mount is None:
            evidence.append(f"{path}: no mount found")
            continue
        evidence.append(f"{path}: {mount.fstype} mounted at {mount.mount_point} ({mount.source})")
        if mount.fstype in UNION_FILESYSTEMS:
            bad.append(f"{path} is on {mount.fstype}")
    if bad:
        return CheckResult(
            "storage",
            Verdict.FAIL,
            f"{'; '.join(bad)}: a union filesystem cannot hold the nested engine's layers",
            tuple(evidence),
            fix="put a real filesystem there: a volume (docker run -v NAME:"
            + (paths[0] if paths else "/var/lib/lxc")
            + "), a bind mount of a host folder, or a tmpfs (mount -t tmpfs tmpfs FOLDER)",
        )
    return CheckResult(
        "storage", Verdict.PASS, "no engine folder is on a union filesystem", tuple(evidence)
    )


# --- 4. cgroups


@dataclass(frozen=True)
class CgroupPlace:
    """A cgroup hierarchy mounted here and this process's own folder in it."""

    mount: Mount
    folder: str
    writable: bool = False
    controllers: str | None = None


def cgroup_places(mounts: Sequence[Mount], self_cgroup_text: str) -> list[CgroupPlace]:
    """Each cgroup mount with this process's own folder in it (from /proc/self/cgroup)."""
    own: dict[str, str] = {}
    for line in self_cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            key = "cgroup2" if parts[0] == "0" and not parts[1] else parts[1]
            own[key] = parts[2]
    places = []
    for mount in mounts:
        if mount.fstype not in ("cgroup", "cgroup2"):
            continue
        if mount.fstype == "cgroup2":
            path = own.get("cgroup2", "/")
        else:
            # v1: the hierarchy whose controllers (or name=) this mount's superblock options list.
            path = next(
                (
                    p
                    for names, p in own.items()
                    if names != "cgroup2" and set(names.split(",")) <= mount.super_options
                ),
                "/",
            )
        inside = path if mount.root == "/" else path.removeprefix(mount.root) or "/"
        folder = mount.mount_point.rstrip("/") + (inside if inside != "/" else "")
        places.append(CgroupPlace(mount, folder))
    return places


def check_cgroups(places: Sequence[CgroupPlace]) -> CheckResult:
    """/sys/fs/cgroup is mounted (cgroup2 or v1 hierarchies) and this process's cgroups writable."""
    fix_mount = (
        "mount the cgroup filesystem: mount -t cgroup2 none /sys/fs/cgroup (cgroup2 hosts), or "
        "start this container with the host's cgroups: docker run --cgroupns=host "
        "-v /sys/fs/cgroup:/sys/fs/cgroup:rw (or --privileged); in LXC: lxc.mount.auto = cgroup:rw"
    )
    if not places:
        return CheckResult(
            "cgroups",
            Verdict.FAIL,
            "no cgroup filesystem is mounted",
            ("/proc/self/mountinfo: no cgroup or cgroup2 mount",),
            fix_mount,
        )
    evidence = []
    for place in places:
        mode = "ro" if "ro" in place.mount.options else "rw"
        state = "writable" if place.writable else "not writable"
        line = f"{place.mount.fstype} at {place.mount.mount_point} ({mode}); {place.folder} {state}"
        if place.mount.fstype == "cgroup2" and place.controllers is not None:
            line += f"; controllers: {place.controllers or 'none'}"
        evidence.append(line)
        if place.mount.fstype == "cgroup2" and place.mount.mount_point != "/sys/fs/cgroup":
            # Measured with LXC 2.0.11 on a hybrid host: it fails to enable the unified
            # hierarchy's controllers and gives up creating the container's cgroup.
            evidence.append(
                f"{place.mount.mount_point} is a cgroup2 hierarchy beside the v1 ones: LXC before "
                "2.1 fails to create its cgroup there unless run in a mount namespace without it "
                "(verify --live does so)"
            )
    writable = [p for p in places if p.writable and "ro" not in p.mount.options]
    if not writable:
        return CheckResult(
            "cgroups",
            Verdict.FAIL,
            "cgroups are mounted but none is writable here",
            tuple(evidence),
            fix_mount.replace("mount the cgroup filesystem", "mount them read-write"),
        )
    if len(writable) < len(places):
        return CheckResult(
            "cgroups",
            Verdict.WARN,
            f"{len(places) - len(writable)} of {len(places)} cgroup hierarchies are not writable",
            tuple(evidence),
            fix_mount.replace("mount the cgroup filesystem", "mount them read-write"),
        )
    kind = "cgroup2" if all(p.mount.fstype == "cgroup2" for p in places) else "cgroup v1"
    return CheckResult(
        "cgroups", Verdict.PASS, f"{kind} mounted and writable", tuple(evidence), fix_mount
    )


# --- 5. bridge


def check_bridge(interfaces: Sequence[str], bridges: Sequence[str]) -> CheckResult:
    """Some network interface is a bridge for the nested containers' veth ends."""
    evidence = (f"interfaces: {', '.join(interfaces) or 'none'}",)
    fix = (
        "create a bridge: ip link add lxcbr0 type bridge && ip link set lxcbr0 up "
        "(LXC's lxc-net service makes lxcbr0 with an address and DHCP), "
        "or give nested containers lxc.net.0.type = empty or none"
    )
    if bridges:
        return CheckResult("bridge", Verdict.PASS, f"bridge: {', '.join(bridges)}", evidence, fix)
    return CheckResult("bridge", Verdict.FAIL, "no network interface is a bridge", evidence, fix)


# --- 6. lxc-start


def check_lxc_start(
    status: str, summary: str, evidence: Sequence[str], caps: CapSets | None
) -> CheckResult:
    """The verdict of verify on this root, weighed against this container's capabilities."""
    fix = (
        "install an lxc-start patched by lxcpatch: lxcpatch fetch patch build, then "
        "dpkg -i build/debs/<tree>/*.deb; check it with lxcpatch verify --live"
    )
    if status in ("patched", "not-needed"):
        return CheckResult("lxc-start", Verdict.PASS, summary, tuple(evidence), fix)
    if status == "unpatched":
        if caps is not None and not caps.has("cap_sys_boot") and not caps.has("cap_setpcap"):
            return CheckResult(
                "lxc-start",
                Verdict.FAIL,
                summary + ": it will fail here, CAP_SYS_BOOT and CAP_SETPCAP are missing",
                tuple(evidence),
                fix,
            )
        return CheckResult(
            "lxc-start",
            Verdict.WARN,
            summary + ": it fails in a container without CAP_SYS_BOOT and CAP_SETPCAP",
            tuple(evidence),
            fix,
        )
    return CheckResult(
        "lxc-start",
        Verdict.WARN,
        summary,
        tuple(evidence),
        "install LXC (apt-get install lxc) or lxcpatch's packages, then run doctor again",
    )


# --- the edge


@dataclass(frozen=True)
class DoctorRequest:
    only: tuple[str, ...] = ()
    var_lib: tuple[Path, ...] = ()
    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    root: Path = Path("/")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _apparmor(request: DoctorRequest) -> CheckResult:
    enabled = (request.sys / "module/apparmor").is_dir()
    for rel in ("self/attr/apparmor/current", "self/attr/current"):
        source = request.proc / rel
        if source.exists():
            return check_apparmor(_read(source), str(source), enabled)
    return check_apparmor(None, str(request.proc / "self/attr/current"), enabled)


def _storage(request: DoctorRequest) -> CheckResult:
    paths = request.var_lib or DEFAULT_VAR_LIB
    text = _read(request.proc / "self/mountinfo") or ""
    return check_storage(text, [os.path.realpath(p) for p in paths])


def _cgroups(request: DoctorRequest) -> CheckResult:
    mounts = parse_mountinfo(_read(request.proc / "self/mountinfo") or "")
    places = []
    for place in cgroup_places(mounts, _read(request.proc / "self/cgroup") or ""):
        folder = request.root / place.folder.lstrip("/")
        controllers = (
            _read(folder / "cgroup.controllers") if place.mount.fstype == "cgroup2" else None
        )
        places.append(
            CgroupPlace(
                place.mount,
                place.folder,
                writable=folder.is_dir() and os.access(folder, os.W_OK),
                controllers=controllers.strip() if controllers is not None else None,
            )
        )
    return check_cgroups(places)


def _bridge(request: DoctorRequest) -> CheckResult:
    net = request.sys / "class/net"
    interfaces = sorted(p.name for p in net.iterdir()) if net.is_dir() else []
    bridges = [name for name in interfaces if (net / name / "bridge").is_dir()]
    return check_bridge(interfaces, bridges)


def _lxc_start(request: DoctorRequest) -> CheckResult:
    from lxcpatch import verify

    caps = capabilities.parse_status(_read(request.proc / "self/status") or "")
    try:
        report = verify.verify(verify.VerifyRequest(root=request.root))
    except LxcpatchError as exc:
        return CheckResult("lxc-start", Verdict.WARN, f"verify failed: {exc.message}", (), exc.hint)
    where = report.lxc_start.path if report.lxc_start else f"no lxc-start on {request.root}"
    version = f" {report.version}" if report.version else ""
    summary = f"{where}{version}: {report.status.value}"
    return check_lxc_start(report.status.value, summary, report.evidence, caps)


RUNNERS: Mapping[str, Callable[[DoctorRequest], CheckResult]] = {
    "capabilities": lambda r: check_capabilities(_read(r.proc / "self/status") or ""),
    "apparmor": _apparmor,
    "storage": _storage,
    "cgroups": _cgroups,
    "bridge": _bridge,
    "lxc-start": _lxc_start,
}


def doctor(request: DoctorRequest) -> DoctorReport:
    """Run the checks the request names (all by default), in the documented order."""
    unknown = [name for name in request.only if name not in CHECKS]
    if unknown:
        raise UsageError(
            f"unknown check {', '.join(unknown)}", hint=f"choose from: {', '.join(CHECKS)}"
        )
    chosen = [name for name in CHECKS if not request.only or name in request.only]
    return DoctorReport(tuple(RUNNERS[name](request) for name in chosen))
