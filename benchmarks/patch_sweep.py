#!/usr/bin/env python3
"""Speed of `lxcpatch patch --check` over many LXC trees, against Coccinelle's spatch.

    .venv/bin/python benchmarks/patch_sweep.py                  # every tag of the LXC mirror
    .venv/bin/python benchmarks/patch_sweep.py --trees DIR      # every tree folder in DIR
    .venv/bin/python benchmarks/patch_sweep.py --mirror GIT_DIR

The mirror defaults to $LXCPATCH_LXC_MIRROR; each tag's start.c is `git archive`d into a
temporary tree. Where spatch is installed, benchmarks/cap_sys_boot.cocci (the same rewrite)
runs over the same files. Targets: the batch at least 20x faster than spatch, and one
`lxcpatch patch --check` process on one tree no slower than one spatch run on one file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
COCCI = HERE / "cap_sys_boot.cocci"
START_C = ("src/lxc/start.c", "src/liblxc/start.c")


def trees_from_mirror(mirror: str, dest: Path) -> list[Path]:
    def git(*args: str) -> bytes:
        return subprocess.run(
            ["git", f"--git-dir={mirror}", *args], capture_output=True, check=True
        ).stdout

    trees = []
    for tag in git("tag", "--sort=creatordate").decode().split():
        for name in START_C:
            if git("ls-tree", "--name-only", tag, "--", name).strip():
                tree = dest / tag
                tree.mkdir(parents=True)
                with tarfile.open(fileobj=io.BytesIO(git("archive", tag, "--", name))) as tar:
                    tar.extractall(tree, filter="data")
                trees.append(tree)
                break
    return trees


def start_c(tree: Path) -> Path:
    return next(tree / n for n in START_C if (tree / n).is_file())


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    began = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - began
    if proc.returncode != 0:
        sys.exit(f"{argv[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout


def lxcpatch(trees: list[Path], workdir: Path) -> list[str]:
    argv = [sys.executable, "-m", "lxcpatch", "patch", "--check", "--json"]
    for tree in trees:
        argv += ["--tree", str(tree)]
    return argv


def spatch(target: Path) -> list[str]:
    where = ["--dir", str(target)] if target.is_dir() else [str(target)]
    return ["spatch", "--sp-file", str(COCCI), "--no-includes", "--very-quiet", *where]


def best_of(runs: int, argv: list[str], env: dict[str, str] | None = None) -> list[float]:
    return [timed(argv, env)[0] for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--trees", type=Path, help="a folder whose sub-folders are LXC trees")
    source.add_argument("--mirror", default=os.environ.get("LXCPATCH_LXC_MIRROR"))
    parser.add_argument("--repeat", type=int, default=7, help="runs of the single-tree timing")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lxcpatch-bench-") as tmp:
        scratch = Path(tmp)
        if args.trees:
            trees = sorted(p for p in args.trees.iterdir() if p.is_dir())
        elif args.mirror:
            trees = trees_from_mirror(args.mirror, scratch / "trees")
        else:
            sys.exit("name --trees DIR or --mirror GIT_DIR (or set LXCPATCH_LXC_MIRROR)")
        # As installed: Python caches bytecode (some sandboxes set PYTHONDONTWRITEBYTECODE).
        env = {**os.environ, "LXCPATCH_WORKDIR": str(scratch / "build")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        timed(lxcpatch(trees[:1], scratch / "build"), env)  # warm-up: bytecode, page cache

        elapsed, out = timed(lxcpatch(trees, scratch / "build"), env)
        outcomes = Counter(r["status"] for t in json.loads(out)["trees"] for r in t["results"])
        print(f"lxcpatch patch --check: {len(trees)} trees in {elapsed:.2f} s "
              f"= {len(trees) / elapsed:.1f} trees/s ({dict(outcomes)})")  # fmt: skip

        single_tree = next((t for t in trees if t.name == "lxc-2.0.11"), trees[-1])
        if shutil.which("spatch") is None:
            ours = best_of(args.repeat, lxcpatch([single_tree], scratch / "build"), env)
            print(f"one lxcpatch process, one tree ({single_tree.name}): "
                  f"median {statistics.median(ours):.3f} s")  # fmt: skip
            print("spatch not installed (apt-get install coccinelle): no comparison")
            return
        files = scratch / "spatch"
        for tree in trees:
            (files / tree.name).mkdir(parents=True)
            shutil.copy(start_c(tree), files / tree.name / "start.c")
        theirs, diff = timed(spatch(files))
        changed = diff.count("\n+++ ")
        print(f"spatch {COCCI.name}: {len(trees)} files in {theirs:.2f} s "
              f"= {len(trees) / theirs:.1f} files/s ({changed} changed)")  # fmt: skip
        ratio = theirs / elapsed
        print(f"batch: lxcpatch is {ratio:.1f}x faster than spatch "
              f"(target >= 20x: {'met' if ratio >= 20 else 'MISSED'})")  # fmt: skip

        # Alternate the two so that both see the same load on the machine.
        ours, one = [], []
        for _ in range(args.repeat):
            ours += best_of(1, lxcpatch([single_tree], scratch / "build"), env)
            one += best_of(1, spatch(files / single_tree.name / "start.c"))
        print(f"one lxcpatch process, one tree ({single_tree.name}): "
              f"min {min(ours):.3f} s, median {statistics.median(ours):.3f} s")  # fmt: skip
        print(f"one spatch run, one file: min {min(one):.3f} s, "
              f"median {statistics.median(one):.3f} s")  # fmt: skip
        verdict = "met" if statistics.median(ours) <= statistics.median(one) else "MISSED"
        print(
            f"single: lxcpatch {statistics.median(ours):.3f} s vs spatch "
            f"{statistics.median(one):.3f} s (median; target lxcpatch <= spatch: {verdict})"
        )


if __name__ == "__main__":
    main()
