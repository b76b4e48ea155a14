"""Lint and types are tests: ruff (check and format) over the repository, mypy --strict on src/."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def _run(*argv: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", *argv], cwd=REPO, text=True, capture_output=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_check() -> None:
    _run("ruff", "check", ".")


def test_ruff_format() -> None:
    _run("ruff", "format", "--check", ".")


def test_mypy_strict() -> None:
    _run("mypy", "--strict", "src/")
