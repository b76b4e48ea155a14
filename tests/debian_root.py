"""A Debian 12 minbase root for tests that install packages into a container root.

The first run downloads with debootstrap (about 44 MB) and keeps both the packages and the
finished root as tarballs in the test cache ($LXCPATCH_TEST_CACHE, else ~/.cache/lxcpatch-tests);
later runs, and other test files, unpack the finished root without any download.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"


def cache_dir() -> Path:
    chosen = os.environ.get("LXCPATCH_TEST_CACHE") or Path.home() / ".cache" / "lxcpatch-tests"
    cache = Path(chosen)
    cache.mkdir(parents=True, exist_ok=True)
    return cache


@contextlib.contextmanager
def _cache_lock(cache: Path) -> Iterator[None]:
    with (cache / "debootstrap.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def debootstrap(root: Path) -> None:
    """A Debian 12 minbase root from the cache: the first run downloads (debootstrap
    --make-tarball) and installs once, later runs unpack the finished root."""
    cache = cache_dir()
    packages = cache / "bookworm-minbase-debs.tgz"
    finished = cache / "bookworm-minbase-root.tar"
    options = ["--variant=minbase", "--include=libcap2"]
    with _cache_lock(cache):
        if not finished.is_file():
            if not packages.is_file():
                scratch = cache / "make-tarball"
                shutil.rmtree(scratch, ignore_errors=True)
                partial = cache / "bookworm-minbase-debs.tgz.part"
                subprocess.run(
                    [
                        "debootstrap",
                        *options,
                        f"--make-tarball={partial}",
                        "bookworm",
                        scratch,
                        MIRROR,
                    ],
                    capture_output=True,
                    check=True,
                )
                shutil.rmtree(scratch, ignore_errors=True)
                partial.rename(packages)
            subprocess.run(
                ["debootstrap", *options, f"--unpack-tarball={packages}", "bookworm", root, MIRROR],
                capture_output=True,
                check=True,
            )
            partial = cache / "bookworm-minbase-root.tar.part"
            subprocess.run(["tar", "-C", root, "-cf", partial, "."], check=True)
            partial.rename(finished)
            return
    root.mkdir(parents=True)
    subprocess.run(["tar", "-C", root, "-xpf", finished], check=True)
