"""Behaviour: a tiny lxc-start built from each fixture, run without CAP_SETPCAP.

Dropped CAP_SYS_BOOT already (capsh --drop=cap_setpcap,cap_sys_boot): the unpatched build fails
with its error message, the patched one runs the command. CAP_SYS_BOOT still there but no way
to drop it (capsh --drop=cap_setpcap): both fail, the patched one with the original error.
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
from tests.test_patch_support import copy_tree, fixtures

TOKEN = TOKENS["@cap-sys-boot"]
TOOLS_MISSING = [tool for tool in ("gcc", "capsh") if shutil.which(tool) is None]

pytestmark = [
    needs_root(),
    pytest.mark.skipif(bool(TOOLS_MISSING), reason=f"needs {', '.join(TOOLS_MISSING)}"),
]


def build(tree: Path, out: Path) -> Path:
    """The fixture's lxc-start (lxc-mini: its README's gcc line)."""
    if (tree / "src/lxc/tools/lxc_start.c").exists():
        sources = ["-DHAVE_LIBCAP=1", "-Isrc/lxc", "src/lxc/start.c", "src/lxc/tools/lxc_start.c"]
    else:
        sources = ["-Isrc", "-Isrc/lxc", "src/lxc/start.c", "src/lxc/lxc_start.c"]
    subprocess.run(
        ["gcc", "-Wall", "-Werror", *sources, "-o", str(out)],
        cwd=tree,
        check=True,
        capture_output=True,
    )
    return out


def under_capsh(drop: str, program: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["capsh", f"--drop={drop}", "--", "-c", 'exec "$@"', "sh", str(program), "echo", "ran"],
        text=True,
        capture_output=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    "name", ["lxc-mini", *(n for n in fixtures("found") if n.startswith("lxc-"))]
)
def test_patched_lxc_start_runs_where_the_capability_is_already_gone(
    name: str, tmp_path: Path
) -> None:
    tree = copy_tree(name, tmp_path)
    unpatched = build(tree, tmp_path / "lxc-start.unpatched")
    report = run_patch(Workspace(tmp_path / "build"), PatchRequest(trees=(str(tree),)))
    assert isinstance(report, PatchReport)
    assert report.trees[0].results[0].status is Status.PATCHED
    patched = build(tree, tmp_path / "lxc-start.patched")

    before = under_capsh("cap_setpcap,cap_sys_boot", unpatched)
    assert before.returncode != 0 and "ran" not in before.stdout
    assert "CAP_SYS_BOOT" in before.stderr and "Operation not permitted" in before.stderr

    after = under_capsh("cap_setpcap,cap_sys_boot", patched)
    assert (after.returncode, after.stdout) == (0, "ran\n"), after.stderr
    assert TOKEN in after.stderr

    for program in (unpatched, patched):
        kept = under_capsh("cap_setpcap", program)
        assert kept.returncode != 0 and "ran" not in kept.stdout, program.name
        assert "Operation not permitted" in kept.stderr and TOKEN not in kept.stderr
