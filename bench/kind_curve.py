"""Which embedded base for the quickstart: T5 (encoder-decoder) vs Llama (decoder-only) at equal pretraining time.

Both bases are built as `codecl run` builds them (`codecl.model.embedded`: the quickstart preset's corpus,
the same BPE tokenizer — T5's appends </s>, the decoder-only one does not —, the same pretraining texts,
bimodal pairs, seed, schedule and batch size; `model.embedded.kind` t5 or llama, the Llama with 2 × num_layers
layers) and pretrained *in one process, alternately*: 10 steps of one, 10 of the other, each timing only its
own steps (the clock pauses while the other trains or while measuring). Machine drift and load therefore fall
on both alike; the marks are each model's own pretraining minutes. At every mark, with the clock paused, on
the tasks' *valid* split (the first --per-language pairs per task language, never test):
  - `valid_loss`: teacher-forced nats per reference-code token (</s> included) given the description, through
    codecl's own loss (`codecl.evaluation.loss`: the task encoding, a causal prompt masked and shifted);
  - `syntax_pass`, `bleu` of greedy generation with the preset's eval settings.
The kind with the lower valid loss at the quickstart's pretraining budget is the one the quickstart should use.

    python bench/kind_curve.py [--marks 1,2,5] [--per-language 100] [--preset quickstart] [--threads N] [--output FILE]

A table, then one JSON object as the last line (also written to --output). Run it on an idle machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import time
from pathlib import Path

import torch

CHUNK = 10


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure(model, tokenizer, held_out: dict, cfg) -> dict:
    from codecl.data.batching import encode_pairs
    from codecl.evaluation.generate import generate_with_flags
    from codecl.evaluation.loss import mean_loss, per_example_losses
    from codecl.evaluation.metrics import corpus_bleu, syntax_pass

    device = torch.device("cpu")
    model.eval()
    pooled, languages = [], {}
    for language, (sources, references) in held_out.items():
        encoded = encode_pairs(tokenizer, sources, references, cfg.data.max_source_tokens, cfg.data.max_target_tokens)
        losses = per_example_losses(model, encoded, tokenizer.pad_token_id, cfg.eval.batch_size, device)
        pooled += losses
        flagged = generate_with_flags(model, tokenizer, sources, cfg.data.max_source_tokens, cfg.eval, device, progress=False)
        hyps = [h for h, _ in flagged]
        languages[language] = {"valid_loss": round(mean_loss(losses), 4), "syntax_pass": round(syntax_pass(hyps, language), 4),
                               "bleu": round(corpus_bleu(hyps, references), 4), "no_eos": round(sum(c for _, c in flagged) / len(flagged), 4)}
    return {"valid_loss": round(mean_loss(pooled), 4), "languages": languages}


class Turns:
    """Two pretraining loops in two threads, taking turns of CHUNK steps (one runs at a time)."""

    def __init__(self, names: list[str]):
        self.names, self.turn, self.done = names, 0, set()
        self.cond = threading.Condition()

    def wait_for(self, name: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.names[self.turn] == name or self.names[self.turn] in self.done)

    def pass_on(self, name: str, finished: bool = False) -> None:
        with self.cond:
            if finished:
                self.done.add(name)
            other = (self.turn + 1) % len(self.names)
            if self.names[other] not in self.done:
                self.turn = other
            self.cond.notify_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--marks", default="1,2,5", help="each model's pretraining minutes at which to measure")
    parser.add_argument("--per-language", type=int, default=100)
    parser.add_argument("--preset", default="quickstart")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--output")
    args = parser.parse_args()

    from codecl.config import load_config
    from codecl.data.tasks import load_pairs
    from codecl.model import embedded
    from codecl.model.causal import configure_tokenizer

    marks = sorted(float(m) for m in args.marks.split(","))
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.preset, overrides=list(args.overrides))
    texts, bimodal = embedded.pretraining_texts(cfg), embedded.bimodal_pairs(cfg)
    valid_cfg = dataclasses.replace(cfg.data, max_valid_examples=None)
    held_out = {}
    for language in cfg.tasks:
        pairs = load_pairs(valid_cfg, language, "valid")[: args.per_language]
        held_out[language] = ([p.source for p in pairs], [p.target for p in pairs])
    runs = {}
    for kind in ("t5", "llama"):
        shape = dataclasses.replace(cfg.model.embedded, kind=kind, pretrain_steps=10**9)
        tokenizer = embedded.train_tokenizer(texts, shape.vocab_size, causal=kind != "t5")
        if kind != "t5":
            configure_tokenizer(tokenizer, cfg.model.prompt_template)
        model = embedded.build_model(shape, tokenizer)
        runs[kind] = {"shape": shape, "tokenizer": tokenizer, "model": model, "snapshots": [], "error": None,
                      "parameters": sum(p.numel() for p in model.parameters())}
        _log(f"{kind}: {runs[kind]['parameters'] / 1e6:.2f}M parameters")
    turns = Turns(list(runs))

    def train(kind: str) -> None:
        run = runs[kind]
        model, tokenizer, snapshots = run["model"], run["tokenizer"], run["snapshots"]

        def hook(step: int, seconds: float) -> bool:
            stop = False
            if seconds >= marks[len(snapshots)] * 60:
                t0 = time.perf_counter()
                rng = torch.random.get_rng_state()
                scores = measure(model, tokenizer, held_out, cfg)
                torch.random.set_rng_state(rng)
                snapshots.append({"mark_minutes": marks[len(snapshots)], "steps": step, "pretrain_seconds": round(seconds, 1),
                                  "measure_seconds": round(time.perf_counter() - t0, 1), "loadavg_1min": round(os.getloadavg()[0], 2), **scores})
                _log(f"{kind} [{marks[len(snapshots) - 1]:g} min] step {step}: valid loss {scores['valid_loss']:.3f}")
                stop = len(snapshots) == len(marks)
            if step % CHUNK == 0 or stop:
                turns.pass_on(kind, finished=stop)
                if not stop:
                    turns.wait_for(kind)
            return stop

        turns.wait_for(kind)
        try:
            embedded.pretrain(model, tokenizer, texts, run["shape"], seed=cfg.train.seed, progress=False, bimodal=bimodal, hook=hook)
        except BaseException as exc:  # noqa: BLE001 - reported, and the other side must not wait forever
            run["error"] = f"{type(exc).__name__}: {exc}"
            turns.pass_on(kind, finished=True)

    threads = [threading.Thread(target=train, args=(kind,)) for kind in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for kind, run in runs.items():
        if run["error"]:
            raise SystemExit(f"{kind} failed: {run['error']}")
    print(f"| minutes | {' | '.join(f'{k} steps | {k} valid loss | {k} py syntax | {k} js syntax' for k in runs)} |")
    print("|---|" + "---|" * (4 * len(runs)))
    for i, mark in enumerate(marks):
        cells = []
        for kind, run in runs.items():
            s = run["snapshots"][i]
            langs = s["languages"]
            cells += [str(s["steps"]), f"{s['valid_loss']:.3f}"] + [f"{langs.get(k, {}).get('syntax_pass', float('nan')):.2f}"
                                                                     for k in ("python", "javascript")]
        print(f"| {mark:g} | " + " | ".join(cells) + " |")
    result = {"preset": args.preset, "overrides": args.overrides, "marks_minutes": marks, "per_language": args.per_language,
              "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
              "kinds": {k: {"parameters": r["parameters"], "layers": (r["shape"].num_layers, r["shape"].num_layers) if k == "t5"
                            else 2 * r["shape"].num_layers, "snapshots": r["snapshots"]} for k, r in runs.items()}}
    last = {k: r["snapshots"][-1]["valid_loss"] for k, r in runs.items()}
    result["lower_valid_loss_at_last_mark"] = min(last, key=last.get)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
