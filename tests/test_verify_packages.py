"""verify on the packages `lxcpatch build` makes from lxc-mini, patched and --allow-unpatched:
read as .deb files, unpacked with dpkg -x, and installed with dpkg -i into a debootstrapped
Debian 12 root (the build tests' cached root)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lxcpatch.recipes import TOKENS
from tests.conftest import FIXTURES, needs_root

pytestmark = pytest.mark.slow

TOKEN = TOKENS["@cap-sys-boot"]


def lxcpatch(workdir: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lxcpatch", *map(str, args)],
        env={**os.environ, "LXCPATCH_WORKDIR": str(workdir), "COLUMNS": "500"},
        cwd=workdir.parent,
        text=True,
        capture_output=True,
        check=False,
    )


def verify(*args: str | Path) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "lxcpatch", "verify", "--json", *map(str, args)],
        env={**os.environ, "COLUMNS": "500"},
        text=True,
        capture_output=True,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout), proc.stderr


@dataclass(frozen=True)
class Packages:
    unpatched: Path  # lxc_2.0.11~unpatchedN_ARCH.deb
    patched: Path  # lxc_2.0.11+lxcpatchN_ARCH.deb (N: the workspace's build number)


def version_of(deb: Path) -> str:
    """The version in a package's file name (NAME_VERSION_ARCH.deb; no epoch here)."""
    return deb.name.split("_")[1]


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    """One fetched tree built twice: --allow-unpatched first, then after `lxcpatch patch`."""
    base = tmp_path_factory.mktemp("packages")
    source = base / "lxc-mini"
    shutil.copytree(FIXTURES / "lxc-mini", source)
    workdir = base / "build"
    made = {}
    steps = [
        (
            "unpatched",
            [("fetch", "--source", source, "--name", "mini"), ("build", "--allow-unpatched")],
        ),
        ("patched", [("patch",), ("build",)]),
    ]
    for kind, commands in steps:
        for command in commands:
            proc = lxcpatch(workdir, *command)
            assert proc.returncode == 0, f"lxcpatch {command}: {proc.stderr}"
        (deb,) = (workdir / "debs" / "mini").glob("lxc_*.deb")
        made[kind] = base / deb.name
        shutil.copy2(deb, made[kind])
    return Packages(**made)


def test_built_debs(packages: Packages) -> None:
    rc, doc, err = verify("--deb", packages.unpatched)
    assert (rc, doc["status"]) == (1, "unpatched"), err
    assert doc["version"] == version_of(packages.unpatched)
    assert doc["version"].startswith("2.0.11~unpatched")
    assert doc["package"]["name"] == "lxc" and doc["package"]["md5sums"] == "match"
    assert doc["tokens"]["@cap-sys-boot"] is False

    rc, doc, err = verify("--deb", packages.patched)
    assert (rc, doc["status"]) == (0, "patched"), err
    assert doc["version"] == version_of(packages.patched)
    assert doc["version"].startswith("2.0.11+lxcpatch")
    assert doc["lxc_start"] == "/usr/bin/lxc-start"
    assert doc["liblxc"].startswith("/usr/lib/") and ".so.1." in doc["liblxc"]
    assert doc["tokens"] == {"@cap-sys-boot": True, "@cap-drops": False}


def test_built_debs_unpacked_with_dpkg_x(packages: Packages, tmp_path: Path) -> None:
    for kind, status, code in (("unpatched", "unpatched", 1), ("patched", "patched", 0)):
        root = tmp_path / kind
        subprocess.run(["dpkg", "-x", getattr(packages, kind), root], check=True)
        rc, doc, err = verify("--root", root)
        assert (rc, doc["status"]) == (code, status), err
        rc, doc, err = verify("--lib", root / doc["liblxc"].lstrip("/"))
        assert (rc, doc["status"]) == (code, status), err


@pytest.fixture(scope="module")
def debian_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root (CI runs as root)")
    # The build tests' Debian 12 minbase root: downloaded once, cached, unpacked here.
    from tests.debian_root import debootstrap

    root = tmp_path_factory.mktemp("chroot") / "bookworm"
    debootstrap(root)
    return root


def dpkg_install(root: Path, deb: Path) -> None:
    inbox = root / "tmp" / deb.name
    shutil.copy2(deb, inbox)
    proc = subprocess.run(
        ["chroot", str(root), "dpkg", "-i", f"/tmp/{deb.name}"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    inbox.unlink()


@needs_root()
def test_installed_in_a_debian_root(packages: Packages, debian_root: Path, tmp_path: Path) -> None:
    rc, doc, _ = verify("--root", debian_root)
    assert (rc, doc["status"]) == (2, "unknown")  # minbase has no LXC

    dpkg_install(debian_root, packages.unpatched)
    rc, doc, err = verify("--root", debian_root)
    assert (rc, doc["status"]) == (1, "unpatched"), err
    assert doc["package"]["origin"].startswith("dpkg database")
    assert doc["package"]["version"] == version_of(packages.unpatched)
    assert doc["package"]["md5sums"] == "match"
    unpatched_lib = tmp_path / "liblxc-unpatched.so"
    shutil.copy2(debian_root / doc["liblxc"].lstrip("/"), unpatched_lib)

    dpkg_install(debian_root, packages.patched)  # an upgrade, as apt would do it
    rc, doc, err = verify("--root", debian_root, "--live", "--timeout", "30")
    assert (rc, doc["status"]) == (0, "patched"), err
    assert doc["package"]["version"] == version_of(packages.patched)
    assert doc["live"]["outcome"] == "passed"
    assert any(TOKEN in line for line in doc["live"]["evidence"])

    # The old library copied back over the packaged one: unpatched, and the md5sums say why.
    shutil.copy2(unpatched_lib, debian_root / doc["liblxc"].lstrip("/"))
    rc, doc, err = verify("--root", debian_root)
    assert (rc, doc["status"]) == (1, "unpatched"), err
    assert doc["package"]["md5sums"] == "mismatch"
    assert "DIFFER from its md5sums" in err
