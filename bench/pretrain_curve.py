"""The embedded base's quality against pretraining time: one pretraining run, measured at wall-clock marks.

One run of the embedded base's pretraining (`codecl.model.embedded.pretrain`, the `quickstart`
preset's shape and recipe unless --preset/--set say otherwise; the same seed, corpus, tokenizer and
initialisation as `codecl run` builds), stopped at each mark (pretraining minutes, default
2,5,10,30; fractions allowed, e.g. 0.1,0.2 for a smoke run) to measure, with the clock paused, on the
tasks' *valid* split (the first --per-language pairs of each task language, as `codecl run` orders
them; never test):
  - `valid_loss`: teacher-forced loss, nats per target token, of the reference code given its
    description (task encoding: data.max_source_tokens / max_target_tokens, </s> included);
  - `syntax_pass` and `bleu` (unsmoothed corpus BLEU-4, codecl.evaluation.metrics) of greedy
    generation with the preset's eval settings (eval.max_new_tokens, no_repeat_ngram_size);
  - `no_eos`: share of generations that stopped at eval.max_new_tokens without </s>;
  - `steps` done at the mark, and the training loss of the last 10 steps.
The learning-rate schedule and the batch draws do not depend on `pretrain_steps` (warm-up then
1/sqrt(step)), so the snapshot at a mark is exactly the base that `pretrain_steps=<its steps>` builds:
pick a point, set `model.embedded.pretrain_steps` to its steps. Minutes are this machine's, under its
load (`loadavg` is recorded at each mark): run it on an idle machine for idle-machine minutes.

    python bench/pretrain_curve.py [--marks 2,5,10,30] [--per-language 100] [--preset quickstart]
                                   [--set model.embedded.pretrain_lr=0.002] [--threads N] [--output FILE]

A table, then one JSON object as the last line (also written to --output).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@torch.no_grad()
def teacher_forced_loss(model, tokenizer, sources: list[str], targets: list[str], data_cfg, batch_size: int = 50) -> float:
    """Mean cross-entropy (nats) per target token of the references given their descriptions."""
    from codecl.data.batching import IGNORE_INDEX, encode_pairs, pad_batch

    enc = encode_pairs(tokenizer, sources, targets, data_cfg.max_source_tokens, data_cfg.max_target_tokens)
    total, tokens = 0.0, 0
    model.eval()
    for start in range(0, len(enc), batch_size):
        batch = pad_batch(enc.source_ids[start : start + batch_size], enc.target_ids[start : start + batch_size], tokenizer.pad_token_id)
        logits = model(**batch).logits
        labels = batch["labels"]
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum").item()
        tokens += int((labels != IGNORE_INDEX).sum())
    return total / tokens


def measure(model, tokenizer, held_out: dict, cfg) -> dict:
    """valid_loss (all languages' tokens pooled) and per-language loss, syntax_pass, bleu, no_eos."""
    from codecl.evaluation import generate
    from codecl.evaluation.metrics import corpus_bleu, syntax_pass

    device = torch.device("cpu")
    per_language, nats, tokens = {}, 0.0, 0
    for language, (sources, references) in held_out.items():
        loss = teacher_forced_loss(model, tokenizer, sources, references, cfg.data)
        if hasattr(generate, "generate_with_flags"):
            flagged = generate.generate_with_flags(model, tokenizer, sources, cfg.data.max_source_tokens, cfg.eval, device, progress=False)
            hyps, no_eos = [h for h, _ in flagged], sum(cut for _, cut in flagged) / len(flagged)
        else:
            hyps, no_eos = generate.generate_codes(model, tokenizer, sources, cfg.data.max_source_tokens, cfg.eval, device, progress=False), None
        per_language[language] = {"valid_loss": round(loss, 4), "syntax_pass": round(syntax_pass(hyps, language), 4),
                                  "bleu": round(corpus_bleu(hyps, references), 4), "no_eos": None if no_eos is None else round(no_eos, 4),
                                  "example": hyps[0][:200]}
        n = sum(len(ids) for ids in tokenizer(list(references))["input_ids"])  # weight languages by their tokens (approx.)
        nats, tokens = nats + loss * n, tokens + n
    return {"valid_loss": round(nats / tokens, 4), "languages": per_language}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--marks", default="2,5,10,30", help="pretraining minutes at which to measure, comma-separated (fractions allowed)")
    parser.add_argument("--per-language", type=int, default=100, help="valid pairs per task language to measure on")
    parser.add_argument("--preset", default="quickstart")
    parser.add_argument("--config", dest="config_file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE config override (repeatable)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args()

    from codecl.config import load_config
    from codecl.data.tasks import load_pairs
    from codecl.model import embedded

    marks = sorted(float(m) for m in args.marks.split(","))
    if not marks or marks[0] <= 0:
        parser.error("--marks must be positive minutes")
    if args.threads:
        torch.set_num_threads(args.threads)
    # The T5 curve of the measured figures (README, bench/RESULTS.md); --set model.embedded.kind=llama for the
    # quickstart's decoder-only base (bench/kind_curve.py compares the two).
    cfg = load_config(args.preset if not args.config_file else None, args.config_file, ["model.embedded.kind=t5", *args.overrides])
    if cfg.model.name != "embedded":
        parser.error(f"model.name={cfg.model.name}: this bench pretrains the embedded base only")
    shape = cfg.model.embedded
    started = time.perf_counter()
    texts, bimodal = embedded.pretraining_texts(cfg), embedded.bimodal_pairs(cfg)
    corpus_s = time.perf_counter() - started
    mark = time.perf_counter()
    tokenizer = embedded.train_tokenizer(texts, shape.vocab_size)
    tokenizer_s = time.perf_counter() - mark
    valid_cfg = dataclasses.replace(cfg.data, max_valid_examples=None)  # the same order; --per-language picks how many
    held_out = {}
    for language in cfg.tasks:
        pairs = load_pairs(valid_cfg, language, "valid")[: args.per_language]
        held_out[language] = ([p.source for p in pairs], [p.target for p in pairs])
    model = embedded.build_model(shape, tokenizer)
    _log(f"corpus {corpus_s:.1f} s ({len(texts)} texts, {len(bimodal)} bimodal pairs), tokenizer {tokenizer_s:.1f} s; "
         f"valid pairs {', '.join(f'{k} {len(v[0])}' for k, v in held_out.items())}; "
         f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; marks {marks} min")

    snapshots, measuring = [], {"s": 0.0}

    def hook(step: int, seconds: float) -> bool:
        if seconds < marks[len(snapshots)] * 60:
            return False
        t0, rng_state = time.perf_counter(), torch.random.get_rng_state()
        scores = measure(model, tokenizer, held_out, cfg)
        torch.random.set_rng_state(rng_state)
        measuring["s"] += time.perf_counter() - t0
        snapshots.append({"mark_minutes": marks[len(snapshots)], "steps": step, "pretrain_seconds": round(seconds, 1),
                          "steps_per_minute": round(step / seconds * 60, 1), "loadavg_1min": round(os.getloadavg()[0], 2),
                          "measure_seconds": round(time.perf_counter() - t0, 1), **scores})
        s = snapshots[-1]
        _log(f"[{s['mark_minutes']} min] step {step} ({s['steps_per_minute']}/min): valid loss {s['valid_loss']:.3f}, "
             + ", ".join(f"{k} syntax {v['syntax_pass']:.2f} bleu {v['bleu']:.4f}" for k, v in s["languages"].items()))
        return len(snapshots) == len(marks)

    curve = embedded.pretrain(model, tokenizer, texts, dataclasses.replace(shape, pretrain_steps=10**9), seed=cfg.train.seed,
                              progress=False, bimodal=bimodal, hook=hook)
    for s in snapshots:  # training loss: the curve point (mean of 10 steps) at or before the snapshot
        s["train_loss"] = next((round(c["loss"], 4) for c in reversed(curve) if c["step"] <= s["steps"]), None)

    languages = list(held_out)
    short = {"python": "py", "javascript": "js"}
    header = ["min", "steps", "steps/min", "train loss", "valid loss"] + [f"{short.get(k, k)} {m}" for k in languages for m in ("syntax", "bleu", "no-eos")]
    rows = [[f"{s['mark_minutes']:g}", str(s["steps"]), f"{s['steps_per_minute']:.0f}", f"{s['train_loss']:.3f}" if s["train_loss"] else "-",
             f"{s['valid_loss']:.3f}"]
            + [f"{s['languages'][k][m]:.3f}" if s["languages"][k][m] is not None else "-" for k in languages for m in ("syntax_pass", "bleu", "no_eos")]
            for s in snapshots]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.rjust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |")
    result = {
        "preset": args.config_file or args.preset, "overrides": args.overrides, "embedded": dataclasses.asdict(shape),
        "seed": cfg.train.seed, "per_language": args.per_language, "eval": {"max_new_tokens": cfg.eval.max_new_tokens,
                                                                              "no_repeat_ngram_size": cfg.eval.no_repeat_ngram_size},
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "cold_overhead_seconds": {"corpus": round(corpus_s, 1), "tokenizer": round(tokenizer_s, 1)},
        "measuring_seconds": round(measuring["s"], 1), "snapshots": snapshots,
    }
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
