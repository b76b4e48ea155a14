"""`@cap-drops`: every bounding-set drop in LXC tolerates a capability that is already gone.

`lxc.cap.drop` and `lxc.cap.keep` (src/lxc/conf.c) and lxc-attach (src/lxc/attach.c) drop
capabilities from the bounding set with the same `prctl(PR_CAPBSET_DROP, …)` that needs
CAP_SETPCAP, in every release up to today's. A container started with only the capabilities
nesting needs cannot start a nested container whose configuration drops capabilities, although
each one is already absent. This recipe rewrites every such drop in the C files under src/lxc/
the same tolerant way as `@cap-sys-boot`, except the CAP_SYS_BOOT drop of the start code, which
is `@cap-sys-boot`'s.

A drop it cannot rewrite safely (its capability expression would act when evaluated again, its
result is not tested, …) is left as it is and named with the reason; the others are rewritten.
"""

from __future__ import annotations

from pathlib import Path

from lxcpatch.locate import LocateResult, Site, cap_sys_boot, find_sites
from lxcpatch.recipes import TOKENS, Recipe, tolerate
from lxcpatch.recipes import cap_sys_boot as sys_boot_recipe

NAME = "@cap-drops"
TOKEN = TOKENS[NAME]
SOURCE_DIRS = ("src/lxc", "src/liblxc")  # LXC 0.1 - 0.4 kept the library in src/liblxc/


def targets(tree: Path) -> list[str]:
    """Every C file under the library's source folder, in a stable order."""
    for folder in SOURCE_DIRS:
        if (tree / folder).is_dir():
            found = (p for p in (tree / folder).rglob("*.c") if p.is_file())
            return sorted(p.relative_to(tree).as_posix() for p in found)
    return []


def locate(source: bytes, file: str) -> LocateResult:
    """Every drop in `file` but the one `@cap-sys-boot` rewrites (CAP_SYS_BOOT in start.c)."""
    theirs = file in sys_boot_recipe.CANDIDATES

    def mine(site: Site) -> bool:
        return not (theirs and cap_sys_boot(site))

    what = "a capability other than @cap-sys-boot's CAP_SYS_BOOT" if theirs else "a capability"
    return find_sites(source, select=mine, single=False, partial=True, file=file, what=what)


def message(site: Site) -> tolerate.LogLine:
    if site.capability is None:  # a rewritable site always names its capability
        raise ValueError(f"the drop at line {site.line} names no capability")
    return tolerate.LogLine(
        f"{TOKEN}: capability ",
        number=site.capability,
        after=" is already absent from the bounding set; continuing",
    )


def edits(found: LocateResult, source: bytes) -> list[tolerate.Edit]:
    """The tolerant rewrite of every site a FOUND result holds, plus the READ fallback."""
    return tolerate.edits(source, found.sites, found.read_fallback, message)


def render(found: LocateResult, source: bytes) -> bytes:
    return tolerate.apply(source, edits(found, source))


RECIPE = Recipe(
    name=NAME,
    token=TOKEN,
    summary="tolerate capabilities already missing from the bounding set",
    explanation=(
        "lxc.cap.drop, lxc.cap.keep and lxc-attach drop capabilities from the\n"
        "bounding set, which needs CAP_SETPCAP; a container started with only the\n"
        "capabilities nesting needs lacks it, so a nested container whose\n"
        "configuration drops capabilities fails to start although each one is\n"
        "already gone. When a drop fails, ask PR_CAPBSET_READ: if the capability\n"
        f"is not in the bounding set, log that ({TOKEN})\n"
        "and continue; otherwise keep the original error path unchanged."
    ),
    targets=targets,
    locate=locate,
    edits=edits,
    render=render,
    partial=True,
)
