"""Evaluation throughput: codecl's batched greedy decoding vs the predecessor's per-sample generation.

In one process, on the same model (a `hybrid` ContinualModel, its task's LoRA + inserted block
active, as codecl evaluates it), the same validation descriptions and the same generation budget:
  (a) codecl: `codecl.evaluation.generate.generate_codes` — length-sorted batches of
      `eval.batch_size`, greedy, KV cache;
  (b) the predecessor: one `generate` call per sample, sampling at temperature 0.7 with 3 beams.
Generated tokens are counted from the returned sequences (up to and including EOS), so the two
sides are compared in tokens/s even when their outputs differ in length. The weights are random
(the quickstart shape and codet5-small's shape), so outputs mostly run to the budget: this
measures decoding cost, not quality. The last line printed is one JSON object.

    python bench/eval_throughput.py [--samples 64] [--shapes quickstart,codet5-small] [--max-new-tokens 64]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from codecl.config import EvalConfig, LoraConfig, MethodConfig
from codecl.data.batching import pad_batch
from codecl.evaluation.generate import generate_codes
from codecl.methods.continual import ContinualModel

from bench_shapes import make_model, tokenizer_and_sources  # sibling module of this script


def count_generated(sequences: torch.Tensor, eos_id: int) -> int:
    """Tokens generated per row after the decoder start token, up to and including the first EOS."""
    total = 0
    for row in sequences[:, 1:].tolist():  # (B, T) without the decoder start token
        total += row.index(eos_id) + 1 if eos_id in row else len(row)
    return total


class CountingModel:
    """Forwards `generate`/`eval` to the model and counts the tokens it generates."""

    def __init__(self, model, eos_id: int):
        self.model, self.eos_id, self.tokens = model, eos_id, 0

    def eval(self):
        self.model.eval()
        return self

    def generate(self, **kwargs):
        out = self.model.generate(**kwargs)
        self.tokens += count_generated(out, self.eos_id)
        return out


def build(shape: str):
    model, info = make_model(shape)
    cm = ContinualModel(model, "hybrid", MethodConfig(lora=LoraConfig()), info)
    torch.manual_seed(42)
    cm.add_task("python")
    cm.activate("python")
    return cm.eval()


def run_codecl(cm, tokenizer, sources, max_new_tokens: int, batch_size: int) -> tuple[float, int]:
    counter = CountingModel(cm, tokenizer.eos_token_id)
    cfg = EvalConfig(max_new_tokens=max_new_tokens, batch_size=batch_size)
    start = time.perf_counter()
    generate_codes(counter, tokenizer, sources, 64, cfg, torch.device("cpu"), progress=False)
    return time.perf_counter() - start, counter.tokens


@torch.no_grad()
def run_predecessor(cm, tokenizer, sources, max_new_tokens: int) -> tuple[float, int]:
    tokens, start = 0, time.perf_counter()
    for source in sources:
        ids = tokenizer([source])["input_ids"][0][:64]
        batch = pad_batch([ids], None, tokenizer.pad_token_id)
        out = cm.generate(**batch, max_new_tokens=max_new_tokens, do_sample=True, temperature=0.7, num_beams=3)
        tokens += count_generated(out, tokenizer.eos_token_id)
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--shapes", default="quickstart,codet5-small")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="codecl's eval.batch_size")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tokenizer, sources = tokenizer_and_sources(args.samples, split="valid")
    print(f"{len(sources)} validation descriptions, max_new_tokens {args.max_new_tokens}, torch threads {torch.get_num_threads()}")
    print(f"{'shape':14} {'codecl tok/s':>13} {'predecessor tok/s':>18} {'ratio':>6} {'codecl s':>9} {'pred. s':>8}")
    rows = []
    for shape in args.shapes.split(","):
        cm = build(shape)
        torch.manual_seed(0)
        ours_s, ours_tokens = run_codecl(cm, tokenizer, sources, args.max_new_tokens, args.batch_size)
        pred_s, pred_tokens = run_predecessor(cm, tokenizer, sources, args.max_new_tokens)
        ours, pred = ours_tokens / ours_s, pred_tokens / pred_s
        rows.append({"shape": shape, "codecl_tokens_per_s": ours, "predecessor_tokens_per_s": pred, "ratio": ours / pred,
                     "codecl_seconds": ours_s, "predecessor_seconds": pred_s, "codecl_tokens": ours_tokens, "predecessor_tokens": pred_tokens})
        print(f"{shape:14} {ours:13.1f} {pred:18.1f} {ours / pred:6.2f} {ours_s:9.1f} {pred_s:8.1f}")
    worst = min(rows, key=lambda r: r["ratio"])
    print(json.dumps({"codecl_tokens_per_s": worst["codecl_tokens_per_s"], "predecessor_tokens_per_s": worst["predecessor_tokens_per_s"],
                      "ratio": worst["ratio"], "rows": rows}))


if __name__ == "__main__":
    main()
