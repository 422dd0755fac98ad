"""The same small study run by codecl and by the plain Hugging Face pipeline a user would write.

The study: every method of `--methods` (default the four: lora, full_layer, hybrid, hybrid_shared)
over the tasks (python -> javascript), each task trained in turn, every task evaluated (generation
+ BLEU) after every stage, then a report. Same config on both sides (a codecl preset plus `--set`
overrides): base model, data, seeds, epochs, batch size, learning rate, LoRA and block settings,
greedy decoding with the same `max_new_tokens`, `no_repeat_ngram_size` and batch size.

  codecl:    `codecl.experiment.run_experiment` (what `codecl run` does), in this process.
  reference: bench/hf_reference.py — `Seq2SeqTrainer` + PEFT at its best settings (dynamic padding,
             batches grouped by source + target length, constant lr as codecl), a new LoRA adapter per
             task on one PeftModel; full_layer / hybrid / hybrid_shared insert LLaMA Pro's identity
             block after the configured encoder layer through a forward hook (per task, or one shared
             and trained again with every task); stage 0 scored again for each method (a user's loop
             over methods); `model.generate` one batch at a time in input order; sacrebleu corpus BLEU
             (unsmoothed) on `code_tokenize` tokens; adapters (`save_pretrained`) and blocks
             (safetensors) saved after every stage; results.json, report.md and one plot at the end.
             Every task is scored with its own modules once trained, otherwise with the latest task's
             (codecl's rule).

What each side does that the other does not (all of it inside the timed wall):
- codecl also scores smoothed BLEU, exact match and syntax pass (ast / tree-sitter) per evaluation,
  writes events.jsonl, a mid-stage checkpoint every `train.checkpoint_every_steps`, and a longer
  report with several plots; it scores stage 0 once for all methods and takes hybrid_shared's first
  stage from hybrid (identical modules, seed and data: `MethodSpec.first_stage_as`) — its levers;
- the reference tokenizes with the tokenizer's own truncation: a code cut at `max_target_tokens`
  ends in </s> (codecl cuts it bare) — same lengths, one label differs on cut codes.

Timing: each side runs in a fresh Python process (no caches shared with the other side: parsed
corpus, kernels, allocator); its wall clock runs from after its imports (transformers, PEFT,
datasets, sacrebleu, matplotlib, codecl: the same set on both sides) to its report written. The
base model exists before any timing (an embedded base is built and cached once, untimed) and both
sides load it from the same folder. With `--repeats 2` or more, rounds alternate which side goes
first (codecl, reference | reference, codecl | ...) and the figure is each side's median.
The last line printed is one JSON object.

    python bench/study.py [--preset quickstart] [--set KEY=VALUE ...] [--samples N] [--eval-samples N]
                          [--methods lora,full_layer,hybrid,hybrid_shared] [--repeats 2] [--threads N] [--keep DIR]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import torch

import hf_reference as hf  # sibling module of this script

OTHER = "other (base reloads per method, saving modules and results)"
BLOCK_KIND = {"lora": None, "full_layer": "per_task", "hybrid": "per_task", "hybrid_shared": "shared"}


# ---------------------------------------------------------------- codecl

def run_codecl(cfg, out: Path) -> dict:
    from dataclasses import replace

    from codecl.experiment import run_experiment

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # its summary table
        results = run_experiment(replace(cfg, output_dir=str(out)), progress=False)
    wall = time.perf_counter() - start
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    first = lambda name: next(e for e in events if e.get("event") == name)  # noqa: E731
    phases = defaultdict(float)
    phases["load (base + data)"] = first("data")["time"] - first("start")["time"]
    phases["evaluate"] = first("stage0")["eval_seconds"] if any(e.get("event") == "stage0" for e in events) else 0.0
    stages = {}
    for e in events:
        if e.get("event") == "stage":
            phases["train"] += e["seconds"]
            phases["evaluate"] += e["eval_seconds"]
            stages[f"{e['method']}/{e['task']}"] = {"train_seconds": e["seconds"], "samples_per_second": e["samples_per_second"]}
        elif e.get("event") == "stage_reused":
            stages[f"{e['method']}/{e['task']}"] = {"train_seconds": 0.0, "reused_from": e["from"]}
        elif e.get("event") == "phase" and e.get("name") == "report":
            phases["report"] = e["seconds"]
    phases[OTHER] = wall - sum(phases.values())
    bleu = {run["method"]: run["scores"]["bleu"] for run in results["runs"]}
    passes = len(cfg.tasks) * sum(e.get("event") in ("stage0", "stage") for e in events)  # one pass = one task's eval set
    return {"wall_seconds": wall, "phases": dict(phases), "stages": stages, "bleu": bleu, "eval_passes": passes}


# ---------------------------------------------------------------- reference

class Clock:
    def __init__(self):
        self.phases: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[phase] += time.perf_counter() - start


def run_reference(cfg, out: Path, device: torch.device) -> dict:
    """The study as a user writes it with transformers + PEFT + sacrebleu (module docstring)."""
    from peft import get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, set_seed

    from codecl.data.tasks import load_pairs

    start, clock = time.perf_counter(), Clock()
    out.mkdir(parents=True, exist_ok=True)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.model.frozen_dtype]
    with clock("load (base + data)"):
        tokenizer = AutoTokenizer.from_pretrained(cfg.model.name)
        train_sets, evals = {}, {}
        for task in cfg.tasks:
            pairs = load_pairs(cfg.data, task, "train")
            train_sets[task] = hf.tokenize_pairs(tokenizer, [p.source for p in pairs], [p.target for p in pairs],
                                                 cfg.data.max_source_tokens, cfg.data.max_target_tokens)
            valid = load_pairs(cfg.data, task, cfg.eval.split)
            evals[task] = ([p.source for p in valid], [p.target for p in valid])
    lora = hf.peft_lora_config(cfg.method.lora)
    results, stages = {}, {}

    def evaluate(model, blocks, block_kind, uses_lora: bool, trained: list[str]) -> list[float]:
        """BLEU of every task: a trained task with its own modules, any other with the latest task's."""
        row = []
        for task in cfg.tasks:
            use = task if task in trained else (trained[-1] if trained else None)
            if use is not None and uses_lora:
                model.set_adapter(use)
            if blocks is not None:
                blocks.activate(None if use is None else ("shared" if block_kind == "shared" else use))
            sources, refs = evals[task]
            row.append(hf.bleu(hf.generate(model, tokenizer, sources, cfg.data.max_source_tokens, cfg.eval, device), refs))
        return row

    for method in cfg.methods:
        block_kind, uses_lora = BLOCK_KIND[method], method != "full_layer"
        with clock(OTHER):
            extra = {} if cfg.train.base_dropout else {"dropout_rate": 0.0}
            base = AutoModelForSeq2SeqLM.from_pretrained(cfg.model.name, dtype=dtype, **extra).to(device)
            base.requires_grad_(False)
            blocks = hf.InsertedBlocks(base, cfg.method.block.position) if block_kind else None
        model = base
        with clock("evaluate"):
            bleu = [evaluate(model, blocks, block_kind, uses_lora, [])]  # stage 0, again for every method
        trained: list[str] = []
        for index, task in enumerate(cfg.tasks, start=1):
            stage_seed = cfg.seeds[0] * 1000 + index
            set_seed(stage_seed)
            if uses_lora:
                if model is base:
                    model = get_peft_model(base, lora, adapter_name=task)
                else:
                    model.add_adapter(task, lora)
                model.set_adapter(task)
            if blocks is not None:
                key = "shared" if block_kind == "shared" else task
                if key not in blocks:
                    blocks.new(key)
                blocks.activate(key)
                if "inserted_blocks" not in dict(model.named_children()):
                    model.add_module("inserted_blocks", blocks)  # on the model the Trainer optimises (PeftModel: outside LoRA's reach)
            seconds = {}
            hf.train(model, train_sets[task], tokenizer, cfg.train, stage_seed, device, timings=seconds)
            clock.phases["train"] += seconds["train"]
            clock.phases["train setup (reference: Trainer construction)"] += seconds["setup"]
            stages[f"{method}/{task}"] = {"train_seconds": seconds["train"], "trainer_setup_seconds": seconds["setup"],
                                          "samples_per_second": len(train_sets[task]) * cfg.train.epochs / seconds["train"]}
            trained.append(task)
            with clock(OTHER):
                folder = out / method / task
                if uses_lora:
                    model.save_pretrained(str(folder), selected_adapters=[task])
                if blocks is not None:
                    folder.mkdir(parents=True, exist_ok=True)
                    state = {k: v.detach().cpu().contiguous() for k, v in blocks[key].state_dict().items()}
                    save_file(state, str(folder / "block.safetensors"))
            with clock("evaluate"):
                bleu.append(evaluate(model, blocks, block_kind, uses_lora, trained))
            with clock(OTHER):
                results[method] = {"stages": ["base"] + trained, "bleu": bleu}
                (out / "results.json").write_text(json.dumps(results, indent=1))
        del model, base, blocks
    with clock("report"):
        write_reference_report(results, list(cfg.tasks), out)
    wall = time.perf_counter() - start
    clock.phases[OTHER] += wall - sum(clock.phases.values())  # + adding adapters and blocks, seeding
    passes = len(cfg.tasks) * sum(len(r["bleu"]) for r in results.values())
    return {"wall_seconds": wall, "phases": dict(clock.phases), "stages": stages, "bleu": {m: r["bleu"] for m, r in results.items()},
            "eval_passes": passes}


def write_reference_report(results: dict, tasks: list[str], out: Path) -> None:
    """What a user writes at the end: a markdown table (final BLEU per task, average, forgetting) and one plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["| method | " + " | ".join(f"{t} (final)" for t in tasks) + " | final avg | forgetting (first task) |",
             "|---" * (len(tasks) + 3) + "|"]
    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3), squeeze=False)
    for ax, (method, r) in zip(axes[0], results.items()):
        final = r["bleu"][-1]
        first = [row[0] for row in r["bleu"][1:]]
        lines.append(f"| {method} | " + " | ".join(f"{b:.4f}" for b in final) + f" | {sum(final) / len(final):.4f} | "
                     f"{max(first) - first[-1]:.4f} |")
        for t, task in enumerate(tasks):
            ax.plot(range(len(r["bleu"])), [row[t] for row in r["bleu"]], marker="o", label=task)
        ax.set_xticks(range(len(r["stages"])), r["stages"])
        ax.set_title(method)
        ax.set_ylabel("BLEU")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "bleu.png", dpi=100)
    plt.close(fig)
    (out / "report.md").write_text("# Study (reference pipeline)\n\n" + "\n".join(lines) + "\n")


# ---------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quickstart")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="codecl config overrides (both sides)")
    parser.add_argument("--samples", type=int, help="training pairs per task (data.max_train_examples)")
    parser.add_argument("--eval-samples", type=int, help="evaluation pairs per task (data.max_valid_examples)")
    parser.add_argument("--methods", help="comma-separated subset of lora,full_layer,hybrid,hybrid_shared")
    parser.add_argument("--tasks", help="comma-separated languages (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds; they alternate which side goes first")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--keep", help="keep both sides' run folders here (default: a temporary folder, removed)")
    parser.add_argument("--child", choices=("codecl", "reference"), help=argparse.SUPPRESS)
    parser.add_argument("--child-config", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child(args.child, args.child_config, args.child_out)

    from codecl.config import load_config, to_dict
    from codecl.experiment import pick_device

    # The reference is Seq2SeqTrainer: an embedded base is built as the T5 of the measured figures (400 steps),
    # not the quickstart's decoder-only default; a later --set wins.
    sets = ["model.embedded.kind=t5", "model.embedded.pretrain_steps=400", *args.set]
    preset_cfg = load_config(args.preset, overrides=sets)
    if preset_cfg.model.name == "embedded":
        # Built (or found) once, from the preset's own data caps, so --samples does not change the base;
        # then both sides load the same folder.
        from codecl.model.embedded import ensure_embedded_base

        mark = time.perf_counter()
        base_dir = ensure_embedded_base(preset_cfg, progress=True)
        print(f"embedded base: {base_dir} ({time.perf_counter() - mark:.1f} s, not timed)")
        sets.append(f"model.name={base_dir}")
    for flag, key in ((args.samples, "data.max_train_examples"), (args.eval_samples, "data.max_valid_examples")):
        if flag is not None:
            sets.append(f"{key}={flag}")
    top = {"methods": args.methods.split(",") if args.methods else None, "tasks": args.tasks.split(",") if args.tasks else None}
    cfg = load_config(args.preset, overrides=sets, **{k: v for k, v in top.items() if v})
    unknown = [m for m in cfg.methods if m not in BLOCK_KIND]
    if unknown:
        parser.error(f"--methods: the reference implements {', '.join(BLOCK_KIND)}; not {', '.join(unknown)}")
    if cfg.train.mixed_precision != "no":
        parser.error("train.mixed_precision: the reference here is float32 (a bf16 frozen base: --set model.frozen_dtype=bfloat16)")
    block = cfg.method.block
    if any(BLOCK_KIND[m] for m in cfg.methods) and (block.stack not in ("encoder", "auto") or block.init != "identity"
                                                    or getattr(block, "shared_after_first", "train") != "train"):
        parser.error("method.block: the reference implements encoder blocks (stack encoder/auto), init identity, "
                     "shared_after_first train")
    if len(cfg.seeds) != 1:
        parser.error("seeds: one seed (--set seeds=[42])")
    device = pick_device(cfg.train.device)
    from codecl.hardware import check_bf16

    for warning in check_bf16(cfg, device):
        print(warning)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="codecl-study-"))
    if root.exists() and any(root.iterdir()) and args.keep:
        parser.error(f"--keep {root}: not empty")
    print(f"study: methods {','.join(cfg.methods)}; tasks {','.join(cfg.tasks)}; train {cfg.data.max_train_examples} / eval "
          f"{cfg.data.max_valid_examples} pairs per task; {cfg.train.epochs} epoch(s), batch {cfg.train.batch_size}, lr {cfg.train.lr}; "
          f"greedy, max_new_tokens {cfg.eval.max_new_tokens}, no_repeat_ngram_size {cfg.eval.no_repeat_ngram_size}, eval batch "
          f"{cfg.eval.batch_size}; device {device}, torch threads {args.threads or 'default'}; {args.repeats} round(s), each side "
          f"in a fresh process")
    runs: dict[str, list[dict]] = {"codecl": [], "reference": []}
    root.mkdir(parents=True, exist_ok=True)
    config_file = root / "study-config.json"
    config_file.write_text(json.dumps(to_dict(cfg)))
    try:
        for r in range(args.repeats):
            for side in (("codecl", "reference") if r % 2 == 0 else ("reference", "codecl")):
                result = run_child(side, config_file, root / f"{side}-{r + 1}", args.threads)
                runs[side].append(result)
                print(f"round {r + 1}: {side:9} {result['wall_seconds']:8.1f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    report(runs, cfg)


def run_child(side: str, config_file: Path, out: Path, threads: int) -> dict:
    """One side's study in a fresh process; its last stdout line is the result."""
    import subprocess
    import sys

    cmd = [sys.executable, __file__, "--child", side, "--child-config", str(config_file), "--child-out", str(out), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child(side: str, config_file: str, out: str) -> None:
    """In a fresh process: the imports both sides need, then one side's study, timed; prints the result."""
    import datasets
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import peft  # noqa: F401
    import sacrebleu  # noqa: F401
    from transformers import AutoModelForSeq2SeqLM, Seq2SeqTrainer  # noqa: F401
    from transformers.utils import logging as hf_logging

    from codecl.config import from_dict
    from codecl.experiment import pick_device, run_experiment  # noqa: F401

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    cfg = from_dict(json.loads(Path(config_file).read_text()))
    result = run_codecl(cfg, Path(out)) if side == "codecl" else run_reference(cfg, Path(out), pick_device(cfg.train.device))
    print(json.dumps(result))


def report(runs: dict[str, list[dict]], cfg) -> None:
    wall = {side: statistics.median(r["wall_seconds"] for r in rs) for side, rs in runs.items()}
    ratio = wall["reference"] / wall["codecl"]
    print(f"\nwall (median of {len(runs['codecl'])}): codecl {wall['codecl']:.1f} s, reference {wall['reference']:.1f} s, "
          f"speed-up of codecl end to end (reference / codecl): {ratio:.2f}x")
    print("\nphases (first round, seconds):")
    c, h = runs["codecl"][0], runs["reference"][0]
    for phase in sorted(set(c["phases"]) | set(h["phases"])):
        print(f"  {phase:64} codecl {c['phases'].get(phase, 0):8.1f}   reference {h['phases'].get(phase, 0):8.1f}")
    print(f"  {'evaluation passes (one task eval set each): count, seconds per pass':64} codecl {c['eval_passes']:4d} "
          f"{c['phases']['evaluate'] / c['eval_passes']:5.2f}   reference {h['eval_passes']:4d} {h['phases']['evaluate'] / h['eval_passes']:5.2f}")
    print("\ntraining per stage (seconds of the training loop; reference: trainer.train() without Trainer construction):")
    slower = []
    for key in h["stages"]:
        ours = statistics.median(r["stages"][key]["train_seconds"] for r in runs["codecl"])
        ref = statistics.median(r["stages"][key]["train_seconds"] for r in runs["reference"])
        reused = runs["codecl"][0]["stages"][key].get("reused_from")
        note = f"  (codecl: taken from {reused})" if reused else ("  <- codecl slower" if ours > ref else "")
        if ours > ref and not reused:
            slower.append(key)
        print(f"  {key:28} codecl {ours:7.1f}   reference {ref:7.1f}   {ref / ours if ours else float('inf'):5.2f}x{note}")
    print("\nfinal average BLEU (first round; the two sides draw different dropout masks and batch orders):")
    for method in cfg.methods:
        ours, ref = c["bleu"][method], h["bleu"][method]
        print(f"  {method:14} codecl {statistics.fmean(ours[-1]):.4f}   reference {statistics.fmean(ref[-1]):.4f}   "
              f"(stage 0: {statistics.fmean(ours[0]):.4f} / {statistics.fmean(ref[0]):.4f})")
    print(json.dumps({"codecl_seconds": wall["codecl"], "reference_seconds": wall["reference"], "ratio": ratio,
                      "codecl_stages_slower": slower, "rounds": runs}))


if __name__ == "__main__":
    main()
