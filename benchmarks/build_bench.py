#!/usr/bin/env python3
"""How much `lxcpatch build` costs beyond the tools it runs, and what a rebuild costs.

    .venv/bin/python benchmarks/build_bench.py                            # lxc-mini (the fixture)
    .venv/bin/python benchmarks/build_bench.py --source /srv/lxc.git --ref lxc-2.0.11

In a fresh workspace: fetch, patch, then
1. a clean build (empty build folder, empty ccache);
2. "touching the patch": revert, and patch again with a series that adds a one-line static patch
   to start.c after @cap-sys-boot; then a rebuild (the kept build folder, ccache);
3. for comparison, a build from a fresh build folder with the warm ccache only.
It reads `build.json` of each: overhead = total_seconds - tool_seconds (the time of every program
build runs). Targets: overhead under 5 % of a clean build, and the rebuild under 30 % of the
clean build. Exit 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "lxc-mini"
OVERHEAD_TARGET = 0.05
REBUILD_TARGET = 0.30


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def lxcpatch(workdir: Path, *args: str) -> tuple[float, str]:
    began = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "lxcpatch", *args],
        env={**os.environ, "LXCPATCH_WORKDIR": str(workdir), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"lxcpatch {' '.join(args)} failed:\n{proc.stderr}")
    return time.perf_counter() - began, proc.stdout


def build(workdir: Path, tree: str, jobs: str | None) -> dict[str, Any]:
    cpu = cpu_of_children()
    wall, _ = lxcpatch(workdir, "build", *(["--jobs", jobs] if jobs else []))
    record: dict[str, Any] = json.loads((workdir / "debs" / tree / "build.json").read_text())
    record["wall_seconds"] = wall
    # CPU time of the build and everything it ran: steadier than wall time on a busy machine.
    record["cpu_seconds"] = cpu_of_children() - cpu
    return record


def touch_patch(workdir: Path, tree: str, scratch: Path, number: int) -> None:
    """Patch again with one more static patch after the recipe: the patch set changes."""
    lxcpatch(workdir, "patch", "--revert")
    lxcpatch(workdir, "patch")
    start = workdir / "src" / tree / "src" / "lxc" / "start.c"
    old = start.read_text(encoding="utf-8", errors="surrogateescape")
    new = f"/* touched by lxcpatch's build benchmark, {number} */\n" + old
    diff = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        "a/src/lxc/start.c",
        "b/src/lxc/start.c",
    )
    (scratch / "touch.patch").write_text(
        "Description: one more comment line (build benchmark)\n---\n" + "".join(diff),
        encoding="utf-8",
        errors="surrogateescape",
    )
    (scratch / "series").write_text("@cap-sys-boot\ntouch.patch\n")
    lxcpatch(workdir, "patch", "--revert")
    lxcpatch(workdir, "patch", "--series", str(scratch / "series"))


def line(label: str, record: dict[str, Any], clean: float | None = None) -> str:
    total, tools = record["total_seconds"], record["tool_seconds"]
    overhead = total - tools
    text = (
        f"{label:<36} total {total:6.1f} s  tools {tools:6.1f} s  "
        f"overhead {overhead:4.2f} s ({100 * overhead / total:4.1f} %)  "
        f"cpu {record['cpu_seconds']:6.1f} s"
    )
    if clean:
        text += f"  = {100 * total / clean:5.1f} % of the clean build"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(FIXTURE), help="what `lxcpatch fetch` takes")
    parser.add_argument("--ref", help="git ref to fetch")
    parser.add_argument("--name", default="bench", help="tree name")
    parser.add_argument("--jobs", help="build --jobs (default: the number of processors)")
    parser.add_argument("--workdir", help="workspace to use (default: a temporary one)")
    parser.add_argument(
        "--rebuilds", type=int, default=3, help="touch-and-rebuild rounds (the median counts)"
    )
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="lxcpatch-build-bench-"))
    workdir = Path(args.workdir) if args.workdir else scratch / "build"
    try:
        fetch = ["fetch", "--source", args.source, "--name", args.name, "--force"]
        lxcpatch(workdir, *fetch, *(["--ref", args.ref] if args.ref else []))
        shutil.rmtree(workdir / "work" / args.name, ignore_errors=True)
        shutil.rmtree(workdir / "cache" / "ccache", ignore_errors=True)
        lxcpatch(workdir, "patch")
        clean = build(workdir, args.name, args.jobs)
        rebuilds = []
        for number in range(1, args.rebuilds + 1):
            touch_patch(workdir, args.name, scratch, number)
            rebuilds.append(build(workdir, args.name, args.jobs))
        rebuild = sorted(rebuilds, key=lambda r: float(r["total_seconds"]))[len(rebuilds) // 2]
        shutil.rmtree(workdir / "work" / args.name)
        warm = build(workdir, args.name, args.jobs)
    finally:
        if not args.workdir:
            shutil.rmtree(scratch, ignore_errors=True)

    base = clean["total_seconds"]
    print(f"lxcpatch build benchmark: {args.source} {args.ref or ''} (jobs {clean['jobs']})")
    print(line("clean build (cold ccache)", clean))
    for number, record in enumerate(rebuilds, start=1):
        print(line(f"rebuild {number} after touching the patch", record, base))
    print(line("fresh build folder, warm ccache", warm, base))
    for record, label in ((clean, "clean"), (rebuild, "rebuild")):
        steps = ", ".join(
            f"{s['step']} {s['seconds']:.1f}" + (" (reused)" if s["reused"] else "")
            for s in record["steps"]
        )
        print(f"  {label} steps: {steps}")
    overhead = (base - clean["tool_seconds"]) / base
    ratio = rebuild["total_seconds"] / base
    cpu_ratio = statistics.median(r["cpu_seconds"] for r in rebuilds) / clean["cpu_seconds"]
    print(
        f"overhead {100 * overhead:.1f} % (target < {100 * OVERHEAD_TARGET:.0f} %): "
        f"{'ok' if overhead < OVERHEAD_TARGET else 'MISSED'}; "
        f"median rebuild {100 * ratio:.1f} % of clean (target < {100 * REBUILD_TARGET:.0f} %): "
        f"{'ok' if ratio < REBUILD_TARGET else 'MISSED'}; in CPU time {100 * cpu_ratio:.1f} %"
    )
    return 0 if overhead < OVERHEAD_TARGET and ratio < REBUILD_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
