"""The one subprocess wrapper: argv lists only, C.UTF-8 locale, `+ argv` logged at debug level."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

from lxcpatch.errors import CommandError, PrerequisiteError

log = logging.getLogger(__name__)

# The Debian package to install when a program is missing.
PACKAGE_FOR: dict[str, str] = {
    "apt-get": "apt",
    "autoreconf": "autoconf",
    "automake": "automake",
    "capsh": "libcap2-bin",
    "ccache": "ccache",
    "chroot": "coreutils",
    "debootstrap": "debootstrap",
    "dh": "debhelper",
    "dpkg": "dpkg",
    "dpkg-architecture": "dpkg-dev",
    "dpkg-buildpackage": "dpkg-dev",
    "dpkg-deb": "dpkg",
    "dpkg-scansources": "dpkg-dev",
    "dpkg-shlibdeps": "dpkg-dev",
    "dpkg-source": "dpkg-dev",
    "fakeroot": "fakeroot",
    "gcc": "gcc",
    "git": "git",
    "ip": "iproute2",
    "libtoolize": "libtool",
    "lintian": "lintian",
    "make": "make",
    "meson": "meson",
    "mountpoint": "util-linux",
    "ninja": "ninja-build",
    "pkg-config": "pkg-config",
    "spatch": "coccinelle",
    "strip": "binutils",
    "sudo": "sudo",
    "unshare": "util-linux",
}

TAIL_LINES = 30


def which(program: str) -> str:
    """The full path of `program`, or PrerequisiteError naming the package that provides it."""
    found = shutil.which(program)
    if found is None:
        package = PACKAGE_FOR.get(program, program)
        raise PrerequisiteError(
            f"{program} not found",
            hint=f"install it: apt-get install {package} (or run `invoke deps`)",
        )
    return found


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run(
    argv: Sequence[str | PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input: str | None = None,
    logfile: Path | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv and return its result with stdout and stderr captured as text.

    With `logfile`, both streams go to that file instead (appended) and a failure quotes its tail.
    `env` adds to (not replaces) the current environment.
    """
    args = [str(a) for a in argv]
    if os.sep not in args[0]:
        which(args[0])
    full_env = {**os.environ, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", **(env or {})}
    log.debug("+ %s", " ".join(args))
    try:
        if logfile is None:
            proc = subprocess.run(
                args,
                cwd=cwd,
                env=full_env,
                input=input,
                text=True,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
            output = proc.stderr or proc.stdout
        else:
            logfile.parent.mkdir(parents=True, exist_ok=True)
            with logfile.open("a", encoding="utf-8", errors="replace") as fh:
                fh.write(f"+ {' '.join(args)}\n")
                fh.flush()
                proc = subprocess.run(
                    args,
                    cwd=cwd,
                    env=full_env,
                    input=input,
                    text=True,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    check=False,
                )
            output = logfile.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError as exc:
        if cwd is not None and not cwd.is_dir():
            raise PrerequisiteError(
                f"folder {cwd} does not exist (needed to run {args[0]})"
            ) from exc
        package = PACKAGE_FOR.get(Path(args[0]).name, Path(args[0]).name)
        raise PrerequisiteError(
            f"{args[0]} not found", hint=f"install it: apt-get install {package}"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(args, -1, f"timed out after {timeout} s") from exc
    if check and proc.returncode != 0:
        raise CommandError(
            args, proc.returncode, tail(output), log=str(logfile) if logfile else None
        )
    return proc
