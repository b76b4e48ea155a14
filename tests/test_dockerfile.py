"""examples/Dockerfile and the README's docker commands, line by line.

No container engine runs here, so each instruction is checked in the form it can be: FROM, ARG,
VOLUME and the `docker run` options against what lxcpatch itself expects, COPY against the
build context, and every RUN, ENV and the CMD by running them in a debootstrap root (see
test_the_dockerfile_runs_in_a_debian_root)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, needs_root
from tests.matrix_helpers import MatrixRun

DOCKERFILE = REPO / "examples" / "Dockerfile"
DOCKERIGNORE = REPO / "examples" / "Dockerfile.dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with their continuation lines joined; comments and blank lines dropped."""
    instructions = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            instructions.append(Instruction(keyword.upper(), " ".join(args.split())))
    return instructions


INSTRUCTIONS = parse_dockerfile(DOCKERFILE.read_text())


def _all(keyword: str) -> list[str]:
    return [i.args for i in INSTRUCTIONS if i.keyword == keyword]


def _readme_commands() -> tuple[list[str], list[str]]:
    """The `docker build` and `docker run` lines of the README's container section."""
    section = (
        (REPO / "README.md")
        .read_text()
        .split("\n## Installing the packages inside a container\n", 1)[1]
    )
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, "the README's container section has no sh block"
    lines = shlex.split(block.group(1).replace("\\\n", " "), comments=True)
    commands: list[list[str]] = [[]]
    for word in lines:
        if word == "docker" and commands[-1]:
            commands.append([])
        commands[-1].append(word)
    build, run = commands
    assert build[:2] == ["docker", "build"] and run[:2] == ["docker", "run"]
    return build, run


def _options(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == name]


def test_every_instruction_is_one_this_file_checks() -> None:
    assert {i.keyword for i in INSTRUCTIONS} <= {
        "FROM",
        "ARG",
        "ENV",
        "COPY",
        "RUN",
        "VOLUME",
        "CMD",
    }
    assert INSTRUCTIONS[0].keyword == "FROM"


def test_from_is_a_distribution_ci_builds_packages_for() -> None:
    from lxcpatch import matrix

    (image,) = _all("FROM")
    assert image == "debian:bookworm"
    assert image in {i.name for i in matrix.load().images}


def test_arg_tree_defaults_to_the_main_commands_tree() -> None:
    (arg,) = _all("ARG")
    name, default = arg.split("=")
    readme = (REPO / "README.md").read_text()
    produced = re.search(r"land in `build/debs/([^/`]+)/`", readme)
    assert produced, "the README no longer says where the main command's packages land"
    assert (name, default) == ("TREE", produced.group(1))
    build, _ = _readme_commands()
    assert _options(build, "--build-arg") == [f"TREE={default}"]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent wins."""
    parts = path.strip("/").split("/")
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        for n in range(1, len(parts) + 1):
            if fnmatch.fnmatch("/".join(parts[:n]), pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(parts[n - 1], pattern[3:])
            ):
                ignored = not negated
                break
    return ignored


def test_copy_sources_are_in_the_build_context_and_not_ignored() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    build, _ = _readme_commands()
    assert _options(build, "-f") == ["examples/Dockerfile"] and build[-1] == "."
    tree = _all("ARG")[0].split("=")[1]
    for copy in _all("COPY"):
        *sources, _ = copy.split()
        for source in sources:
            source = source.replace("${TREE}", tree)
            assert not _ignored(source, patterns), f"{source} is excluded from the context"
            if not source.startswith("build/"):
                assert (REPO / source).exists(), source
    for heavy in (".venv", "build/cache", "build/src/lxc-2.0.11", ".git", "tests"):
        assert _ignored(heavy, patterns), f"{heavy} would be sent to the docker daemon"
    assert _ignored("src/lxcpatch/__pycache__", patterns)


def test_volumes_are_the_folders_doctor_checks() -> None:
    from lxcpatch.doctor import DEFAULT_VAR_LIB

    (volume,) = _all("VOLUME")
    folders = json.loads(volume)
    assert sorted(folders) == sorted(str(p) for p in DEFAULT_VAR_LIB)
    _, run = _readme_commands()
    targets = [v.split(":")[1] for v in _options(run, "-v")]
    assert sorted(targets) == sorted(folders)


# Docker's default capability set (moby: oci/caps/defaults.go); `--cap-add` adds to it.
DOCKER_DEFAULT_CAPS = {
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
}  # fmt: skip


def _dropped(keep: set[str]) -> list[str]:
    """Every capability this kernel knows but those in `keep` (named as Docker names them)."""
    from lxcpatch.capabilities import NAMES

    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    return [n for n in NAMES[: last + 1] if n.removeprefix("cap_").upper() not in keep]


def _doctor_capabilities(keep: set[str]) -> dict[str, Any]:
    """doctor's capability check in a process holding only `keep`, as a container would."""
    proc = subprocess.run(
        [
            "capsh",
            f"--drop={','.join(_dropped(keep))}",
            "--",
            "-c",
            f"{sys.executable} -m lxcpatch doctor --only capabilities --json",
        ],
        text=True,
        capture_output=True,
        check=False,
    )
    check: dict[str, Any] = json.loads(proc.stdout)["checks"][0]
    return check


@needs_root()
def test_the_run_options_are_the_least_doctor_asks_for() -> None:
    _, run = _readme_commands()
    added = set(_options(run, "--cap-add"))
    assert added == {"NET_RAW", "SYS_ADMIN"}
    assert _options(run, "--security-opt") == ["apparmor=unconfined"]
    assert "--privileged" not in run
    build, _ = _readme_commands()
    assert run[-1] == _options(build, "-t")[0]
    assert _doctor_capabilities(DOCKER_DEFAULT_CAPS | added)["verdict"] == "pass"
    # Less is not enough (NET_RAW is in Docker's default set, but not in every engine's: the
    # README adds it explicitly).
    for cap in sorted(added):
        check = _doctor_capabilities((DOCKER_DEFAULT_CAPS | added) - {cap})
        assert check["verdict"] == "fail", check


def test_cmd_runs_doctor_then_verify() -> None:
    from lxcpatch.tasks import ns

    (cmd,) = _all("CMD")
    argv = json.loads(cmd)
    assert argv[:2] == ["sh", "-c"]
    commands = [shlex.split(part) for part in argv[2].split(";")]
    assert commands == [["lxcpatch", "doctor"], ["lxcpatch", "verify"]]
    assert {"doctor", "verify"} <= set(ns.task_names)


# --- the whole file, run in a Debian 12 root -------------------------------------------------

# What the debian:bookworm image's config sets; ENV lines add to it.
IMAGE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
}


def _expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), ""), text
    )


def _context(folder: Path, debs: Path, tree: str) -> Path:
    """The build context `docker build … .` sends: the repository as the .dockerignore
    filters it, plus the packages in build/debs/TREE/ (here the fixture's)."""
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in sorted(REPO.iterdir()):
        if path.name in {"build", ".git", ".venv"}:
            continue
        for file in [path] if path.is_file() else sorted(path.rglob("*")):
            relative = file.relative_to(REPO).as_posix()
            if file.is_file() and not _ignored(relative, patterns):
                (folder / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, folder / relative)
    assert not _ignored(f"build/debs/{tree}/x.deb", patterns)
    shutil.copytree(debs, folder / "build" / "debs" / tree)
    return folder


@dataclass
class Emulation:
    """`docker build` without an engine: each instruction applied to a root folder, RUN and the
    CMD through chroot in a private mount namespace (proc mounted, DNS as Docker provides it)."""

    root: Path
    context: Path
    build_args: dict[str, str]
    env: dict[str, str]
    volumes: list[str]
    cmd: list[str]
    apt_cache: Path

    def apply(self, instruction: Instruction) -> None:
        keyword, args = instruction.keyword, instruction.args
        variables = {**self.env, **self.build_args}
        if keyword == "FROM":
            distro, release = args.split(":")
            release_file = (self.root / "etc" / "os-release").read_text()
            assert f"ID={distro}" in release_file and f"VERSION_CODENAME={release}" in release_file
        elif keyword == "ARG":
            name, default = args.split("=", 1)
            self.build_args.setdefault(name, default)
        elif keyword == "ENV":
            name, value = args.split("=", 1)
            self.env[name] = _expand(value, variables)
        elif keyword == "COPY":
            *sources, target = (_expand(word, variables) for word in args.split())
            destination = self.root / target.lstrip("/")
            destination.mkdir(parents=True, exist_ok=True)
            for source in sources:
                path = self.context / source
                if path.is_dir():
                    shutil.copytree(path, destination, dirs_exist_ok=True)
                else:
                    shutil.copy2(path, destination / path.name)
        elif keyword == "RUN":
            proc = self.run(["/bin/sh", "-c", args])
            assert proc.returncode == 0, f"RUN {args}\n{proc.stdout}\n{proc.stderr}"
        elif keyword == "VOLUME":
            self.volumes = json.loads(args)
        elif keyword == "CMD":
            self.cmd = json.loads(args)

    def run(
        self, argv: list[str], *, layer: Path | None = None, keep: set[str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """argv inside the root. With `layer`, the root is the lower layer of an overlay whose
        upper layer is `layer` (Docker's container layer) and each VOLUME is a folder of its
        own bind-mounted there; with `keep`, only those capabilities are left."""
        shutil.copy2("/etc/resolv.conf", self.root / "etc" / "resolv.conf")
        lines = ['root="$1"; shift']
        extra_env = {}
        if layer is None:
            # Downloads kept between test runs, as a BuildKit cache mount would keep them.
            lines.append(f'mount --bind {self.apt_cache} "$root/var/cache/apt/archives"')
            host_ca = os.environ.get("PIP_CERT")
            if host_ca:
                # This machine reaches PyPI through a proxy whose CA only the host trusts (that
                # is what PIP_CERT says); a docker build here would need the same certificate.
                (self.root / "run" / "host-ca.crt").touch()
                lines.append(f'mount --bind {host_ca} "$root/run/host-ca.crt"')
                extra_env["PIP_CERT"] = "/run/host-ca.crt"
        else:
            for part in ("upper", "work", "merged"):
                (layer / part).mkdir(parents=True, exist_ok=True)
            lines.append(
                f"mount -t overlay overlay -o lowerdir=$root,upperdir={layer}/upper,"
                f"workdir={layer}/work {layer}/merged"
            )
            lines.append(f'root="{layer}/merged"')
            for n, volume in enumerate(self.volumes):
                (layer / f"volume{n}").mkdir(exist_ok=True)
                lines.append(f'mkdir -p "$root{volume}"')
                lines.append(f'mount --bind {layer}/volume{n} "$root{volume}"')
        lines.append('mount -t proc proc "$root/proc"')
        lines.append('exec chroot "$root" /usr/bin/env -i "$@"')
        command = unshare = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-ec",
            "\n".join(lines),
            "sh",
            str(self.root),
            *(f"{name}={value}" for name, value in {**self.env, **extra_env}.items()),
            *argv,
        ]
        if keep is not None:
            command = ["capsh", f"--drop={','.join(_dropped(keep))}", "--", "-c", 'exec "$@"', "sh"]
            command += unshare
        return subprocess.run(command, text=True, capture_output=True, check=False, timeout=900)


@pytest.mark.slow
@needs_root()
def test_the_dockerfile_runs_in_a_debian_root(
    tmp_path: Path, fixture_matrix_run: MatrixRun
) -> None:
    # The build issue's cached debootstrap root of Debian 12 (one cache for the whole suite).
    from tests.debian_root import cache_dir, debootstrap

    # The packages of one fixture entry that `matrix --run` built.
    debs = fixture_matrix_run.debs("mini-dir")
    assert list(debs.glob("*.deb"))
    root = tmp_path / "root"
    debootstrap(root)
    apt_cache = cache_dir() / "dockerfile-apt-archives"
    (apt_cache / "partial").mkdir(parents=True, exist_ok=True)
    image = Emulation(
        root=root,
        context=_context(tmp_path / "context", debs, "mini-dir"),
        build_args={"TREE": "mini-dir"},  # docker build --build-arg TREE=mini-dir
        env=dict(IMAGE_ENV),
        volumes=[],
        cmd=[],
        apt_cache=apt_cache,
    )
    for instruction in INSTRUCTIONS:
        image.apply(instruction)

    # What the RUN lines left: the packages installed by apt, no leftovers, lxcpatch on PATH.
    status = image.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\\n"])
    installed = dict(line.split(" ", 1) for line in status.stdout.splitlines())
    for deb in debs.glob("*.deb"):
        package = subprocess.run(
            ["dpkg-deb", "--field", deb, "Package"], text=True, capture_output=True, check=True
        ).stdout.strip()
        assert installed.get(package, "").strip() == "ii", package
    assert not (root / "tmp" / "debs").exists()
    assert not list((root / "var" / "lib" / "apt" / "lists").glob("*_Packages"))
    assert image.run(["sh", "-c", "command -v lxcpatch"]).stdout.strip() == (
        "/opt/lxcpatch/venv/bin/lxcpatch"
    )

    # `docker run` with the README's options: Docker's capabilities plus the two added, an
    # overlay root, and the volumes; the CMD exactly as written, then each part as JSON.
    keep = DOCKER_DEFAULT_CAPS | set(_options(_readme_commands()[1], "--cap-add"))
    proc = image.run(image.cmd, layer=tmp_path / "container", keep=keep)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the exit code is verify's
    assert "patched" in proc.stderr
    doctor = image.run(["lxcpatch", "doctor", "--json"], layer=tmp_path / "c2", keep=keep)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert set(checks) == {"capabilities", "apparmor", "storage", "cgroups", "bridge", "lxc-start"}
    for name in ("capabilities", "storage", "lxc-start"):
        assert checks[name]["verdict"] == "pass", checks[name]
    verify = image.run(["lxcpatch", "verify", "--json"], layer=tmp_path / "c3", keep=keep)
    assert json.loads(verify.stdout)["status"] == "patched"

    # Without the volumes the nested engines' folders are on the overlay, and doctor says so.
    image.volumes = []
    bare = image.run(["lxcpatch", "doctor", "--only", "storage", "--json"], layer=tmp_path / "c4")
    assert json.loads(bare.stdout)["checks"][0]["verdict"] == "fail"
