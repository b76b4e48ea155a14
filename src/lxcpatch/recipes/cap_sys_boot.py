"""`@cap-sys-boot`: lxc-start tolerates a CAP_SYS_BOOT that is already out of the bounding set.

LXC 0.5 to 2.0.11 drop CAP_SYS_BOOT when lxc-start starts a container, with a call that needs
CAP_SETPCAP; inside Docker or another container that fails although CAP_SYS_BOOT is long gone.
"""

from __future__ import annotations

from pathlib import Path

from lxcpatch.locate import START_C, LocateResult, Site, cap_sys_boot, find_sites
from lxcpatch.recipes import TOKENS, Recipe, tolerate

NAME = "@cap-sys-boot"
TOKEN = TOKENS[NAME]
# LXC 0.1 to 0.4 kept the start code in src/liblxc/ (and dropped nothing).
CANDIDATES = (START_C, "src/liblxc/start.c")


def targets(tree: Path) -> list[str]:
    """The start code of the tree: the first candidate that exists."""
    return [name for name in CANDIDATES if (tree / name).is_file()][:1]


def locate(source: bytes, file: str = START_C) -> LocateResult:
    return find_sites(source, select=cap_sys_boot, single=True, file=file, what="CAP_SYS_BOOT")


def message(site: Site) -> tolerate.LogLine:
    return tolerate.LogLine(
        f"{TOKEN}: CAP_SYS_BOOT is already absent from the bounding set; continuing"
    )


def edits(found: LocateResult, source: bytes) -> list[tolerate.Edit]:
    """The tolerant rewrite of a FOUND result's one site, plus the PR_CAPBSET_READ fallback."""
    return tolerate.edits(source, [found.site], found.read_fallback, message)


def render(found: LocateResult, source: bytes) -> bytes:
    return tolerate.apply(source, edits(found, source))


RECIPE = Recipe(
    name=NAME,
    token=TOKEN,
    summary="lxc-start: tolerate CAP_SYS_BOOT already missing from the bounding set",
    explanation=(
        "Dropping CAP_SYS_BOOT from the bounding set needs CAP_SETPCAP, which a\n"
        "container (Docker, or LXC nested in LXC) usually lacks; lxc-start then\n"
        "aborts although CAP_SYS_BOOT is already gone. When the drop fails, ask\n"
        "PR_CAPBSET_READ: if CAP_SYS_BOOT is not in the bounding set, log that\n"
        f"({TOKEN}) and continue; otherwise keep the original\n"
        "error path unchanged."
    ),
    targets=targets,
    locate=locate,
    edits=edits,
    render=render,
)
