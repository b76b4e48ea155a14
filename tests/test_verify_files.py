"""verify on real ELF files: lxc-mini compiled with gcc, packaged with dpkg-deb, installed with
dpkg --root, and Debian 12's own liblxc1 downloaded with apt-get."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lxcpatch.recipes import TOKENS
from lxcpatch.verify import LiveOutcome, Status, VerifyRequest, run_live, verify
from tests.conftest import FIXTURES, CliRunner, needs_root

TRIPLET = "x86_64-linux-gnu"
LIBDIR = f"usr/lib/{TRIPLET}"
TOKEN = TOKENS["@cap-sys-boot"]

pytestmark = pytest.mark.skipif(
    os.uname().machine != "x86_64", reason="the packages are built for amd64"
)


def lxcpatch_patch(tree: Path, workdir: Path) -> None:
    """The real `lxcpatch patch` (the built-in series, @cap-sys-boot) on a copy of lxc-mini."""
    subprocess.run(
        [sys.executable, "-m", "lxcpatch", "patch", "--tree", str(tree)],
        env={**os.environ, "LXCPATCH_WORKDIR": str(workdir)},
        check=True,
        capture_output=True,
    )
    assert TOKEN.encode() in (tree / "src/lxc/start.c").read_bytes()


@dataclass(frozen=True)
class Build:
    """lxc-mini built like upstream: liblxc.so.1 and an lxc-start linked to it ($ORIGIN/../lib)."""

    prefix: Path

    @property
    def lib(self) -> Path:
        return self.prefix / "lib/liblxc.so.1.0.0"

    @property
    def binary(self) -> Path:
        return self.prefix / "bin/lxc-start"

    @property
    def plain_binary(self) -> Path:
        """The same lxc-start without RUNPATH: it finds liblxc only through the loader's paths."""
        return self.prefix / "bin/lxc-start-norpath"


def _gcc(*args: str | Path) -> None:
    subprocess.run(["gcc", "-O1", "-DHAVE_LIBCAP=1", *map(str, args)], check=True)


def build(tree: Path, prefix: Path) -> Build:
    (prefix / "lib").mkdir(parents=True)
    (prefix / "bin").mkdir()
    src = tree / "src/lxc"
    out = Build(prefix)
    _gcc("-shared", "-fPIC", f"-I{src}", src / "start.c", "-Wl,-soname,liblxc.so.1", "-o", out.lib)
    (prefix / "lib/liblxc.so.1").symlink_to("liblxc.so.1.0.0")
    link = [f"-I{src}", src / "tools/lxc_start.c", f"-L{prefix / 'lib'}", "-l:liblxc.so.1"]
    _gcc(*link, "-Wl,-rpath,$ORIGIN/../lib", "-o", out.binary)
    _gcc(*link, "-o", out.plain_binary)
    return out


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Build]:
    base = tmp_path_factory.mktemp("builds")
    made = {}
    for kind in ("unpatched", "patched"):
        tree = base / f"tree-{kind}"
        shutil.copytree(FIXTURES / "lxc-mini", tree)
        if kind == "patched":
            lxcpatch_patch(tree, base / "build")
        made[kind] = build(tree, base / kind)
    return made


def make_deb(out: Path, package: str, version: str, files: dict[str, Path | str]) -> Path:
    """A .deb made by dpkg-deb: files maps a path in the package to a file or a symlink target."""
    stage = out / f"stage-{package}-{version}"
    (stage / "DEBIAN").mkdir(parents=True)
    sums = []
    for inside, source in files.items():
        target = stage / inside
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, str):
            target.symlink_to(source)
        else:
            shutil.copy2(source, target)
            sums.append(f"{hashlib.md5(source.read_bytes()).hexdigest()}  {inside}\n")
    (stage / "DEBIAN/md5sums").write_text("".join(sums))
    (stage / "DEBIAN/control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: amd64\n"
        "Maintainer: lxcpatch tests <tests@example.invalid>\n"
        f"Description: lxc-mini {package} for lxcpatch's tests\n"
    )
    deb = out / f"{package}_{version}_amd64.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", stage, deb],
        check=True,
        capture_output=True,
    )
    return deb


@pytest.fixture(scope="module")
def debs(
    builds: dict[str, Build], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[Path]]:
    """For each build: liblxc1 (the library in the multiarch folder) and lxc (lxc-start)."""
    out = tmp_path_factory.mktemp("debs")
    made = {}
    for kind, b in builds.items():
        version = "2.0.11-1" if kind == "unpatched" else "2.0.11-1+lxcpatch1"
        made[kind] = [
            make_deb(
                out,
                "liblxc1",
                version,
                {f"{LIBDIR}/liblxc.so.1.0.0": b.lib, f"{LIBDIR}/liblxc.so.1": "liblxc.so.1.0.0"},
            ),
            make_deb(out, "lxc", version, {"usr/bin/lxc-start": b.plain_binary}),
        ]
    return made


def said(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


def verify_json(cli: CliRunner, *args: str | Path) -> tuple[int, dict[str, Any], str]:
    proc = cli("verify", "--json", *args)
    return proc.returncode, json.loads(proc.stdout), said(proc.stderr)


@pytest.mark.parametrize(
    ("kind", "status", "code"), [("unpatched", "unpatched", 1), ("patched", "patched", 0)]
)
def test_lib(cli: CliRunner, builds: dict[str, Build], kind: str, status: str, code: int) -> None:
    rc, doc, err = verify_json(cli, "--lib", builds[kind].lib)
    assert (rc, doc["status"]) == (code, status), err
    assert doc["liblxc"] == str(builds[kind].lib)
    assert doc["lxc_start"] is None
    assert doc["tokens"] == {"@cap-sys-boot": kind == "patched", "@cap-drops": False}
    assert f"verify --lib {builds[kind].lib}: {status}" in err
    assert any("Failed to remove the CAP_SYS_BOOT capability." in e for e in doc["evidence"])


@pytest.mark.parametrize(
    ("kind", "status", "code"), [("unpatched", "unpatched", 1), ("patched", "patched", 0)]
)
def test_binary_finds_liblxc_through_origin_runpath(
    cli: CliRunner, builds: dict[str, Build], kind: str, status: str, code: int
) -> None:
    rc, doc, err = verify_json(cli, "--binary", builds[kind].binary)
    assert (rc, doc["status"]) == (code, status), err
    assert doc["liblxc"] == str(builds[kind].lib)
    library = doc["files"][1]
    assert library["role"] == "liblxc"
    assert "via RUNPATH $ORIGIN/../lib" in library["found_via"]
    assert doc["files"][0]["status"] == "not-needed"  # the start code is in the library


def test_binary_without_its_library_is_unknown(cli: CliRunner, builds: dict[str, Build]) -> None:
    # Found by the real loader paths only: outside the prefix it is not there.
    rc, doc, _ = verify_json(cli, "--binary", builds["patched"].plain_binary)
    assert (rc, doc["status"]) == (2, "unknown")
    assert any("needs liblxc.so.1, not found" in e for e in doc["evidence"])


@pytest.mark.parametrize(
    ("kind", "status", "code"), [("unpatched", "unpatched", 1), ("patched", "patched", 0)]
)
def test_debs(
    cli: CliRunner, debs: dict[str, list[Path]], kind: str, status: str, code: int
) -> None:
    args = [a for d in debs[kind] for a in ("--deb", str(d))]
    rc, doc, err = verify_json(cli, *args)
    assert (rc, doc["status"]) == (code, status), err
    assert doc["lxc_start"] == "/usr/bin/lxc-start"
    assert doc["liblxc"] == f"/{LIBDIR}/liblxc.so.1.0.0"
    assert doc["version"] == ("2.0.11-1" if kind == "unpatched" else "2.0.11-1+lxcpatch1")
    assert doc["package"]["name"] == "liblxc1"
    assert doc["package"]["md5sums"] == "match"
    assert doc["package"]["origin"] == debs[kind][0].name
    assert "via multiarch" in doc["files"][1]["found_via"]


def test_debs_without_lxc_start_is_unknown(cli: CliRunner, debs: dict[str, list[Path]]) -> None:
    rc, doc, err = verify_json(cli, "--deb", debs["patched"][0])
    assert (rc, doc["status"]) == (2, "unknown")
    assert "ship no lxc-start" in err


def _root_from(debs: list[Path], root: Path) -> Path:
    for deb in debs:
        subprocess.run(["dpkg", "-x", deb, root], check=True)
    return root


@pytest.mark.parametrize(
    ("kind", "status", "code"), [("unpatched", "unpatched", 1), ("patched", "patched", 0)]
)
def test_root_made_with_dpkg_x(
    cli: CliRunner, debs: dict[str, list[Path]], tmp_path: Path, kind: str, status: str, code: int
) -> None:
    root = _root_from(debs[kind], tmp_path / "root")
    rc, doc, err = verify_json(cli, "--root", root)
    assert (rc, doc["status"]) == (code, status), err
    assert doc["liblxc"] == f"/{LIBDIR}/liblxc.so.1.0.0"
    assert doc["package"] == {}  # no dpkg database in this root


def dpkg_root(root: Path, debs: list[Path]) -> Path:
    """A root with a real dpkg database: the packages installed by dpkg --root."""
    admin = root / "var/lib/dpkg"
    (admin / "info").mkdir(parents=True)
    (admin / "updates").mkdir()
    (admin / "status").touch()
    subprocess.run(
        ["dpkg", f"--root={root}", "--force-depends", "--force-not-root", "-i", *debs],
        check=True,
        capture_output=True,
    )
    return root


@needs_root()
def test_root_with_dpkg_database_and_a_replaced_library(
    cli: CliRunner, debs: dict[str, list[Path]], builds: dict[str, Build], tmp_path: Path
) -> None:
    root = dpkg_root(tmp_path / "root", debs["unpatched"])
    rc, doc, _ = verify_json(cli, "--root", root)
    assert (rc, doc["status"]) == (1, "unpatched")
    assert doc["package"]["name"] == "liblxc1"
    assert doc["package"]["architecture"] == "amd64"
    assert doc["package"]["version"] == doc["version"] == "2.0.11-1"
    assert doc["package"]["md5sums"] == "match"
    assert doc["files"][0]["package"]["name"] == "lxc"

    # Someone copies a patched library over the packaged one: verify says patched, and says so.
    shutil.copy2(builds["patched"].lib, root / LIBDIR / "liblxc.so.1.0.0")
    rc, doc, err = verify_json(cli, "--root", root)
    assert (rc, doc["status"]) == (0, "patched")
    assert doc["package"]["md5sums"] == "mismatch"
    assert (
        doc["package"]["actual_md5"] == hashlib.md5(builds["patched"].lib.read_bytes()).hexdigest()
    )
    assert "DIFFER from its md5sums" in err


def test_root_found_through_ld_so_conf_include(
    cli: CliRunner, builds: dict[str, Build], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "opt/mini/lib").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc/ld.so.conf.d").mkdir(parents=True)
    (root / "etc/ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    (root / "etc/ld.so.conf.d/mini.conf").write_text("# lxc-mini\n/opt/mini/lib\n")
    shutil.copy2(builds["unpatched"].lib, root / "opt/mini/lib/liblxc.so.1")
    shutil.copy2(builds["unpatched"].plain_binary, root / "usr/bin/lxc-start")
    rc, doc, _ = verify_json(cli, "--root", root)
    assert (rc, doc["status"]) == (1, "unpatched")
    assert doc["liblxc"] == "/opt/mini/lib/liblxc.so.1"
    assert "via ld.so.conf" in doc["files"][1]["found_via"]


def test_root_symlinks_do_not_escape_to_the_host(
    cli: CliRunner, builds: dict[str, Build], tmp_path: Path
) -> None:
    """Absolute symlinks inside the root point into the root, never at the host's files."""
    root = tmp_path / "root"
    (root / "opt/lxc/bin").mkdir(parents=True)
    (root / "opt/lxc/lib").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy2(builds["patched"].binary, root / "opt/lxc/bin/lxc-start")
    shutil.copy2(builds["patched"].lib, root / "opt/lxc/lib/liblxc.so.1")
    (root / "usr/bin/lxc-start").symlink_to("/opt/lxc/bin/lxc-start")
    # The same absolute path exists on the host, holding the unpatched library.
    host = Path("/opt/lxc/lib")
    if host.exists():
        pytest.skip("/opt/lxc exists on this machine")
    rc, doc, _ = verify_json(cli, "--root", root)
    assert (rc, doc["status"]) == (0, "patched")
    assert doc["lxc_start"] == "/opt/lxc/bin/lxc-start"
    assert doc["liblxc"] == "/opt/lxc/lib/liblxc.so.1"

    # A library symlink pointing out of the root: not followed to the host, so not found.
    (root / "opt/lxc/lib/liblxc.so.1").unlink()
    (root / "opt/lxc/lib/liblxc.so.1").symlink_to(builds["unpatched"].lib)
    rc, doc, _ = verify_json(cli, "--root", root)
    assert (rc, doc["status"]) == (2, "unknown")


def test_root_lxc_start_first_on_path_wins(
    cli: CliRunner, builds: dict[str, Build], tmp_path: Path
) -> None:
    """An upstream `make install` in /usr/local shadows the packaged lxc-start, as PATH does."""
    root = tmp_path / "root"
    for kind, prefix in (("unpatched", "usr"), ("patched", "usr/local")):
        (root / prefix / "bin").mkdir(parents=True)
        (root / prefix / "lib").mkdir(parents=True)
        shutil.copy2(builds[kind].binary, root / prefix / "bin/lxc-start")
        shutil.copy2(builds[kind].lib, root / prefix / "lib/liblxc.so.1")
    (root / "bin").symlink_to("usr/bin")  # merged /usr: the same file twice on PATH
    rc, doc, _ = verify_json(cli, "--root", root)
    assert (rc, doc["status"]) == (0, "patched")
    assert doc["lxc_start"] == "/usr/local/bin/lxc-start"
    assert doc["liblxc"] == "/usr/local/lib/liblxc.so.1"
    shadowed = [e for e in doc["evidence"] if "shadowed" in e]
    assert shadowed == [
        "/usr/bin/lxc-start (/usr/bin/lxc-start) is another lxc-start, shadowed by "
        "/usr/local/bin/lxc-start on PATH; verify it alone with --binary"
    ]


def test_root_without_lxc_is_unknown(cli: CliRunner, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy2("/bin/true", root / "usr/bin/true")
    rc, doc, err = verify_json(cli, "--root", root)
    assert (rc, doc["status"]) == (2, "unknown")
    assert doc["lxc_start"] is None and doc["liblxc"] is None
    assert "no lxc-start in /usr/local/sbin, /usr/local/bin, /usr/sbin, /usr/bin" in err


def test_bad_targets(cli: CliRunner, tmp_path: Path, debs: dict[str, list[Path]]) -> None:
    text = tmp_path / "liblxc.so.1"
    text.write_text("not an ELF file\n")
    proc = cli("verify", "--lib", text)
    assert proc.returncode == 2
    assert "is not a readable ELF file" in said(proc.stderr)
    proc = cli("verify", "--deb", debs["patched"][0], "--root", tmp_path)
    assert proc.returncode == 2
    assert "--deb cannot be combined" in said(proc.stderr)
    proc = cli("verify", "--root", tmp_path / "missing")
    assert proc.returncode == 2
    assert "is not a folder" in said(proc.stderr)
    proc = cli("verify", "--json", "--deb", text)
    assert proc.returncode == 2
    assert "cannot read the package" in json.loads(proc.stdout)["error"]


# --- Debian 12's own LXC 5.0.2 --------------------------------------------------------------------


@pytest.fixture(scope="module")
def debian_lxc(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """liblxc1 and lxc from the distribution's archive (apt-get download, as root or not)."""
    out = tmp_path_factory.mktemp("debian")
    os.chmod(out, 0o777)  # apt's _apt user downloads into it
    subprocess.run(
        ["apt-get", "download", "-q", "liblxc1", "lxc"],
        cwd=out,
        check=True,
        capture_output=True,
    )
    found = sorted(out.glob("*.deb"))
    assert len(found) == 2, found
    return found


def test_debian_liblxc1_is_not_needed(
    cli: CliRunner, debian_lxc: list[Path], tmp_path: Path
) -> None:
    args = [a for d in debian_lxc for a in ("--deb", str(d))]
    rc, doc, err = verify_json(cli, *args)
    assert (rc, doc["status"]) == (0, "not-needed"), err
    assert doc["liblxc"].startswith(f"/{LIBDIR}/liblxc.so.1.")
    assert doc["lxc_start"] == "/usr/bin/lxc-start"
    assert doc["version"].startswith("1:5.0.")
    assert doc["package"]["md5sums"] == "match"
    # Debian links the start code into lxc-start too: both copies were read.
    assert [f["role"] for f in doc["files"]] == ["lxc-start", "liblxc"]

    root = _root_from(debian_lxc, tmp_path / "root")
    rc, doc, _ = verify_json(cli, "--root", root)
    assert (rc, doc["status"]) == (0, "not-needed")
    # The other targets through the library (the CLI's exit codes are covered above).
    report = verify(VerifyRequest(lib=root / LIBDIR / "liblxc.so.1"))
    assert (report.status, report.exit_code) == (Status.NOT_NEEDED, 0)
    report = verify(VerifyRequest(root=root, binary=root / "usr/bin/lxc-start"))
    assert (report.status, report.exit_code) == (Status.NOT_NEEDED, 0)
    assert report.liblxc is not None and report.liblxc.path.startswith(f"/{LIBDIR}/liblxc.so.1.")


@needs_root()
def test_debian_liblxc1_installed_with_dpkg(
    cli: CliRunner, debian_lxc: list[Path], tmp_path: Path
) -> None:
    library, lxc = debian_lxc
    assert library.name.startswith("liblxc1_")
    # lxc's maintainer scripts need a whole system (debconf, …): its files go in with dpkg -x.
    root = dpkg_root(tmp_path / "root", [library])
    subprocess.run(["dpkg", "-x", lxc, root], check=True)
    rc, doc, _ = verify_json(cli, "--root", root)
    assert (rc, doc["status"]) == (0, "not-needed")
    assert doc["package"]["name"] == "liblxc1"
    assert doc["package"]["origin"].startswith("dpkg database")
    assert doc["package"]["md5sums"] == "match"
    assert doc["version"].startswith("1:5.0.")
    assert doc["files"][0]["package"] == {}  # lxc-start: not in the dpkg database


# --- --live ---------------------------------------------------------------------------------------


@pytest.fixture
def private_tmp(tmp_path: Path) -> Iterator[Path]:
    """TMPDIR for the run, so that the test sees whether the throwaway lxcpath is gone."""
    live_tmp = tmp_path / "tmp"
    live_tmp.mkdir()
    yield live_tmp
    assert list(live_tmp.iterdir()) == [], "the live run left files behind"


@needs_root()
@pytest.mark.parametrize(
    ("kind", "outcome", "code"), [("unpatched", "failed", 1), ("patched", "passed", 0)]
)
def test_live_on_the_fixture(
    cli: CliRunner, builds: dict[str, Build], private_tmp: Path, kind: str, outcome: str, code: int
) -> None:
    proc = cli(
        "verify",
        "--json",
        "--live",
        "--binary",
        builds[kind].binary,
        env={"TMPDIR": str(private_tmp)},
    )
    doc = json.loads(proc.stdout)
    assert proc.returncode == code, proc.stderr
    live = doc["live"]
    assert live["outcome"] == outcome
    assert live["dialect"] == "lxc-mini"
    assert "no cap_sys_boot, no cap_setpcap" in live["child_caps"]
    if kind == "unpatched":
        assert any("Failed to remove the CAP_SYS_BOOT capability." in e for e in live["evidence"])
        assert any("Operation not permitted" in e for e in live["evidence"])
    else:
        assert any(TOKEN in e for e in live["evidence"])


@needs_root()
def test_live_times_out_and_kills_everything(builds: dict[str, Build], private_tmp: Path) -> None:
    seconds = f"{60 + os.getpid() % 1000 / 1000:.3f}"  # a sleep nobody else runs
    os.environ["TMPDIR"] = str(private_tmp)
    try:
        started = time.monotonic()
        result = run_live(
            builds["patched"].binary,
            lib_dir=None,
            new_keys=False,
            private_unified=False,
            timeout=1.5,
            command=("/bin/sleep", seconds),
        )
    finally:
        del os.environ["TMPDIR"]
    assert result.outcome is LiveOutcome.TIMED_OUT
    assert result.outcome.exit_code == 2
    assert time.monotonic() - started < 15
    time.sleep(0.2)
    running = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            running.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue  # gone meanwhile
    assert not [r for r in running if f"sleep {seconds}" in r], (
        "the PID namespace outlived the timeout"
    )
