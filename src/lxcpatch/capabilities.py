"""Linux capability sets as /proc/PID/status shows them (CapEff, CapBnd, …), by name."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Bit numbers from <linux/capability.h>.
NAMES = (
    "cap_chown",
    "cap_dac_override",
    "cap_dac_read_search",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_linux_immutable",
    "cap_net_bind_service",
    "cap_net_broadcast",
    "cap_net_admin",
    "cap_net_raw",
    "cap_ipc_lock",
    "cap_ipc_owner",
    "cap_sys_module",
    "cap_sys_rawio",
    "cap_sys_chroot",
    "cap_sys_ptrace",
    "cap_sys_pacct",
    "cap_sys_admin",
    "cap_sys_boot",
    "cap_sys_nice",
    "cap_sys_resource",
    "cap_sys_time",
    "cap_sys_tty_config",
    "cap_mknod",
    "cap_lease",
    "cap_audit_write",
    "cap_audit_control",
    "cap_setfcap",
    "cap_mac_override",
    "cap_mac_admin",
    "cap_syslog",
    "cap_wake_alarm",
    "cap_block_suspend",
    "cap_audit_read",
    "cap_perfmon",
    "cap_bpf",
    "cap_checkpoint_restore",
)

_LINE = re.compile(r"^(Cap(?:Inh|Prm|Eff|Bnd|Amb)):\s*([0-9a-fA-F]+)\s*$", re.MULTILINE)


def names(mask: int) -> frozenset[str]:
    """The capability names whose bits are set in `mask` (unknown bits as cap_N)."""
    found = set()
    bit = 0
    while mask >> bit:
        if mask >> bit & 1:
            found.add(NAMES[bit] if bit < len(NAMES) else f"cap_{bit}")
        bit += 1
    return frozenset(found)


@dataclass(frozen=True)
class CapSets:
    """The masks of one process: effective, bounding, permitted (as read from its status)."""

    effective: int
    bounding: int
    permitted: int

    def has(self, name: str) -> bool:
        return name in names(self.effective)

    def bounded(self, name: str) -> bool:
        return name in names(self.bounding)

    def missing(self, *wanted: str) -> list[str]:
        """Those of `wanted` that are not in the effective set."""
        return [w for w in wanted if not self.has(w)]


def parse_status(text: str) -> CapSets | None:
    """CapSets from the text of /proc/PID/status, or None when it has no Cap lines."""
    fields = {m.group(1): int(m.group(2), 16) for m in _LINE.finditer(text)}
    if "CapEff" not in fields or "CapBnd" not in fields:
        return None
    return CapSets(
        effective=fields["CapEff"],
        bounding=fields["CapBnd"],
        permitted=fields.get("CapPrm", fields["CapEff"]),
    )
