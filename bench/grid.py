"""The study's grid, local launcher vs Ray, wall time end to end (issue 19).

    python bench/grid.py [--methods lora,full_layer,hybrid,hybrid_shared] [--seeds 42,43] [--preset smoke]

A grid of methods × seeds (8 smoke-sized cells by default) runs through `codecl run` as a user runs it:
  - local:  `--launcher local`, the runs one after another in one process, at its best thread setting
            (torch threads 1 and 2 are both measured in the first round; the faster is the reference);
  - ray:    `--launcher ray --trial-cpus 1`: a local Ray started for the run, one trial per core, 1 thread each
            (Ray's start-up and every trial's loading of the cached base and data are inside the time).
Warm-up excluded on both sides: the embedded corpus and base are built into the cache before any timed run
(`codecl pretrain`), so every timed run reads them. Order alternated: round 1 local then ray, round 2 ray
then local. Each side's time is the mean of its runs; the ratio is local / ray (> 1: Ray is faster).
Run it on an idle machine: two processes on two cores slow each other several-fold.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _codecl(args: list[str], env: dict) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "codecl", *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"codecl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--methods", default="lora,full_layer,hybrid,hybrid_shared")
    parser.add_argument("--seeds", default="42,43")
    parser.add_argument("--json", help="write the figures here as JSON")
    args = parser.parse_args()
    cells = len(args.methods.split(",")) * len(args.seeds.split(","))
    work = Path(tempfile.mkdtemp(prefix="codecl-grid-"))
    env = {**os.environ, "CODECL_CACHE": str(work / "cache"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("OMP_NUM_THREADS", None)
    common = ["run", "--preset", args.preset, "--methods", args.methods, "--seeds", args.seeds, "--quiet"]
    warm = _codecl(["pretrain", "--preset", args.preset, "--quiet"], env)
    print(f"warm-up (corpus + base into the cache, not timed below): {warm:.1f} s", flush=True)
    times: dict[str, list[float]] = {"local-1-thread": [], "local-2-threads": [], "ray": []}
    n = 0

    def local(threads: int) -> None:
        nonlocal n
        n += 1
        t = _codecl([*common, "--threads", str(threads), "--output-dir", str(work / f"run{n}")], env)
        times[f"local-{threads}-thread{'s' if threads > 1 else ''}"].append(t)
        print(f"local, {threads} thread(s): {t:.1f} s", flush=True)

    def ray() -> None:
        nonlocal n
        n += 1
        t = _codecl([*common, "--launcher", "ray", "--trial-cpus", "1", "--output-dir", str(work / f"run{n}")], env)
        times["ray"].append(t)
        print(f"ray, {os.cpu_count()} trials at once, 1 thread each: {t:.1f} s", flush=True)

    local(1)  # round 1: local (both thread settings), then ray
    local(2)
    ray()
    best = min(("local-1-thread", "local-2-threads"), key=lambda k: times[k][0])
    ray()  # round 2: ray, then local at its best setting
    local(1 if best == "local-1-thread" else 2)
    mean = {k: sum(v) / len(v) for k, v in times.items() if v}
    ratio = mean[best] / mean["ray"]
    print(f"\n{cells} cells ({args.methods} × seeds {args.seeds}, preset {args.preset}), {os.cpu_count()} cores")
    print(f"local ({best}, mean of {len(times[best])}): {mean[best]:.1f} s; ray (mean of {len(times['ray'])}): {mean['ray']:.1f} s")
    print(f"ratio local / ray: {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"cells": cells, "times_s": times, "reference": best, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
