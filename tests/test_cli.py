"""The two entry points share one collection; the CLI starts fast and maps errors to exit codes."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO, CliRunner


def test_lxcpatch_list_shows_every_task(cli: CliRunner) -> None:
    proc = cli("--list", check=True)
    from lxcpatch.tasks import ns

    for name in ns.task_names:
        assert name in proc.stdout


def test_invoke_list_matches_lxcpatch_list(cli: CliRunner) -> None:
    ours = cli("--list", check=True).stdout
    theirs = subprocess.run(
        [sys.executable, "-m", "invoke", "--list"],
        cwd=REPO,
        text=True,
        capture_output=True,
        check=True,
    ).stdout
    strip = lambda text: [line.strip() for line in text.splitlines()[1:] if line.strip()]  # noqa: E731
    assert strip(ours) == strip(theirs)


def test_task_help_documents_every_option(cli: CliRunner) -> None:
    from lxcpatch.tasks import ns

    for name in ns.task_names:
        text = cli(name, "--help", check=True).stdout
        for arg in ns[name].get_arguments():
            flag = "--" + arg.name.replace("_", "-")
            assert flag in text, f"{name} --help lacks {flag}"
        assert "--workdir" in text and "--json" in text, name


def test_cli_start_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys, lxcpatch.tasks;"
        "heavy = {'git', 'requests', 'tree_sitter', 'elftools', 'debian', 'unidiff', 'rich'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], text=True, capture_output=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_numeric_options_are_parsed_as_numbers() -> None:
    # invoke types an option by its default's type: `int | None = None` would arrive as a str.
    import inspect

    from lxcpatch.tasks import ns

    for name in ns.task_names:
        task = ns[name]
        parameters = inspect.signature(task.body).parameters
        for arg in task.get_arguments():
            annotation = str(parameters[arg.attr_name or arg.name].annotation)
            for number in ("int", "float"):
                if annotation.split(" | ")[0] == number:
                    assert arg.kind.__name__ == number, f"{name} --{arg.name} is {arg.kind}"


def test_bad_usage_exits_2_with_a_message(cli: CliRunner) -> None:
    for argv in (("build", "--jobs", "two"), ("patch", "--no-such-option")):
        proc = cli(*argv)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.startswith("error: ") and "hint: " in proc.stderr
    assert "'two'" in cli("build", "--jobs", "two").stderr
