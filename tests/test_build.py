"""`lxcpatch build` for real: fetch → patch → build of lxc-mini (upstream flavor) and of its
Debian packaging fetched through a .dsc (debian flavor). The packages are read with
python-debian, checked by lintian, rebuilt byte for byte, installed into a debootstrapped Debian
root and run there under capsh; and the bad inputs: an unpatched tree, a compile error, a missing
build tool, two builds at once."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lxcpatch.recipes import TOKENS
from tests.conftest import FIXTURES, needs_root
from tests.debian_root import debootstrap

pytestmark = pytest.mark.slow

TOKEN = TOKENS["@cap-sys-boot"].encode()
DROP_BOTH = "--drop=cap_setpcap,cap_sys_boot"


def lxcpatch(
    workdir: Path, *args: str | Path, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """The CLI as a real process on the workspace `workdir`."""
    proc = subprocess.run(
        [sys.executable, "-m", "lxcpatch", *map(str, args)],
        # A wide console: rich does not wrap the messages the tests look for.
        env={**os.environ, "LXCPATCH_WORKDIR": str(workdir), "COLUMNS": "500", **(env or {})},
        cwd=workdir.parent,
        text=True,
        capture_output=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"lxcpatch {args} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@dataclass(frozen=True)
class Built:
    workdir: Path
    tree: str
    report: dict[str, Any]

    @property
    def debs(self) -> Path:
        return self.workdir / "debs" / self.tree

    def deb(self, package: str) -> Path:
        (found,) = [self.debs / p["file"] for p in self.report["packages"] if p["name"] == package]
        return found

    def patch_file(self) -> Path:
        (patch,) = sorted((self.workdir / "patches" / self.tree).glob("*.patch"))
        return patch


def fetch_patch_build(workdir: Path, source: Path, name: str, *build_args: str) -> Built:
    lxcpatch(workdir, "fetch", "--source", source, "--name", name)
    lxcpatch(workdir, "patch")
    proc = lxcpatch(workdir, "build", "--json", *build_args)
    return Built(workdir, name, json.loads(proc.stdout))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def debfile(path: Path) -> Any:
    from debian.debfile import DebFile

    return contextlib.closing(DebFile(str(path)))


def data_members(path: Path) -> dict[str, tarfile.TarInfo]:
    with debfile(path) as deb:
        return {m.name.removeprefix("./"): m for m in deb.data.tgz().getmembers()}


def data_bytes(path: Path, member: str) -> bytes:
    with debfile(path) as deb:
        extracted = deb.data.tgz().extractfile("./" + member)
        assert extracted is not None
        return bytes(extracted.read())


def rpath_tags(data: bytes) -> list[str]:
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    tags = []
    for section in ELFFile(io.BytesIO(data)).iter_sections():
        if isinstance(section, DynamicSection):
            tags += [
                t.entry.d_tag
                for t in section.iter_tags()
                if t.entry.d_tag in ("DT_RPATH", "DT_RUNPATH")
            ]
    return tags


@pytest.fixture(scope="session")
def arch() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], text=True, capture_output=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="session")
def multiarch() -> str:
    return subprocess.run(
        ["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], text=True, capture_output=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="session")
def mini_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("sources") / "lxc-mini"
    shutil.copytree(FIXTURES / "lxc-mini", source)
    return source


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory, mini_source: Path) -> Built:
    """lxc-mini fetched, patched and built (upstream flavor, with lintian)."""
    workdir = tmp_path_factory.mktemp("upstream") / "build"
    return fetch_patch_build(workdir, mini_source, "lxc-mini", "--lint")


# --- the upstream flavor -------------------------------------------------------------------


def test_upstream_package_control_fields(upstream: Built, arch: str) -> None:
    from debian.deb822 import PkgRelation

    version = "2.0.11+lxcpatch1"
    with debfile(upstream.deb("lxc")) as deb:
        control = deb.debcontrol()
        conffiles = deb.control.get_content("conffiles", encoding="utf-8")
    assert control["Package"] == "lxc"
    assert control["Version"] == version
    assert control["Architecture"] == arch
    depends = {r[0]["name"] for r in PkgRelation.parse_relations(control["Depends"])}
    assert "libc6" in depends and "lxc" not in depends
    provides = {
        r[0]["name"]: r[0]["version"] for r in PkgRelation.parse_relations(control["Provides"])
    }
    for name in ("liblxc1", "liblxc-common", "lxc1"):
        assert provides[name] == ("=", version)
        assert name in control["Conflicts"] and name in control["Replaces"]
    patch = upstream.patch_file()
    assert patch.name in control["Description"]
    assert sha256(patch) in control["Description"]
    assert conffiles == "/etc/lxc/default.conf\n"


def test_upstream_package_files_owners_and_modes(upstream: Built, multiarch: str) -> None:
    deb = upstream.deb("lxc")
    members = data_members(deb)
    lib = f"usr/lib/{multiarch}/liblxc.so.1.0.0"
    expected = {
        "usr/bin/lxc-start": 0o755,
        lib: 0o644,
        "etc/lxc/default.conf": 0o644,
        "lib/systemd/system/lxc.service": 0o644,
        "usr/include/lxc/start.h": 0o644,
        "usr/share/doc/lxc/copyright": 0o644,
        "usr/share/doc/lxc/changelog.Debian.gz": 0o644,
    }
    for name, mode in expected.items():
        assert members[name].isfile(), name
        assert members[name].mode == mode, (name, oct(members[name].mode))
    assert members[f"usr/lib/{multiarch}/liblxc.so.1"].issym()
    # The default profile leaves optional extras out; libtool archives are not packaged.
    assert "usr/share/doc/lxc/README.md" not in members
    assert not any(name.endswith(".la") for name in members)
    epoch = json.loads((upstream.debs / "build.json").read_text())["source_date_epoch"]
    for member in members.values():
        assert (member.uname, member.gname, member.uid, member.gid) == ("root", "root", 0, 0)
        assert member.mtime <= epoch, member.name
        if member.isdir():
            assert member.mode == 0o755, member.name
    # The patch is compiled into the library, and nothing points into the build folders.
    library = data_bytes(deb, lib)
    assert TOKEN in library
    for name in ("usr/bin/lxc-start", lib):
        data = data_bytes(deb, name)
        assert rpath_tags(data) == []
        assert str(upstream.workdir).encode() not in data


def test_upstream_package_md5sums_and_changelog(upstream: Built) -> None:
    deb = upstream.deb("lxc")
    with debfile(deb) as package:
        sums = package.md5sums(encoding="utf-8")
        changelog = package.changelog()
    members = data_members(deb)
    regular = {name for name, m in members.items() if m.isfile()}
    assert set(sums) == regular
    for name in regular:
        assert hashlib.md5(data_bytes(deb, name)).hexdigest() == sums[name], name
    assert str(changelog.version) == "2.0.11+lxcpatch1"
    text = str(changelog).replace("\n", " ")
    assert sha256(upstream.patch_file()) in re.sub(r"\s+", "", text)
    assert upstream.patch_file().name in text


def test_upstream_lintian_finds_no_errors(upstream: Built) -> None:
    lint = upstream.report["lint"]
    assert [f for f in lint if f["severity"] == "E"] == []
    # lintian did run: its log holds its output, and it found the expected warnings.
    log = upstream.workdir / "logs" / "lxc-mini-lint.log"
    assert "no-manual-page" in log.read_text()
    assert any(f["tag"] == "no-manual-page" for f in lint)


def test_upstream_build_record(upstream: Built) -> None:
    record = json.loads((upstream.debs / "build.json").read_text())
    assert record["source"]["name"] == "lxc-mini" and record["source"]["pristine"]
    assert [(s["name"], s["sha256"]) for s in record["series"]] == [
        (upstream.patch_file().name, sha256(upstream.patch_file()))
    ]
    (package,) = record["packages"]
    assert package["name"] == "lxc" and package["version"] == "2.0.11+lxcpatch1"
    assert package["sha256"] == sha256(upstream.debs / package["file"])
    steps = [s["step"] for s in record["steps"]]
    assert steps == ["prepare", "autogen", "configure", "compile", "install", "package", "lint"]
    for step in record["steps"]:
        assert step["seconds"] >= step["tool_seconds"] >= 0
        if step["log"]:
            assert Path(step["log"]).read_text().startswith("+ ")
    tools = sum(t["seconds"] for t in record["tools"])
    assert record["total_seconds"] >= tools > 0
    assert record["overhead_seconds"] == pytest.approx(record["total_seconds"] - tools, abs=0.01)
    check = subprocess.run(
        ["sha256sum", "--check", "SHA256SUMS"], cwd=upstream.debs, capture_output=True, check=False
    )
    assert check.returncode == 0, check.stdout


def test_rebuild_is_byte_identical_in_place_and_elsewhere(
    upstream: Built, mini_source: Path, tmp_path: Path
) -> None:
    first = {p["file"]: p["sha256"] for p in upstream.report["packages"]}
    again = json.loads(lxcpatch(upstream.workdir, "build", "--json").stdout)
    assert {p["file"]: p["sha256"] for p in again["packages"]} == first
    reused = {s["step"] for s in again["steps"] if s["reused"]}
    assert reused == {"autogen", "configure"}
    # Another workspace (another build path), built from scratch: the same bytes.
    elsewhere = fetch_patch_build(tmp_path / "build", mini_source, "lxc-mini")
    assert {p["file"]: p["sha256"] for p in elsewhere.report["packages"]} == first
    assert not any(s["reused"] for s in elsewhere.report["steps"])


def test_missing_build_tool_names_its_package(upstream: Built, tmp_path: Path) -> None:
    # A PATH holding every program of this machine except autoreconf.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        for program in Path(folder).iterdir() if Path(folder).is_dir() else ():
            target = bin_dir / program.name
            if program.name != "autoreconf" and not target.exists():
                target.symlink_to(program)
    before = sha256(upstream.debs / "build.json")
    proc = lxcpatch(upstream.workdir, "build", env={"PATH": str(bin_dir)}, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "autoreconf not found" in proc.stderr
    assert "apt-get install autoconf" in proc.stderr
    assert sha256(upstream.debs / "build.json") == before


# --- what is built and what is refused -----------------------------------------------------


def _with_warning(source: Path) -> None:
    """A warning under -Wall: the build must not fail on it."""
    tool = source / "src" / "lxc" / "tools" / "lxc_start.c"
    tool.write_text(tool.read_text().replace("{\n", "{\n\tint lxcpatch_unused;\n", 1))


def test_unpatched_tree_is_refused_and_builds_as_a_control(tmp_path: Path) -> None:
    source = tmp_path / "lxc-mini"
    shutil.copytree(FIXTURES / "lxc-mini", source)
    _with_warning(source)  # configure offers --disable-werror: the profile passes it
    workdir = tmp_path / "build"
    lxcpatch(workdir, "fetch", "--source", source, "--name", "plain")
    proc = lxcpatch(workdir, "build", check=False)
    assert proc.returncode == 1
    assert "plain is not patched" in proc.stderr
    assert "--allow-unpatched" in proc.stderr and "lxcpatch patch" in proc.stderr
    assert not (workdir / "debs" / "plain").exists()
    report = json.loads(lxcpatch(workdir, "build", "--allow-unpatched", "--json").stdout)
    (package,) = report["packages"]
    assert package["version"] == "2.0.11~unpatched1"
    assert report["state"] == "unpatched" and report["series"] == []
    with debfile(workdir / "debs" / "plain" / package["file"]) as deb:
        assert "UNPATCHED" in deb.debcontrol()["Description"]
    lib = next(
        n for n in data_members(workdir / "debs" / "plain" / package["file"]) if ".so.1." in n
    )
    assert TOKEN not in data_bytes(workdir / "debs" / "plain" / package["file"], lib)


def test_release_that_needs_no_patch_builds(tmp_path: Path) -> None:
    """A 2.1-shaped start.c (no drop), and a 1.0-shaped configure that appends -Werror with no
    --disable-werror: the build must pass -Wno-error after it."""
    source = tmp_path / "lxc-mini"
    shutil.copytree(FIXTURES / "lxc-mini", source)
    start = source / "src" / "lxc" / "start.c"
    text = start.read_text()
    start.write_text(re.sub(r"\t#if HAVE_LIBCAP\n.*?\t#endif\n", "", text, flags=re.S))
    configure_ac = source / "configure.ac"
    text = configure_ac.read_text()
    text = re.sub(
        r"# Like LXC 2.0: warnings.*?\n\n", 'CFLAGS="$CFLAGS -Wall -Werror"\n\n', text, flags=re.S
    )
    assert "werror" not in text
    configure_ac.write_text(text)
    _with_warning(source)
    workdir = tmp_path / "build"
    lxcpatch(workdir, "fetch", "--source", source, "--name", "modern")
    patched = lxcpatch(workdir, "patch", "--json")
    assert json.loads(patched.stdout)["trees"][0]["results"][0]["status"] == "not-needed"
    report = json.loads(lxcpatch(workdir, "build", "--json").stdout)
    assert report["state"] == "not-needed"
    (package,) = report["packages"]
    assert package["version"] == "2.0.11+lxcpatch1"
    with debfile(workdir / "debs" / "modern" / package["file"]) as deb:
        assert "does not drop CAP_SYS_BOOT" in deb.debcontrol()["Description"]
    configure_log = (workdir / "logs" / "modern-configure.log").read_text()
    assert "--disable-werror" not in configure_log and "-Wno-error" in configure_log
    compile_log = (workdir / "logs" / "modern-compile.log").read_text()
    assert re.search(r"^\+ make .*CFLAGS=.* -Werror -Wno-error$", compile_log, re.M)


def _wait_for_lock(workdir: Path, proc: subprocess.Popen[str]) -> None:
    lock = workdir / "locks" / "build.lock"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if lock.is_file() and lock.read_text().startswith("pid"):
            return
        time.sleep(0.05)
    raise AssertionError("the first build never took the lock")


def test_concurrent_build_fails_at_once_and_a_failed_build_keeps_the_packages(
    tmp_path: Path, mini_source: Path
) -> None:
    workdir = tmp_path / "build"
    lxcpatch(workdir, "fetch", "--source", mini_source, "--name", "mini")
    lxcpatch(workdir, "patch")
    first = subprocess.Popen(
        [sys.executable, "-m", "lxcpatch", "build"],
        env={**os.environ, "LXCPATCH_WORKDIR": str(workdir)},
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_lock(workdir, first)
        began = time.monotonic()
        second = lxcpatch(workdir, "build", check=False)
        assert time.monotonic() - began < 15
        assert second.returncode == 1
        assert "busy" in second.stderr and "build.lock" in second.stderr
        assert "hint: wait for it to finish" in second.stderr
    finally:
        err = first.communicate(timeout=600)[1]
    assert first.returncode == 0, err
    debs = workdir / "debs" / "mini"
    before = {p.name: p.read_bytes() for p in debs.iterdir()}

    tool = workdir / "src" / "mini" / "src" / "lxc" / "tools" / "lxc_start.c"
    tool.write_text(tool.read_text() + "\n#error lxcpatch-test-breakage\n")
    proc = lxcpatch(workdir, "build", check=False)
    assert proc.returncode == 1
    assert "make failed" in proc.stderr
    assert "lxcpatch-test-breakage" in proc.stderr  # the log's tail
    assert str(workdir / "logs" / "mini-compile.log") in proc.stderr
    assert "previous packages are untouched" in proc.stderr
    assert {p.name: p.read_bytes() for p in debs.iterdir()} == before
    assert not list(workdir.glob(".tmp-*"))


# --- the debian flavor ---------------------------------------------------------------------


def make_dsc(folder: Path) -> Path:
    """lxc_2.0.11-1.dsc from lxc-mini and the lxc-mini-debian packaging, with dpkg-source."""
    tree = folder / "lxc-2.0.11"
    shutil.copytree(FIXTURES / "lxc-mini", tree)
    with tarfile.open(folder / "lxc_2.0.11.orig.tar.gz", "w:gz") as orig:
        orig.add(tree, arcname="lxc-2.0.11")
    shutil.copytree(FIXTURES / "lxc-mini-debian" / "debian", tree / "debian")
    subprocess.run(["dpkg-source", "-b", "lxc-2.0.11"], cwd=folder, capture_output=True, check=True)
    return folder / "lxc_2.0.11-1.dsc"


@pytest.fixture(scope="session")
def debian(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("debian")
    dsc = make_dsc(base)
    return fetch_patch_build(base / "build", dsc, "lxc-deb", "--lint")


def test_debian_flavor_moves_the_patch_into_the_series(debian: Built) -> None:
    assert debian.report["flavor"] == "debian"
    names = {p["name"] for p in debian.report["packages"]}
    assert {"lxc", "liblxc1"} <= names
    for package in debian.report["packages"]:
        assert package["version"] == "2.0.11-1+lxcpatch1"
    patch = debian.patch_file()
    source = debian.workdir / "work" / "lxc-deb" / "lxc-2.0.11"
    series = (source / "debian" / "patches" / "series").read_text().split()
    assert series == ["debian-default-conf.patch", patch.name]
    assert (source / "debian" / "patches" / patch.name).read_bytes() == patch.read_bytes()
    # quilt (dpkg-source) applied it: it was not already applied to the upstream files.
    log = (debian.workdir / "logs" / "lxc-deb-dpkg-buildpackage.log").read_text()
    applied = re.findall(r"^dpkg-source: info: applying (\S+)$", log, re.M)
    assert applied == [patch.name]  # the distribution's patch was applied when unpacked


def test_debian_flavor_changelog_and_contents(debian: Built) -> None:
    patch = debian.patch_file()
    with debfile(debian.deb("lxc")) as deb:
        changelog = deb.changelog()
    assert str(changelog.version) == "2.0.11-1+lxcpatch1"
    assert changelog.versions[1] == "2.0.11-1"
    assert sha256(patch) in re.sub(r"\s+", "", str(changelog))
    # The distribution's own patch is still in, and lxcpatch's is compiled into liblxc1.
    assert b"Debian-style" in data_bytes(debian.deb("lxc"), "etc/lxc/default.conf")
    lib = next(n for n, m in data_members(debian.deb("liblxc1")).items() if ".so.1." in n)
    assert TOKEN in data_bytes(debian.deb("liblxc1"), lib)
    assert [f for f in debian.report["lint"] if f["severity"] == "E"] == []


def test_debian_flavor_rebuild_is_byte_identical(debian: Built) -> None:
    again = json.loads(lxcpatch(debian.workdir, "build", "--json").stdout)
    assert {p["file"]: p["sha256"] for p in again["packages"]} == {
        p["file"]: p["sha256"] for p in debian.report["packages"]
    }


@needs_root()
def test_debian_flavor_binary_runs_without_cap_sys_boot(debian: Built, tmp_path: Path) -> None:
    for package in ("lxc", "liblxc1"):
        subprocess.run(["dpkg-deb", "-x", debian.deb(package), tmp_path], check=True)
    (lib,) = {p.parent for p in tmp_path.glob("usr/lib/*/liblxc.so.1")}
    command = f"LD_LIBRARY_PATH={lib} exec {tmp_path}/usr/bin/lxc-start /bin/true"
    proc = subprocess.run(
        ["capsh", DROP_BOTH, "--", "-c", command], text=True, capture_output=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert TOKEN.decode() in proc.stderr


# --- installed in a Debian root ------------------------------------------------------------


@pytest.fixture(scope="session")
def debian_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root (CI runs as root)")
    root = tmp_path_factory.mktemp("chroot") / "bookworm"
    debootstrap(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _in_root(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chroot", str(root), *argv], text=True, capture_output=True, check=False)


def _start(root: Path, drop: str) -> subprocess.CompletedProcess[str]:
    """The installed lxc-start inside the root, with capabilities dropped by capsh."""
    return subprocess.run(
        ["capsh", drop, "--", "-c", f"exec chroot {root} /usr/bin/lxc-start /bin/true"],
        text=True,
        capture_output=True,
        check=False,
    )


def _install(root: Path, *debs: Path) -> subprocess.CompletedProcess[str]:
    inbox = root / "tmp" / "lxcpatch-debs"
    shutil.rmtree(inbox, ignore_errors=True)
    inbox.mkdir(parents=True)
    for deb in debs:
        shutil.copy(deb, inbox / deb.name)
    return _in_root(root, "dpkg", "-i", *[f"/tmp/lxcpatch-debs/{d.name}" for d in debs])


def _status(root: Path, package: str) -> str:
    proc = _in_root(root, "dpkg-query", "-W", "-f", "${Version} ${db:Status-Abbrev}", package)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def test_packages_install_in_a_debian_root_and_start_there(
    debian_root: Path, debian: Built, upstream: Built
) -> None:
    # The Debian-style packages first, as the distribution's lxc and liblxc1 would be.
    proc = _install(debian_root, debian.deb("liblxc1"), debian.deb("lxc"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _status(debian_root, "liblxc1").startswith("2.0.11-1+lxcpatch1 ii")
    started = _start(debian_root, DROP_BOTH)
    assert started.returncode == 0, started.stderr
    assert TOKEN.decode() in started.stderr

    # The upstream-flavor package installs over them: apt (what the README says to use over
    # installed distribution packages) replaces lxc and removes the liblxc1 it conflicts with.
    shutil.copy(upstream.deb("lxc"), debian_root / "tmp" / upstream.deb("lxc").name)
    proc = subprocess.run(
        ["chroot", str(debian_root), "apt-get", "install", "-y", "--allow-downgrades",
         f"/tmp/{upstream.deb('lxc').name}"],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        text=True,
        capture_output=True,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _status(debian_root, "lxc").startswith("2.0.11+lxcpatch1 ii")
    assert " ii" not in _status(debian_root, "liblxc1")
    started = _start(debian_root, DROP_BOTH)
    assert started.returncode == 0, started.stderr
    assert TOKEN.decode() in started.stderr
    assert "passed the capability step" in started.stderr
    # Where CAP_SYS_BOOT is still there but cannot be dropped, the error stays an error.
    refused = _start(debian_root, "--drop=cap_setpcap")
    assert refused.returncode != 0
    assert "Failed to remove the CAP_SYS_BOOT capability" in refused.stderr
    assert _in_root(debian_root, "dpkg", "--audit").stdout == ""
