"""Behaviour of `@cap-drops`: each era's conf.c and attach.c built into a tiny program
(tests/fixtures/eras/lxc_caps.c) that drops capabilities the way lxc.cap.drop, lxc.cap.keep and
lxc-attach do, then runs a command; run without CAP_SETPCAP.

The capabilities to drop are already gone: the unpatched build fails with its error message, the
patched one runs the command. A capability to drop is still there but cannot be dropped: both
fail, the patched one with the original message and errno.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lxcpatch.patch import PatchReport, PatchRequest, Status, run_patch
from lxcpatch.recipes import TOKENS
from lxcpatch.workspace import Workspace
from tests.conftest import needs_root
from tests.test_patch_support import DROPS, ERAS, copy_tree

TOKEN = TOKENS["@cap-drops"]
TOOLS_MISSING = [tool for tool in ("gcc", "capsh") if shutil.which(tool) is None]
DROPPED = ("sys_module", "sys_time", "mknod")  # as in `lxc.cap.drop = sys_module sys_time mknod`
KEPT = {"sys_admin": 21, "net_raw": 13}  # `lxc.cap.keep = sys_admin net_raw`: all else goes

pytestmark = [
    needs_root(),
    pytest.mark.skipif(bool(TOOLS_MISSING), reason=f"needs {', '.join(TOOLS_MISSING)}"),
]


def build(tree: Path, out: Path) -> Path:
    """The tree's lxc-caps: its conf.c (and attach.c, where the era has one) and the shared main."""
    sources = ["src/lxc/conf.c", str(ERAS / "lxc_caps.c")]
    if (tree / "src/lxc/attach.c").exists():
        sources[1:1] = ["-DFIXTURE_ATTACH", "src/lxc/attach.c"]
    subprocess.run(
        ["gcc", "-Wall", "-Werror", "-Isrc", "-Isrc/lxc", *sources, "-o", str(out)],
        cwd=tree,
        check=True,
        capture_output=True,
    )
    return out


def under_capsh(drop: str, program: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["capsh", f"--drop={drop}", "--", "-c", 'exec "$@"', "sh", str(program), *args],
        text=True,
        capture_output=True,
        timeout=30,
        check=False,
    )


def _all_but(kept: set[int]) -> str:
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    return ",".join(str(cap) for cap in range(last + 1) if cap not in kept)


@pytest.mark.parametrize("name", sorted(n for n in DROPS if n.startswith("lxc-")))
def test_patched_drops_run_where_the_capabilities_are_already_gone(
    name: str, tmp_path: Path
) -> None:
    tree = copy_tree(name, tmp_path)
    unpatched = build(tree, tmp_path / "lxc-caps.unpatched")
    series = tmp_path / "series"
    series.write_text("@cap-sys-boot\n@cap-drops\n")
    report = run_patch(
        Workspace(tmp_path / "build"), PatchRequest(trees=(str(tree),), series=series)
    )
    assert isinstance(report, PatchReport)
    assert report.trees[0].results[1].status is Status.PATCHED
    patched = build(tree, tmp_path / "lxc-caps.patched")

    modes = ["drop"]
    if name != "lxc-0.7.5":  # lxc.cap.keep came with 1.0, like the attach drop (0.8)
        modes += ["keep", "attach"]
    for mode in modes:
        names = DROPPED if mode == "drop" else tuple(KEPT)
        command = (mode, *names, "--", "echo", "ran")
        gone = (
            "cap_setpcap," + ",".join(f"cap_{n}" for n in DROPPED)
            if mode == "drop"
            else _all_but(set(KEPT.values()))
        )

        before = under_capsh(gone, unpatched, *command)
        assert before.returncode != 0 and "ran" not in before.stdout, (mode, before.stderr)
        assert "Operation not permitted" in before.stderr and TOKEN not in before.stderr

        after = under_capsh(gone, patched, *command)
        assert (after.returncode, after.stdout) == (0, "ran\n"), (mode, after.stderr)
        assert f"{TOKEN}: capability 16 is already absent" in after.stderr or mode != "drop"
        assert after.stderr.count(TOKEN) >= len(names), after.stderr

        # CAP_SETPCAP gone, the capabilities to drop still there: the drop fails for real, and
        # the original message reports the drop's own errno, not PR_CAPBSET_READ's.
        for program in (unpatched, patched):
            kept = under_capsh("cap_setpcap", program, *command)
            assert kept.returncode != 0 and "ran" not in kept.stdout, (mode, program.name)
            assert "Operation not permitted" in kept.stderr, kept.stderr
            assert TOKEN not in kept.stderr
