"""`lxcpatch deps`: apt-get for the tree's flavor, run for real in simulation (--dry-run)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from lxcpatch.recipes.builddeps import upstream_builddeps
from tests.conftest import FIXTURES, CliRunner


def _git_tree(workdir: Path, name: str, source: Path) -> Path:
    """A tree in the workspace the way fetch leaves it (a git repository), made by hand so that
    these tests do not depend on the fetch stage; build's own tests go through the real fetch."""
    tree = workdir / "src" / name
    shutil.copytree(source, tree)
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    return tree


def test_dry_run_before_any_fetch_names_the_upstream_list(cli: CliRunner) -> None:
    proc = cli("deps", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["flavor"] == "upstream" and report["build_system"] == "autotools"
    assert report["wanted"] == list(upstream_builddeps("autotools"))
    assert report["command"][report["command"].index("apt-get") + 1 :][:3] == [
        "-y",
        "-q",
        "install",
    ]
    # What apt would install is a subset of the list (most of it is installed here already).
    assert set(report["installs"]) <= set(report["wanted"]) | _dependencies_of(report["wanted"])
    assert "wanted: " in proc.stderr


def _dependencies_of(packages: list[str]) -> set[str]:
    out = subprocess.run(
        ["apt-get", "-s", "install", "--no-install-recommends", *packages],
        text=True,
        capture_output=True,
        check=False,
    ).stdout
    return {line.split()[1] for line in out.splitlines() if line.startswith("Inst ")}


def test_debian_tree_asks_apt_for_its_own_build_depends(cli: CliRunner, workdir: Path) -> None:
    tree = _git_tree(workdir, "lxc-deb", FIXTURES / "lxc-mini")
    shutil.copytree(FIXTURES / "lxc-mini-debian" / "debian", tree / "debian")
    proc = cli("deps", "--tree", "lxc-deb", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["flavor"] == "debian"
    assert report["command"][-1] == f"{tree}/" and "build-dep" in report["command"]
    assert report["wanted"] == []


def test_unsatisfiable_build_depends_fail_with_a_hint(cli: CliRunner, workdir: Path) -> None:
    tree = _git_tree(workdir, "lxc-deb", FIXTURES / "lxc-mini")
    shutil.copytree(FIXTURES / "lxc-mini-debian" / "debian", tree / "debian")
    control = tree / "debian" / "control"
    control.write_text(
        control.read_text().replace(
            "Build-Depends: debhelper-compat (= 13)",
            "Build-Depends: debhelper-compat (= 13), no-such-package-lxcpatch",
        )
    )
    proc = cli("deps", "--tree", "lxc-deb", "--dry-run", env={"COLUMNS": "500"})
    assert proc.returncode == 1
    assert "apt-get failed" in proc.stderr and "no-such-package-lxcpatch" in proc.stderr
    assert "hint:" in proc.stderr


def test_debian_flavor_without_debian_folder_is_a_usage_error(
    cli: CliRunner, workdir: Path
) -> None:
    _git_tree(workdir, "plain", FIXTURES / "lxc-mini")
    proc = cli("deps", "--tree", "plain", "--flavor", "debian", "--dry-run")
    assert proc.returncode == 2
    assert "debian/control" in proc.stderr


def test_unknown_tree_is_named(cli: CliRunner) -> None:
    proc = cli("deps", "--tree", "nope", "--dry-run")
    assert proc.returncode == 2
    assert "no tree nope" in proc.stderr
