"""examples/Dockerfile and the README's docker commands, line by line.

No container engine runs here, so each instruction is checked in the form it can be: FROM, ARG,
VOLUME and the `docker run` options against what lxcpatch itself expects, COPY against the
build context, and every RUN, ENV and the CMD by running them in a debootstrap root (see
test_the_dockerfile_runs_in_a_debian_root)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import REPO, needs_root

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


def _doctor_capabilities(keep: set[str]) -> dict[str, Any]:
    """doctor's capability check in a process holding only `keep`, as a container would."""
    from lxcpatch.capabilities import NAMES

    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    drop = [n for n in NAMES[: last + 1] if n.removeprefix("cap_").upper() not in keep]
    proc = subprocess.run(
        [
            "capsh",
            f"--drop={','.join(drop)}",
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
