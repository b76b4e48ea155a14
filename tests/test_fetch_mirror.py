"""fetch against the real upstream LXC history, from a local mirror named by LXCPATCH_LXC_MIRROR."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from lxcpatch.lxctree import version_from_configure, version_from_meson
from lxcpatch.sources import ENV_UPSTREAM, PINNED, upstream_tag
from tests.conftest import CliRunner
from tests.fetch_helpers import serve, sha256

pytestmark = pytest.mark.lxc_mirror

COMMIT = PINNED["lxc-2.0.11"]


@pytest.fixture(scope="module")
def mirror() -> Path:
    path = os.environ.get("LXCPATCH_LXC_MIRROR")
    if not path:
        pytest.skip("LXCPATCH_LXC_MIRROR is not set")
    return Path(path)


def _check(manifest: dict[str, object], kind: str) -> None:
    assert manifest["kind"] == kind
    assert (manifest["version"], manifest["build_system"]) == ("2.0.11", "autotools")
    assert manifest["commit"] == COMMIT
    assert manifest["name"] == "lxc-2.0.11"


def test_fetch_tag_from_mirror(cli: CliRunner, workdir: Path, mirror: Path) -> None:
    proc = cli("fetch", "--source", mirror, "--ref", "lxc-2.0.11", "--json", check=True)
    manifest = json.loads((workdir / "src" / "lxc-2.0.11.json").read_text())
    _check(manifest, "git")
    assert manifest["pristine"] == COMMIT and json.loads(proc.stdout)["pristine"] == COMMIT
    assert (workdir / "src" / "lxc-2.0.11" / "src" / "lxc" / "start.c").is_file()


def test_mirror_as_default_source_passes_the_pin(
    cli: CliRunner, workdir: Path, mirror: Path
) -> None:
    cli("fetch", env={ENV_UPSTREAM: str(mirror)}, check=True)
    _check(json.loads((workdir / "src" / "lxc-2.0.11.json").read_text()), "git")


def test_fetch_git_archive_tarball(
    cli: CliRunner, workdir: Path, mirror: Path, tmp_path: Path
) -> None:
    www = tmp_path / "www"
    www.mkdir()
    tarball = www / "lxc-2.0.11.tar.gz"
    subprocess.run(
        ["git", "--git-dir", mirror, "archive", "--format=tar.gz", "--prefix=lxc-2.0.11/",
         "-o", tarball, "lxc-2.0.11"],
        check=True,
    )  # fmt: skip
    digest = sha256(tarball)
    with serve(www) as server:
        url = f"{server.url}/lxc-2.0.11.tar.gz"
        cli("fetch", "--source", url, "--sha256", digest, check=True)
    manifest = json.loads((workdir / "src" / "lxc-2.0.11.json").read_text())
    _check(manifest, "tarball")  # commit: from the pax header git archive writes
    assert manifest["files"] == {"lxc-2.0.11.tar.gz": digest}
    assert manifest["pristine"] != COMMIT  # our own commit of the unpacked tree
    assert (workdir / "cache" / digest).is_file()


def _tag_version(tag: str) -> str | None:
    if re.match(r"^lxc_\d+(_\d+)+$", tag):
        return tag[4:].replace("_", ".")
    if re.match(r"^(lxc-|v)\d", tag):
        return tag.split("-", 1)[1] if tag.startswith("lxc-") else tag[1:]
    return None


def _read_all(mirror: Path, specs: list[str]) -> dict[str, str | None]:
    """`git cat-file --batch` over TAG:PATH specs: the file's text, or None where it is missing."""
    out = subprocess.run(
        ["git", "--git-dir", mirror, "cat-file", "--batch"],
        input="".join(f"{spec}\n" for spec in specs).encode(),
        capture_output=True,
        check=True,
    ).stdout
    found: dict[str, str | None] = {}
    for spec in specs:
        header, _, out = out.partition(b"\n")
        if header.endswith(b" missing"):
            found[spec] = None
            continue
        size = int(header.split()[2])
        found[spec], out = out[:size].decode(errors="replace"), out[size + 1 :]
    return found


def test_version_and_tag_naming_on_every_release(mirror: Path) -> None:
    tags = subprocess.run(
        ["git", "--git-dir", mirror, "tag"], capture_output=True, text=True, check=True
    ).stdout.split()
    names = ("configure.in", "configure.ac", "meson.build", "src/lxc/start.c")
    files = _read_all(mirror, [f"{tag}:{name}" for tag in tags for name in names])
    checked = 0
    for tag in tags:
        expected = _tag_version(tag)
        if expected is None or files[f"{tag}:src/lxc/start.c"] is None:
            continue  # the "start" tag, and 0.1 - 0.4 (no src/lxc/start.c yet)
        configure = files[f"{tag}:configure.ac"] or files[f"{tag}:configure.in"]
        if configure is not None:
            found = version_from_configure(configure)
        else:
            found = version_from_meson(files[f"{tag}:meson.build"] or "")
        # lxc-3.2.0 was tagged with lxc_devel still 1: its configure.ac says 3.2.0-devel.
        assert found is not None and found.removesuffix("-devel") == expected, tag
        if re.match(r"^\d+\.\d+\.\d+$", expected):
            assert upstream_tag(expected) == tag
        checked += 1
    assert checked > 120
