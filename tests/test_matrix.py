"""The matrix file: it parses, names releases fetch understands, and bad files are refused."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lxcpatch import matrix
from lxcpatch.errors import UsageError
from tests.conftest import REPO, CliRunner

MATRIX = REPO / "patches" / "matrix.toml"
RELEASES = {"lxc-1.0.11": "lxc-1.0.11", "lxc-1.1.5": "lxc-1.1.5", "lxc-2.0.11": "lxc-2.0.11"}
IMAGES = {"debian:bookworm", "debian:bullseye", "ubuntu:22.04", "ubuntu:24.04"}


def _parse(text: str, tmp_path: Path) -> matrix.Matrix:
    return matrix.parse(text, path=tmp_path / "matrix.toml")


def test_the_repository_matrix_covers_the_releases_and_images() -> None:
    loaded = matrix.load(MATRIX)
    assert set(RELEASES) <= {r.name for r in loaded.releases}
    assert {i.name for i in loaded.images} >= IMAGES
    pairs = {(e.release.name, e.image.name) for e in loaded.entries()}
    excluded = {(x.release, x.image) for x in loaded.exclusions}
    every = {(r.name, i.name) for r in loaded.releases for i in loaded.images}
    assert pairs == every - excluded
    assert all(x.reason.strip() for x in loaded.exclusions)


def test_every_release_is_one_fetch_version_understands() -> None:
    from lxcpatch.sources import upstream_tag

    for release in matrix.load(MATRIX).releases:
        assert release.version is not None, f"{release.name}: CI builds upstream releases"
        assert upstream_tag(release.version) == RELEASES[release.name]
        assert release.fetch_args() == ("--version", release.version, "--name", release.name)


@pytest.mark.lxc_mirror
def test_every_release_is_a_tag_of_upstream_lxc() -> None:
    mirror = os.environ.get("LXCPATCH_LXC_MIRROR")
    if not mirror:
        pytest.skip("LXCPATCH_LXC_MIRROR is not set")
    from lxcpatch.sources import upstream_tag

    for release in matrix.load(MATRIX).releases:
        assert release.version is not None
        tag = upstream_tag(release.version)
        proc = subprocess.run(
            ["git", f"--git-dir={mirror}", "rev-parse", "--verify", f"refs/tags/{tag}"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, f"{tag} is not a tag in {mirror}"


MINIMAL = '[[release]]\nversion = "2.0.11"\n\n[[image]]\nname = "debian:bookworm"\n'

BAD = {
    "not toml": ("[[release]\n", "is not valid TOML"),
    "unknown top-level key": (MINIMAL + "releases = []\n", "unknown key 'releases'"),
    "unknown release key": (
        '[[release]]\nversion = "2.0.11"\ntag = "x"\n[[image]]\nname = "debian:bookworm"\n',
        "unknown key 'tag'",
    ),
    "version and source": (
        '[[release]]\nversion = "2.0.11"\nsource = "/x"\n[[image]]\nname = "debian:bookworm"\n',
        "either version",
    ),
    "neither version nor source": (
        '[[release]]\nname = "x"\n[[image]]\nname = "debian:bookworm"\n',
        "either version",
    ),
    "ref without source": (
        '[[release]]\nversion = "2.0.11"\nref = "main"\n[[image]]\nname = "debian:bookworm"\n',
        "ref goes with source",
    ),
    "a version fetch does not know": (
        '[[release]]\nversion = "two"\n[[image]]\nname = "debian:bookworm"\n',
        "two",
    ),
    "source without a name": (
        '[[release]]\nsource = "/x"\n[[image]]\nname = "debian:bookworm"\n',
        "needs a name",
    ),
    "bad tree name": (
        '[[release]]\nsource = "/x"\nname = "../x"\n[[image]]\nname = "debian:bookworm"\n',
        "invalid tree name",
    ),
    "options not a list": (
        '[[release]]\nversion = "2.0.11"\nbuild = "-j 2"\n[[image]]\nname = "debian:bookworm"\n',
        "build must be a list",
    ),
    "no image": ('[[release]]\nversion = "2.0.11"\n', "at least one"),
    "image without name": ('[[release]]\nversion = "2.0.11"\n[[image]]\n', "name is missing"),
    "release twice": (
        '[[release]]\nversion = "2.0.11"\n' + MINIMAL,
        "lxc-2.0.11 is listed twice",
    ),
    "exclusion of an unknown release": (
        MINIMAL + '[[exclude]]\nrelease = "lxc-9"\nimage = "debian:bookworm"\nreason = "x"\n',
        "'lxc-9' is not a [[release]]",
    ),
    "exclusion of an unknown image": (
        MINIMAL + '[[exclude]]\nrelease = "lxc-2.0.11"\nimage = "debian:sid"\nreason = "x"\n',
        "'debian:sid' is not an [[image]]",
    ),
    "exclusion without reason": (
        MINIMAL + '[[exclude]]\nrelease = "lxc-2.0.11"\nimage = "debian:bookworm"\n',
        "reason is missing",
    ),
    "everything excluded": (
        MINIMAL + '[[exclude]]\nrelease = "lxc-2.0.11"\nimage = "debian:bookworm"\nreason = "x"\n',
        "nothing would be built",
    ),
    "release as a single table": ('[release]\nversion = "2.0.11"\n', "[[release]] table"),
}


@pytest.mark.parametrize("case", BAD, ids=str)
def test_a_bad_matrix_is_refused_with_what_to_fix(tmp_path: Path, case: str) -> None:
    text, message = BAD[case]
    with pytest.raises(UsageError) as raised:
        _parse(text, tmp_path)
    assert message in raised.value.message
    assert str(tmp_path / "matrix.toml") in raised.value.message
    assert raised.value.hint


def test_a_relative_source_is_relative_to_the_matrix_file(tmp_path: Path) -> None:
    text = '[[release]]\nname = "mini"\nsource = "./trees/mini"\nref = "v1"\n'
    text += '[[image]]\nname = "debian:bookworm"\n'
    loaded = _parse(text, tmp_path)
    (entry,) = loaded.entries()
    assert entry.release.source == str(tmp_path / "trees" / "mini")
    assert entry.name == "mini-debian-bookworm"
    assert entry.to_json()["fetch"] == f"--source {tmp_path}/trees/mini --ref v1 --name mini"


def test_a_container_stands_in_for_its_image(tmp_path: Path) -> None:
    text = MINIMAL + '[[image]]\nname = "debian:bullseye"\ncontainer = "python:3.11-bullseye"\n'
    include = _parse(text, tmp_path).include()["include"]
    assert [(e["image"], e["container"]) for e in include] == [
        ("debian:bookworm", "debian:bookworm"),
        ("debian:bullseye", "python:3.11-bullseye"),
    ]


@given(
    n_releases=st.integers(1, 4),
    images=st.lists(
        st.sampled_from(["debian:bookworm", "debian:bullseye", "ubuntu:22.04", "ubuntu:24.04"]),
        min_size=1,
        max_size=4,
        unique=True,
    ),
    excluded=st.sets(st.tuples(st.integers(0, 3), st.integers(0, 3))),
)
def test_entries_are_every_pair_but_the_exclusions(
    n_releases: int, images: list[str], excluded: set[tuple[int, int]]
) -> None:
    versions = [f"2.0.{n}" for n in range(n_releases)]
    pairs = {(r, i) for r, i in excluded if r < n_releases and i < len(images)}
    if len(pairs) == n_releases * len(images):
        pairs.pop()
    text = "".join(f'[[release]]\nversion = "{v}"\n' for v in versions)
    text += "".join(f'[[image]]\nname = "{i}"\n' for i in images)
    text += "".join(
        f'[[exclude]]\nrelease = "lxc-{versions[r]}"\nimage = "{images[i]}"\nreason = "test"\n'
        for r, i in sorted(pairs)
    )
    entries = matrix.parse(text, path=Path("/m.toml")).entries()
    got = [(e.release.version, e.image.name) for e in entries]
    assert got == [
        (v, image)
        for r, v in enumerate(versions)
        for i, image in enumerate(images)
        if (r, i) not in pairs
    ]
    assert len({e.name for e in entries}) == len(entries)


def test_a_missing_matrix_file_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as raised:
        matrix.load(tmp_path / "nope.toml")
    assert "--file" in (raised.value.hint or "")


def test_the_default_matrix_is_the_repositorys_from_any_folder(
    cli: CliRunner, tmp_path: Path
) -> None:
    assert matrix.DEFAULT_FILE == MATRIX
    proc = cli("matrix", "--json", cwd=tmp_path, check=True)
    assert json.loads(proc.stdout) == matrix.load(MATRIX).include()


def test_invoke_matrix_json_lists_every_pair(cli: CliRunner) -> None:
    loaded = matrix.load(MATRIX)
    proc = cli("matrix", "--json", cwd=REPO, check=True)
    document = json.loads(proc.stdout)
    assert list(document) == ["include"]
    pairs = [(e["release"], e["image"]) for e in document["include"]]
    expected = len(loaded.releases) * len(loaded.images) - len(loaded.exclusions)
    assert len(set(pairs)) == len(pairs) == expected == 12
    assert document == loaded.include()


def test_invoke_matrix_prints_the_table(cli: CliRunner) -> None:
    proc = cli("matrix", cwd=REPO, env={"COLUMNS": "200"}, check=True)
    assert proc.stdout == ""
    for name in (*RELEASES, *IMAGES):
        assert name in proc.stderr


def test_invoke_matrix_with_a_bad_file_exits_2(cli: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[release]]\nversion = "2.0.11"\n')
    proc = cli("matrix", "--file", bad, "--json")
    assert proc.returncode == 2
    assert "at least one" in json.loads(proc.stdout)["error"]
    proc = cli("matrix", "--file", tmp_path / "absent.toml", env={"COLUMNS": "300"})
    assert proc.returncode == 2 and "not found" in proc.stderr


def test_the_readme_shows_the_matrix() -> None:
    section = (REPO / "README.md").read_text().split("\n### matrix\n", 1)[1]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.split("\n## ", 1)[0].splitlines()
        if line.startswith("| ") and not line.startswith("| ---")
    ]
    loaded = matrix.load(MATRIX)
    assert rows[0] == ["release", *(i.name for i in loaded.images)]
    assert rows[1:] == [
        [r.name, *("✓" if loaded.excluded(r, i) is None else "excluded" for i in loaded.images)]
        for r in loaded.releases
    ]


def test_a_failed_step_is_summed_up_by_its_first_compiler_or_linker_error() -> None:
    error = (
        "make failed with exit code 2: make -j2 CFLAGS=-O2\n"
        "gcc -c -o start.o start.c\n"
        "/usr/bin/ld: liblxc.so: undefined reference to `major'\n"
        "collect2: error: ld returned 1 exit status\n"
        "make: *** [Makefile:498: all-recursive] Error 1\n"
    )
    assert matrix.summarize(error) == (
        "make failed with exit code 2: make -j2 CFLAGS=-O2 … "
        "/usr/bin/ld: liblxc.so: undefined reference to `major'"
    )
    assert matrix.summarize("fetch failed: no such tree") == "fetch failed: no such tree"
    assert matrix.summarize("\n\n") == "no output"
