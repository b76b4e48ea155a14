"""The CI templates: actionlint on every workflow, the matrix hand-over between jobs, the shell
steps run for real, and .gitlab-ci.yml kept equal to patches/matrix.toml."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, CliRunner

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
PACKAGES = REPO / ".github" / "workflows" / "packages.yml"
GITLAB = REPO / ".gitlab-ci.yml"


def _load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    if True in document:
        document["on"] = document.pop(True)
    return dict(document)


def _actionlint() -> str:
    found = shutil.which("actionlint") or shutil.which(
        "actionlint", path=str(Path(sys.executable).parent)
    )
    assert found, "actionlint is missing: install the test extra (pip install -e '.[test]')"
    return found


def _lint(folder: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_actionlint(), "-no-color", *map(str, files)],
        cwd=folder,
        text=True,
        capture_output=True,
        check=False,
    )


def _step(job: dict[str, Any], name: str) -> dict[str, Any]:
    for step in job["steps"]:
        if step.get("name") == name or step.get("id") == name:
            return dict(step)
    raise AssertionError(f"no step {name!r} in {[s.get('name') for s in job['steps']]}")


def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A `run:` step as GitHub runs it with `shell: bash`."""
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env={**os.environ, **env},
        text=True,
        capture_output=True,
        check=False,
    )


def test_there_are_workflows() -> None:
    assert PACKAGES in WORKFLOWS


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_passes(workflow: Path) -> None:
    proc = _lint(REPO, workflow.relative_to(REPO))
    assert proc.returncode == 0, proc.stdout + proc.stderr


BREAKAGES = {
    "unknown job in needs": (
        "    needs: matrix\n    runs-on: ubuntu-latest\n    container:",
        "    needs: matrx\n    runs-on: ubuntu-latest\n    container:",
        "matrx",
    ),
    "undefined step output": (
        "${{ steps.read.outputs.matrix }}",
        "${{ steps.reed.outputs.matrix }}",
        "reed",
    ),
    "misspelt key": (
        "    runs-on: ubuntu-latest\n    outputs:",
        "    run-on: ubuntu-latest\n    outputs:",
        "run-on",
    ),
    "bad expression": (
        "${{ fromJSON(needs.matrix.outputs.matrix) }}",
        "${{ fromJSON(needs.matrix.outputs.matrix }}",
        "fromJSON",
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES, ids=str)
def test_actionlint_finds_a_broken_workflow(tmp_path: Path, breakage: str) -> None:
    old, new, named = BREAKAGES[breakage]
    text = PACKAGES.read_text()
    assert old in text, f"the workflow no longer contains {old!r}: update this test"
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    (folder / "packages.yml").write_text(text.replace(old, new, 1))
    proc = _lint(tmp_path, Path(".github/workflows/packages.yml"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert named in proc.stdout


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_actionlint_runs_shellcheck_on_run_steps(tmp_path: Path) -> None:
    # setup.sh --test installs shellcheck; actionlint then checks every `run:` script with it.
    text = PACKAGES.read_text()
    old = 'cp "$file" "release/${entry}_$(basename "$file")"'
    assert old in text
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    (folder / "packages.yml").write_text(text.replace(old, "cp $file release/", 1))
    proc = _lint(tmp_path, Path(".github/workflows/packages.yml"))
    assert proc.returncode == 1 and "shellcheck" in proc.stdout, proc.stdout


def _matrix_from_the_workflow_step(tmp_path: Path) -> dict[str, Any]:
    """Run the matrix job's `invoke matrix --json` step as written, and read $GITHUB_OUTPUT."""
    job = _load(PACKAGES)["jobs"]["matrix"]
    script = _step(job, "read")["run"]
    if not (REPO / ".venv" / "bin" / "invoke").exists():
        # The README's set-up makes .venv in the repository; a suite run from another
        # environment uses its own invoke, in the same place relative to its Python.
        script = script.replace(".venv/bin/", f"{Path(sys.executable).parent}/")
    output = tmp_path / "github_output"
    proc = _bash(script, REPO, {"GITHUB_OUTPUT": str(output)})
    assert proc.returncode == 0, proc.stderr
    text = output.read_text()
    found = re.fullmatch(r"matrix<<(\w+)\n(.*)\n\1\n", text, re.DOTALL)
    assert found, text
    document = json.loads(found.group(2))
    assert isinstance(document, dict)
    return document


def test_the_build_job_reads_the_matrix_the_first_job_writes(tmp_path: Path) -> None:
    workflow = _load(PACKAGES)
    jobs = workflow["jobs"]
    assert jobs["matrix"]["outputs"]["matrix"] == "${{ steps.read.outputs.matrix }}"
    build = jobs["build"]
    assert build["needs"] == "matrix"
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.matrix) }}"
    assert build["strategy"]["fail-fast"] is False

    document = _matrix_from_the_workflow_step(tmp_path)
    # The whole document becomes strategy.matrix: a key besides `include` would be a dimension.
    assert list(document) == ["include"]
    entries = document["include"]
    assert entries and all(isinstance(e, dict) for e in entries)
    expressions = re.findall(r"\$\{\{(.*?)\}\}", yaml.safe_dump(build, width=1000))
    code = [re.sub(r"'[^']*'", "''", e) for e in expressions]  # not inside string literals
    used = {key for e in code for key in re.findall(r"(?<![\w.])matrix\.(\w+)", e)}
    assert {"name", "container", "tree", "fetch", "patch", "build"} <= used
    for entry in entries:
        missing = used - set(entry)
        assert not missing, f"the build job reads matrix.{sorted(missing)} that {entry} lacks"
        assert all(isinstance(v, str) for v in entry.values())
        # An artifact name may not hold any of these.
        assert not set('"/:<>|*?\\') & set(entry["name"]), entry["name"]
    assert len({e["name"] for e in entries}) == len(entries)


def test_the_build_job_runs_the_readme_setup_and_tasks() -> None:
    readme = (REPO / "README.md").read_text()
    main = re.search(r"<!-- main-command -->\n```sh\n(.*)\n```", readme)
    assert main
    setup = main.group(1).split(" && ")[0]
    assert setup == "./setup.sh"
    build = _load(PACKAGES)["jobs"]["build"]
    assert build["container"] == "${{ matrix.container }}"
    runs = [s.get("run", "") for s in build["steps"]]
    assert setup in runs
    assert runs.index(setup) < next(i for i, r in enumerate(runs) if "invoke deps" in r)
    tasks = _step(build, "invoke deps fetch patch build")["run"]
    assert tasks == 'eval ".venv/bin/invoke deps fetch $FETCH patch $PATCH build $BUILD"'
    assert any(".venv/bin/invoke verify" in r for r in runs)
    upload = _step(build, "upload the packages")
    assert upload["with"]["name"] == "debs-${{ matrix.name }}"
    assert upload["with"]["path"] == "build/debs/${{ matrix.tree }}/"
    cached = {s["with"]["path"] for s in build["steps"] if "actions/cache" in s.get("uses", "")}
    assert cached == {"~/.cache/pip", "build/cache", ".ccache"}
    assert any("CCACHE_DIR=$PWD/.ccache" in r for r in runs)


def test_the_workflow_runs_on_push_pull_request_tags_and_by_hand() -> None:
    workflow = _load(PACKAGES)
    on = workflow["on"]
    assert set(on) == {"push", "pull_request", "workflow_dispatch"}
    assert on["push"]["tags"] == ["v*"]
    release = workflow["jobs"]["release"]
    assert release["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert release["needs"] == "build"
    assert release["permissions"] == {"contents": "write"}


def test_the_build_step_passes_options_as_the_shell_would(tmp_path: Path) -> None:
    # A stand-in for `invoke` that records its argv: the step's quoting is what is tested here.
    recorder = tmp_path / ".venv" / "bin" / "invoke"
    recorder.parent.mkdir(parents=True)
    recorder.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        "open('argv.json', 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    recorder.chmod(0o755)
    from lxcpatch import matrix
    from lxcpatch.matrix import Entry, Image, Release

    awkward = Release(
        name="lxc-x",
        source="/srv/my trees/lxc's",
        ref="v1",
        patch_args=("--series", "/srv/a b/series"),
        build_args=("--configure-args", "CFLAGS='-O2 -g' --with-x=\"$HOME\""),
    )
    entries = [Entry(awkward, Image("debian:bookworm", "debian:bookworm"))]
    entries += matrix.load().entries()
    step = _step(_load(PACKAGES)["jobs"]["build"], "invoke deps fetch patch build")
    gitlab_line = _gitlab()["build"]["script"][1]
    for entry in entries:
        document = entry.to_json()
        env = {
            key: document[value.split(".")[1].rstrip(" }")] for key, value in step["env"].items()
        }
        release = entry.release
        expected = ["deps", "fetch", *release.fetch_args(), "patch", *release.patch_args]
        expected += ["build", *release.build_args]
        proc = _bash(step["run"], tmp_path, env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads((tmp_path / "argv.json").read_text()) == expected
        # GitLab runs the same line with the entry's variables, in sh when an image lacks bash.
        proc = subprocess.run(
            ["sh", "-ec", gitlab_line],
            cwd=tmp_path,
            env={**os.environ, **env},
            text=True,
            capture_output=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads((tmp_path / "argv.json").read_text()) == expected


ENTRIES = ("lxc-2.0.11-debian-bookworm", "lxc-2.0.11-ubuntu-24.04")


def _entry_files(folder: Path, entry: str) -> dict[str, bytes]:
    """What one entry's build leaves: packages whose names other entries share, other bytes."""
    folder.mkdir(parents=True)
    written = {}
    for name in ("lxc_2.0.11-lxcpatch1_amd64.deb", "liblxc1_2.0.11-lxcpatch1_amd64.deb"):
        data = f"{entry} {name}".encode()
        (folder / name).write_bytes(data)
        written[f"{entry}_{name}"] = data
    (folder / "build.json").write_text(json.dumps({"entry": entry}))
    written[f"{entry}_build.json"] = (folder / "build.json").read_bytes()
    (folder / "SHA256SUMS").write_text("")
    return written


def _check_release(folder: Path, written: dict[str, bytes]) -> None:
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "SHA256SUMS"}
    assert files == written
    check = subprocess.run(
        ["sha256sum", "--check", "--strict", "SHA256SUMS"],
        cwd=folder,
        text=True,
        capture_output=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert len(check.stdout.splitlines()) == len(written)


def test_the_github_release_step_gathers_every_package_with_one_sha256sums(tmp_path: Path) -> None:
    written: dict[str, bytes] = {}
    for entry in ENTRIES:
        written |= _entry_files(tmp_path / "dist" / f"debs-{entry}", entry)
    release = _load(PACKAGES)["jobs"]["release"]
    download = next(s for s in release["steps"] if "download-artifact" in s.get("uses", ""))
    assert download["with"] == {"pattern": "debs-*", "path": "dist"}
    proc = _bash(_step(release, "one folder of packages and one SHA256SUMS")["run"], tmp_path, {})
    assert proc.returncode == 0, proc.stderr
    _check_release(tmp_path / "release", written)


def _gitlab() -> dict[str, Any]:
    return dict(yaml.safe_load(GITLAB.read_text()))


def test_gitlab_lists_the_same_entries_as_the_matrix(cli: CliRunner) -> None:
    document = json.loads(cli("matrix", "--json", cwd=REPO, check=True).stdout)
    expected = [
        {("ENTRY" if key == "name" else key.upper()): value for key, value in entry.items()}
        for entry in document["include"]
    ]
    assert _gitlab()["build"]["parallel"]["matrix"] == expected


def test_gitlab_build_runs_the_same_steps_as_github() -> None:
    gitlab = _gitlab()
    assert gitlab["stages"] == ["build", "release"]
    build = gitlab["build"]
    assert build["image"] == "$CONTAINER"
    script = build["script"]
    assert script[0] == "./setup.sh"
    assert script[1] == 'eval ".venv/bin/invoke deps fetch $FETCH patch $PATCH build $BUILD"'
    assert any(".venv/bin/invoke verify" in line for line in script)
    assert {tuple(c["paths"]) for c in build["cache"]} == {
        (".cache/pip",),
        ("build/cache",),
        (".ccache",),
    }
    assert gitlab["variables"]["PIP_CACHE_DIR"] == "$CI_PROJECT_DIR/.cache/pip"
    assert build["artifacts"]["paths"] == ["dist/$ENTRY/"]
    release = gitlab["release"]
    assert release["rules"] == [{"if": "$CI_COMMIT_TAG =~ /^v/"}]
    assert release["release"]["tag_name"] == "$CI_COMMIT_TAG"


def test_gitlab_build_and_release_scripts_gather_every_package(tmp_path: Path) -> None:
    # Each entry's last build line (in sh: GitLab's images may lack bash), then the release
    # job's script over the artifacts of two entries.
    gitlab = _gitlab()
    copy_line = gitlab["build"]["script"][-1]
    job = tmp_path / "release-job"
    written: dict[str, bytes] = {}
    for entry in ENTRIES:
        build_job = tmp_path / entry
        written |= _entry_files(build_job / "build" / "debs" / "lxc-2.0.11", entry)
        proc = subprocess.run(
            ["sh", "-ec", copy_line],
            cwd=build_job,
            env={**os.environ, "TREE": "lxc-2.0.11", "ENTRY": entry},
            text=True,
            capture_output=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        shutil.copytree(build_job / "dist", job / "dist", dirs_exist_ok=True)
    script = "\n".join(gitlab["release"]["script"])
    proc = subprocess.run(
        ["sh", "-ec", script], cwd=job, text=True, capture_output=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    _check_release(job / "release", written)
