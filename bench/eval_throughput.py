"""Evaluation throughput: codecl's batched greedy decoding vs the same decoding one sample at a time.

In one process, on the same model (a `hybrid` ContinualModel, its task's LoRA + inserted block
active, as codecl evaluates it), the same validation descriptions, the same algorithm and budget:
  (a) batched: `codecl.evaluation.generate.generate_codes` with `eval.batch_size` (length-sorted
      batches, greedy, KV cache);
  (b) one by one: the same function with `eval.batch_size=1` — identical decoding (greedy, same
      `max_new_tokens`, same `no_repeat_ngram_size`), so the ratio is batching alone.
Untimed warm-up of both sides first (a batch; 4 samples one by one); then `--rounds` rounds alternating which side goes first
(A B | B A ...); each side's figure is its total tokens over its total seconds.

Tokens: "returned" = tokens of every returned sequence after the decoder start, up to and
including its first EOS (what a user gets); "computed" = decoder positions the model ran (a hook on
the decoder counts rows x new positions per call), which in a batch includes rows that already
finished. The weights are random (the quickstart shape and codet5-small's shape), so outputs mostly
run to the budget: this measures decoding cost, not quality.

Separately, and labelled as a different algorithm: the predecessor's evaluation, one `generate` per
sample with beam-sample decoding (`do_sample=True, temperature=0.7, num_beams=3`). It returns one
sequence per sample but computes 3 beams, so both its returned and its computed tokens are shown;
its ratio to (a) mixes a change of algorithm into the batching gain and is not the headline.

The last line printed is one JSON object.

    python bench/eval_throughput.py [--samples 64] [--shapes quickstart,codet5-small] [--max-new-tokens 64]
                                    [--no-repeat-ngram-size 0] [--batch-size 32] [--rounds 2] [--no-predecessor]
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import torch

from codecl.config import EvalConfig, LoraConfig, MethodConfig
from codecl.data.batching import pad_batch
from codecl.evaluation.generate import generate_codes
from codecl.methods.continual import ContinualModel

from bench_shapes import make_model, tokenizer_and_sources  # sibling module of this script


def returned_tokens(sequences: torch.Tensor, eos_id: int) -> int:
    """Tokens per row after the decoder start token, up to and including the first EOS."""
    total = 0
    for row in sequences[:, 1:].tolist():  # (B, T) without the decoder start token
        total += row.index(eos_id) + 1 if eos_id in row else len(row)
    return total


class Counting:
    """Forwards `generate`/`eval` to the model; counts returned tokens, and decoder positions computed
    (a forward pre-hook on the decoder stack: rows x new positions per call)."""

    def __init__(self, cm, eos_id: int):
        self.cm, self.eos_id, self.returned, self.computed = cm, eos_id, 0, 0
        cm.base.decoder.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        shape = ids.shape if ids is not None else kwargs["inputs_embeds"].shape[:2]
        self.computed += shape[0] * shape[1]

    def reset(self) -> None:
        self.returned = self.computed = 0

    def eval(self):
        self.cm.eval()
        return self

    def generate(self, **kwargs):
        out = self.cm.generate(**kwargs)
        self.returned += returned_tokens(out, self.eos_id)
        return out


def build(shape: str):
    model, info = make_model(shape)
    cm = ContinualModel(model, "hybrid", MethodConfig(lora=LoraConfig()), info)
    torch.manual_seed(42)
    cm.add_task("python")
    cm.activate("python")
    return cm.eval()


def _texts(outputs) -> list[str]:
    """generate_codes' outputs as strings (tolerates (text, flag) items)."""
    return [o if isinstance(o, str) else o[0] for o in outputs]


def run_greedy(counter: Counting, tokenizer, sources, eval_cfg) -> dict:
    counter.reset()
    start = time.perf_counter()
    texts = _texts(generate_codes(counter, tokenizer, sources, 64, eval_cfg, torch.device("cpu"), progress=False))
    return {"seconds": time.perf_counter() - start, "returned": counter.returned, "computed": counter.computed, "texts": texts}


@torch.no_grad()
def run_predecessor(counter: Counting, tokenizer, sources, max_new_tokens: int) -> dict:
    counter.reset()
    counter.eval()
    start = time.perf_counter()
    for source in sources:
        ids = tokenizer([source])["input_ids"][0][:64]
        counter.generate(**pad_batch([ids], None, tokenizer.pad_token_id), max_new_tokens=max_new_tokens, do_sample=True,
                         temperature=0.7, num_beams=3)
    return {"seconds": time.perf_counter() - start, "returned": counter.returned, "computed": counter.computed}


def total(runs: list[dict], key: str) -> float:
    return sum(r[key] for r in runs) / sum(r["seconds"] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--shapes", default="quickstart,codet5-small")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--no-repeat-ngram-size", type=int, default=0, help="both sides (the quickstart preset uses 4)")
    parser.add_argument("--batch-size", type=int, default=32, help="eval.batch_size of the batched side")
    parser.add_argument("--rounds", type=int, default=2, help="timed passes per side, alternating which side goes first")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-predecessor", action="store_true", help="skip the predecessor's beam-sample decoding")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(args.threads)

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tokenizer, sources = tokenizer_and_sources(args.samples, split="valid")
    common = dict(max_new_tokens=args.max_new_tokens, num_beams=1, no_repeat_ngram_size=args.no_repeat_ngram_size)
    sides = {"batched": EvalConfig(batch_size=args.batch_size, **common), "one-by-one": EvalConfig(batch_size=1, **common)}
    print(f"{len(sources)} validation descriptions; greedy, max_new_tokens {args.max_new_tokens}, no_repeat_ngram_size "
          f"{args.no_repeat_ngram_size}; batched = eval.batch_size {args.batch_size}; {args.rounds} round(s) per side after an "
          f"untimed warm-up; torch threads {torch.get_num_threads()}")
    print(f"{'shape':13} {'batched tok/s':>13} {'1-by-1 tok/s':>13} {'ratio':>6} {'same outputs':>12} {'computed/returned b|1':>22}")
    rows = []
    for shape in args.shapes.split(","):
        counter = Counting(build(shape), tokenizer.eos_token_id)
        for name, cfg in sides.items():  # warm-up, untimed: one batch of each side
            run_greedy(counter, tokenizer, sources[: cfg.batch_size if name == "batched" else 4], cfg)
        runs: dict[str, list[dict]] = {name: [] for name in sides}
        for r in range(args.rounds):
            for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                runs[name].append(run_greedy(counter, tokenizer, sources, sides[name]))
        b, o = runs["batched"], runs["one-by-one"]
        same = sum(x == y for x, y in zip(b[0]["texts"], o[0]["texts"])) / len(sources)
        row = {"shape": shape, "batched_tokens_per_s": total(b, "returned"), "one_by_one_tokens_per_s": total(o, "returned"),
               "batched_seconds": [x["seconds"] for x in b], "one_by_one_seconds": [x["seconds"] for x in o],
               "batched_returned_tokens": b[0]["returned"], "one_by_one_returned_tokens": o[0]["returned"],
               "batched_computed_positions": b[0]["computed"], "one_by_one_computed_positions": o[0]["computed"], "same_outputs": same}
        row["ratio"] = row["batched_tokens_per_s"] / row["one_by_one_tokens_per_s"]
        print(f"{shape:13} {row['batched_tokens_per_s']:13.1f} {row['one_by_one_tokens_per_s']:13.1f} {row['ratio']:6.2f} {same:12.0%} "
              f"{b[0]['computed'] / b[0]['returned']:11.2f}|{o[0]['computed'] / o[0]['returned']:.2f}")
        if not args.no_predecessor:
            torch.manual_seed(0)
            pred = run_predecessor(counter, tokenizer, sources, args.max_new_tokens)
            row["predecessor"] = {"algorithm": "beam-sample, num_beams=3, temperature=0.7, one generate() per sample",
                                  "returned_tokens_per_s": pred["returned"] / pred["seconds"],
                                  "computed_tokens_per_s": pred["computed"] / pred["seconds"], "seconds": pred["seconds"],
                                  "returned_tokens": pred["returned"], "computed_positions": pred["computed"]}
            p = row["predecessor"]
            print(f"{'':13} predecessor (a different algorithm: beam-sample, 3 beams, T=0.7, one call per sample): "
                  f"{p['returned_tokens_per_s']:.1f} returned tok/s, {p['computed_tokens_per_s']:.1f} computed tok/s (all 3 beams), "
                  f"{pred['seconds']:.1f} s")
        rows.append(row)
    worst = min(rows, key=lambda r: r["ratio"])
    print(json.dumps({"batched_tokens_per_s": worst["batched_tokens_per_s"], "one_by_one_tokens_per_s": worst["one_by_one_tokens_per_s"],
                      "ratio": worst["ratio"], "shape": worst["shape"], "rounds": args.rounds, "rows": rows}))


if __name__ == "__main__":
    main()
