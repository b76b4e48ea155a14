"""Install what building a tree needs, with apt-get: the tree's own build-depends (debian flavor)
or lxcpatch's list for its build system (upstream flavor, recipes/builddeps.py)."""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxcpatch import run
from lxcpatch.debbuild import Flavor
from lxcpatch.errors import CommandError, LxcpatchError, PrerequisiteError, UsageError
from lxcpatch.recipes.builddeps import BuildSystem, upstream_builddeps
from lxcpatch.workspace import Workspace

log = logging.getLogger(__name__)

_INST = re.compile(r"^Inst (\S+) ", re.MULTILINE)
_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


@dataclass(frozen=True)
class DepsRequest:
    tree: str | None = None
    flavor: Flavor = Flavor.AUTO
    dry_run: bool = False


@dataclass(frozen=True)
class DepsResult:
    """What `deps` installed (or, with --dry-run, would install)."""

    tree: str | None
    flavor: Flavor
    build_system: str
    command: tuple[str, ...]
    wanted: tuple[str, ...]  # the list asked for (upstream) or () for build-dep
    installs: tuple[str, ...]  # the packages apt installs (or would install)
    dry_run: bool

    @property
    def exit_code(self) -> int:
        return 0

    def to_json(self) -> dict[str, Any]:
        return {
            "tree": self.tree,
            "flavor": str(self.flavor),
            "build_system": self.build_system,
            "command": list(self.command),
            "wanted": list(self.wanted),
            "installs": list(self.installs),
            "dry_run": self.dry_run,
        }

    def human(self) -> str:
        what = f"{self.tree} ({self.flavor} flavor, {self.build_system})" if self.tree else (
            f"the default upstream tree ({self.build_system})"
        )  # fmt: skip
        lines = [f"build dependencies of {what}:"]
        if self.wanted:
            lines.append("  wanted: " + " ".join(self.wanted))
        if not self.installs:
            lines.append("  nothing to install: all are installed")
        else:
            verb = "would install" if self.dry_run else "installed"
            lines.append(f"  {verb} {len(self.installs)}: " + " ".join(self.installs))
        if self.dry_run:
            lines.append("  command: " + " ".join(self.command))
        return "\n".join(lines)


def plan_command(
    flavor: Flavor, build_system: BuildSystem, tree: Path | None
) -> tuple[list[str], tuple[str, ...]]:
    """apt-get's arguments (after `apt-get`) and the upstream package list they name."""
    if flavor is Flavor.DEBIAN:
        if tree is None:
            raise UsageError("--flavor debian needs a tree with a debian/ folder")
        return ["build-dep", "--no-install-recommends", f"{tree}/"], ()
    wanted = upstream_builddeps(build_system)
    return ["install", "--no-install-recommends", *wanted], wanted


def simulated_installs(apt_output: str) -> tuple[str, ...]:
    """The packages an `apt-get -s` run would install."""
    return tuple(_INST.findall(apt_output))


def deps(ws: Workspace, request: DepsRequest) -> DepsResult:
    """Install (or with dry_run, list) the build dependencies of the tree (default: current)."""
    name, tree, manifest = _current(ws, request.tree)
    flavor = request.flavor
    has_debian = tree is not None and (tree / "debian" / "control").is_file()
    if flavor is Flavor.AUTO:
        flavor = Flavor.DEBIAN if has_debian else Flavor.UPSTREAM
    elif flavor is Flavor.DEBIAN and not has_debian:
        raise UsageError(
            f"--flavor debian needs a tree with debian/control ({tree or 'no tree fetched yet'})",
            hint="fetch a .dsc or apt:lxc source first, or use --flavor upstream",
        )
    build_system: BuildSystem = "autotools"
    if manifest.get("build_system") == "meson" or (
        tree is not None and (tree / "meson.build").is_file()
    ):
        build_system = "meson"
    root = os.geteuid() == 0
    if not root and shutil.which("sudo") is None:
        raise PrerequisiteError(
            "installing packages needs root, and sudo is not installed",
            hint="run `invoke deps` as root, or install sudo",
        )
    arguments, wanted = plan_command(flavor, build_system, tree)
    command = [*([] if root else ["sudo"]), "apt-get", "-y", "-q", *arguments]
    # A simulation (no root needed) says what apt would install.
    installs = simulated_installs(_apt(["apt-get", "-s", *arguments]).stdout)
    if not request.dry_run and installs:
        log.info("installing %s", " ".join(installs))
        _apt(command)
    return DepsResult(
        tree=name,
        flavor=flavor,
        build_system=build_system if flavor is Flavor.UPSTREAM else "debian/control",
        command=tuple(command),
        wanted=wanted,
        installs=installs,
        dry_run=request.dry_run,
    )


def _current(ws: Workspace, asked: str | None) -> tuple[str | None, Path | None, Mapping[str, Any]]:
    """The tree to read; without one (before the first fetch), the default upstream tree."""
    if asked is None:
        try:
            asked = ws.current_tree()
        except PrerequisiteError:
            return None, None, {}
    tree = ws.tree(asked)
    if not tree.is_dir():
        raise PrerequisiteError(f"no tree {asked} in {ws.src}", hint="check --tree")
    from lxcpatch import fetch

    try:
        manifest: Mapping[str, Any] = fetch.load_manifest(ws, asked).to_json()
    except LxcpatchError:
        manifest = {}
    return asked, tree, manifest


def _apt(argv: list[str]) -> Any:
    proc = run.run(argv, env=_APT_ENV, check=False)
    if proc.returncode != 0:
        # apt explains unmet dependencies on stdout and only sums up on stderr.
        raise CommandError(
            argv,
            proc.returncode,
            run.tail(proc.stdout + proc.stderr),
            hint="apt could not install the build dependencies; `apt-get update` may help, or a "
            "package is not available on this distribution",
        )
    return proc
