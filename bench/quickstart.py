"""The quickstart's wall time by phase, cold (empty cache): what `codecl run` costs a new user.

Runs `python -m codecl run` (the `quickstart` preset unless --preset) in a subprocess with a fresh
cache folder, then reads the phases back from the run's events.jsonl and the embedded base's
pretrain_loss.json. The last line printed is one JSON object.

    python bench/quickstart.py [--preset quickstart] [--keep DIR]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quickstart")
    parser.add_argument("--keep", help="keep the run folder and cache here instead of a temporary folder")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="codecl-bench-"))
    cache, out = root / "cache", root / "run"
    env = {**os.environ, "CODECL_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "codecl", "run", "--preset", args.preset, "--output-dir", str(out), "--quiet"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    total = time.perf_counter() - start
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    timing = json.loads(next((cache / "models").glob("*/pretrain_loss.json")).read_text())["timing"]
    phases = {"corpus": timing["corpus_s"], "tokenizer": timing["tokenizer_s"], "pretraining": timing["pretrain_s"]}
    base = next(e["seconds"] for e in events if e["event"] == "phase" and e["name"] == "base_model")
    phases["load (base, data)"] = round(base - sum(phases.values()), 2)
    phases["stage 0 evaluation"] = next(e["eval_seconds"] for e in events if e["event"] == "stage0")
    for e in events:
        if e["event"] == "stage":
            phases[f"{e['method']} {e['task']}: train"] = round(e["seconds"], 2)
            phases[f"{e['method']} {e['task']}: evaluate"] = e["eval_seconds"]
    phases["report"] = next(e["seconds"] for e in events if e["event"] == "phase" and e["name"] == "report")
    width = max(map(len, phases))
    for name, seconds in phases.items():
        print(f"{name:{width}}  {seconds:8.1f} s")
    print(f"{'total (wall, cold)':{width}}  {total:8.1f} s")
    results = json.loads((out / "results.json").read_text())
    final = {r["method"]: r["final_average"]["bleu"] for r in results["runs"]}
    print(json.dumps({"total_seconds": round(total, 1), "phases": phases, "final_average_bleu": final, "run_dir": str(out)}))


if __name__ == "__main__":
    main()
