"""Test helpers: tiny T5 models built from config (offline) and the shared data folder."""
from __future__ import annotations

import os
from pathlib import Path

import torch

# ../shared/data beside the repository, or wherever $CODECL_SHARED_DATA points.
SHARED_DATA = Path(os.environ.get("CODECL_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def codet5_small_config():
    """Salesforce/codet5-small's exact architecture (its config.json), random weights."""
    from transformers import T5Config

    return T5Config(vocab_size=32100, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8,
                    feed_forward_proj="relu", dropout_rate=0.1, decoder_start_token_id=0, pad_token_id=0, eos_token_id=2, bos_token_id=1)


def tiny_config():
    from transformers import T5Config

    return T5Config(vocab_size=97, d_model=32, d_kv=8, d_ff=64, num_layers=3, num_decoder_layers=3, num_heads=4,
                    feed_forward_proj="relu", dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def make_base(config, seed: int = 0):
    from transformers import T5ForConditionalGeneration

    from codecl.model.base import BaseInfo, count_parameters, fingerprint, freeze

    torch.manual_seed(seed)
    model = freeze(T5ForConditionalGeneration(config)).eval()
    return model, BaseInfo("tiny", "tiny", fingerprint(model, "tiny"), count_parameters(model))


def codecl_env(cache) -> dict:
    """Environment of a `codecl` subprocess: its own cache, offline, one torch thread (on a shared
    2-core machine oversubscribed threads make the tiny models ~10x slower)."""
    return {**os.environ, "CODECL_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run_codecl(*args, cache, check: bool = True, stdin: str | None = None, timeout: float = 900):
    """`python -m codecl ARGS` in a subprocess; with `check`, a failure shows the end of stderr."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "codecl", *args], capture_output=True, text=True, env=codecl_env(cache),
                          input=stdin, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"codecl {' '.join(args)} exited {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def write_jsonl(path, rows: list, gz: bool = False):
    """Write rows (dicts, or raw strings for malformed lines) as JSONL, optionally gzipped."""
    import gzip
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def interrupt_run(run: dict, keep_stages: int) -> dict:
    """`run` as a run interrupted after its first `keep_stages` stages (base included) left it:
    every per-stage field cut alike, summaries recomputed (a copy; `run` is unchanged)."""
    import copy

    from codecl.results import finalize_run

    cut = copy.deepcopy(run)
    dropped = cut["stages"][keep_stages:]
    cut["stages"] = cut["stages"][:keep_stages]
    cut["scores"] = {m: rows[:keep_stages] for m, rows in cut["scores"].items()}
    if "truncated_outputs" in cut:
        cut["truncated_outputs"] = cut["truncated_outputs"][:keep_stages]
    for key in ("trainable_parameters", "train_seconds", "train_samples_per_second", "peak_memory_bytes",
                "peak_memory_above_start_bytes", "loss_curve"):
        if key in cut:
            cut[key] = {k: v for k, v in cut[key].items() if k not in dropped}
    return finalize_run(cut)
