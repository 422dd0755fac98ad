"""Training throughput: codecl's loop vs Hugging Face's Seq2SeqTrainer + PEFT, side by side.

In one process, on the same model, data, batch size, dtype and dropout:
  (a) codecl: `codecl.train.train_task` on a `ContinualModel` (dynamic padding, length buckets);
  (b) reference: `Seq2SeqTrainer` + PEFT at its best settings (bench/hf_reference.py): dynamic
      padding, batches grouped by source + target length (a `length` column that transformers 5
      really reads: `remove_unused_columns=False`), no evaluation, logging or saving; an inserted
      block (full_layer, hybrid) is LLaMA Pro's identity copy of the top encoder layer run by a
      forward hook — the same block, placement and initialisation as codecl's;
  (c) optionally the predecessor's way: the same Trainer, every example padded to 512.

Fairness rules:
- warm-up: the first `--warmup-steps` optimizer steps of every training are not timed, on both
  sides; steps are timed from each side's own per-step clock (codecl's per-step log, a
  TrainerCallback for the Trainer). The sides order their batches differently (the Trainer puts
  its longest batch first), so the untimed steps are not the same work: each side's rate is its
  model FLOPs over its timed steps per second, and samples/s = epoch samples / (epoch FLOPs / rate);
- order: rounds alternate which side goes first (A B | B A ...), each round a fresh model; a
  side's rate is the total of its timed FLOPs over the total of its timed seconds;
- dtype: a variant's reference uses the same dtype (bf16-frozen: the reference's base is held in
  bfloat16 too, PEFT's adapters and the block in float32, as codecl's) and the same dropout;
- MFU: each side's rate over the matmul peak of the dtype its frozen base used, fp32 and bf16
  peaks measured in the same run (`--peak-seconds` of 1024x1024 matmuls each). On a CPU without
  bf16 matrix units (`codecl.hardware.bf16_is_slow`) bf16 variants are skipped, with a note.

Model FLOPs (both sides alike, over real tokens; padding is not credited). For every weight matrix W
of N elements that a token passes through:
    forward 2N  +  2N if W is trained (gradient to W)  +  2N if W's input depends on a trained weight
    (gradient to W's input, which carries the loss's gradient down to the lowest trained module).
So a trained matrix (LoRA A/B, an inserted block's) costs 6N per token — 4N where its own input
depends on nothing trained (the lowest layer's LoRA A matrices; an inserted block's q/k/v read its
own trained layer norm, so 6N); a frozen matrix above the lowest trained module 4N; a frozen matrix
below it (or on no path to one, e.g. the decoder's first self-attention under full_layer) 2N. Which
matrix is which is not assumed: one probe forward pass records, for every `nn.Linear`, whether its
weight requires grad and whether its input does. Encoder matrices and the decoder's cross-attention
k/v count per source token; the rest of the decoder and the (tied) LM head per target token.
Not counted: attention scores (QK^T, AV: 4·S·d_model per token per attention layer, ~2-3% at these
lengths), norms, softmax, embedding lookups — the same omissions on both sides.

The last line printed is one JSON object.

    python bench/train_throughput.py [--samples 160] [--shapes quickstart,codet5-small] [--methods lora,hybrid]
                                     [--variants default,torch-dropout,bf16-frozen,no-base-dropout] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from dataclasses import replace

import torch
from torch import nn

from codecl.config import LoraConfig, MethodConfig, TrainConfig
from codecl.data.batching import bucketed_batches, encode_pairs
from codecl.hardware import bf16_is_slow, bf16_matmul_ratio
from codecl.methods.continual import ContinualModel
from codecl.train import seed_everything, train_task

import hf_reference as hf  # sibling modules of this script
from bench_shapes import make_model, tokenizer_and_pairs

BLOCK_METHODS = ("full_layer", "hybrid")


def matmul_peak_gflops(n: int = 1024, seconds: float = 2.0, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        done += 1
    return 2 * n**3 * done / (time.perf_counter() - start) / 1e9


def linear_flops_per_token(model: nn.Module) -> tuple[float, float]:
    """(FLOPs per source token, FLOPs per target token) of one training step, by the rule in the
    module docstring, read from one probe forward pass (the RNG state is restored afterwards)."""
    batch, src_len, tgt_len = 2, 7, 5
    device = next(model.parameters()).device
    seen = []

    def record(module, args):
        x = args[0]
        seen.append((module.weight.numel(), x.shape[:-1].numel(), module.weight.requires_grad, x.requires_grad))

    handles = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, nn.Linear)]
    probe = {"input_ids": torch.full((batch, src_len), 5, device=device), "attention_mask": torch.ones(batch, src_len, dtype=torch.long, device=device),
             "labels": torch.full((batch, tgt_len), 5, device=device)}
    try:
        with torch.random.fork_rng(), torch.enable_grad():
            model(**probe)
    finally:
        for h in handles:
            h.remove()
    per = {batch * src_len: 0.0, batch * tgt_len: 0.0}
    for n, rows, trained, input_grad in seen:
        per[rows] += 2 * n * (1 + trained + input_grad)  # per token: every row of a Linear's input is one token
    return per[batch * src_len], per[batch * tgt_len]


def summarize(step_times: list[float], batches: list[tuple], per_src: float, per_tgt: float, warmup: int) -> dict:
    """One training's timed part. `step_times[i]` is the clock at the end of step i; `batches[i]` that
    step's (source lengths, target lengths, padded source width, padded target width)."""
    if len(step_times) != len(batches):
        raise RuntimeError(f"{len(step_times)} step times for {len(batches)} batches")
    if len(batches) <= warmup:
        raise SystemExit(f"{len(batches)} steps: nothing left to time after {warmup} warm-up steps; use more --samples")
    flops = [per_src * sum(s) + per_tgt * sum(t) for s, t, _, _ in batches]
    real = sum(sum(s) + sum(t) for s, t, _, _ in batches)
    padded = sum(len(s) * (ws + wt) for s, _, ws, wt in batches)
    return {"timed_seconds": step_times[-1] - step_times[warmup - 1], "timed_flops": sum(flops[warmup:]), "epoch_flops": sum(flops),
            "samples": sum(len(s) for s, _, _, _ in batches), "steps": len(batches), "padding": 1 - real / padded,
            "flops_per_source_token": per_src, "flops_per_target_token": per_tgt}


def combine(rounds: list[dict]) -> dict:
    """Rounds of one side: total timed FLOPs / total timed seconds."""
    rate = sum(r["timed_flops"] for r in rounds) / sum(r["timed_seconds"] for r in rounds)
    first = rounds[0]
    return {"flops_per_s": rate, "samples_per_s": first["samples"] / (first["epoch_flops"] / rate), "padding": first["padding"],
            "round_samples_per_s": [r["samples"] / (r["epoch_flops"] * r["timed_seconds"] / r["timed_flops"]) for r in rounds],
            "flops_per_source_token": first["flops_per_source_token"], "flops_per_target_token": first["flops_per_target_token"]}


# codecl settings timed, each against the reference with the same dtype and base dropout.
VARIANTS = {
    "default": dict(dtype="float32", base_dropout=True, fast_dropout=True),
    "torch-dropout": dict(dtype="float32", base_dropout=True, fast_dropout=False),
    "bf16-frozen": dict(dtype="bfloat16", base_dropout=True, fast_dropout=True),
    "no-base-dropout": dict(dtype="float32", base_dropout=False, fast_dropout=True),
}


def run_codecl(shape, method, data, cfg, variant: dict, warmup: int) -> dict:
    model, info = make_model(shape, getattr(torch, variant["dtype"]))
    cm = ContinualModel(model, method, MethodConfig(lora=LoraConfig()), info)
    seed_everything(42)
    cm.add_task("python")
    cm.activate("python")
    times: dict[int, float] = {}

    def log(event):
        if event.get("event") == "train_loss":
            times[event["step"]] = time.perf_counter()

    train_cfg = replace(cfg, base_dropout=variant["base_dropout"], fast_dropout=variant["fast_dropout"], log_every=1)
    train_task(cm, data, train_cfg, 0, torch.device("cpu"), seed=42, log=log, progress=False)
    order = [b for epoch in range(cfg.epochs) for b in bucketed_batches(data.lengths(), cfg.batch_size, 42 + epoch)]
    batches = []
    for ids in order:
        s, t = [len(data.source_ids[i]) for i in ids], [len(data.target_ids[i]) for i in ids]
        batches.append((s, t, max(s), max(t)))
    return summarize([times[k] for k in sorted(times)], batches, *linear_flops_per_token(cm), warmup)


def reference_model(shape, method, variant: dict):
    """The reference's model for one task: PEFT LoRA and/or an inserted block (bench/hf_reference.py)."""
    from peft import get_peft_model

    model, _ = make_model(shape, getattr(torch, variant["dtype"]), dropout_rate=0.1 if variant["base_dropout"] else 0.0)
    blocks = hf.InsertedBlocks(model) if method in BLOCK_METHODS else None
    torch.manual_seed(42)
    if method != "full_layer":
        model = get_peft_model(model, hf.peft_lora_config(LoraConfig()), adapter_name="python")
    if blocks is not None:
        blocks.new("python")
        blocks.activate("python")
        model.add_module("inserted_blocks", blocks)
    return model


def run_reference(shape, method, data, cfg, tokenizer, variant: dict, warmup: int, pad_to: int | None = None) -> dict:
    model = reference_model(shape, method, variant)
    batches, clock = [], hf.step_clock()
    hf.train(model, hf.dataset_from_ids(data.source_ids, data.target_ids), tokenizer, cfg, 42, torch.device("cpu"),
             record=batches.append, pad_to=pad_to, callbacks=[clock])
    return summarize(clock.times, batches, *linear_flops_per_token(model), warmup)


def _rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


def memory_child(side: str, shape: str, method: str, samples: int) -> None:
    """In a fresh process: build everything, then train once and print the RSS high-water mark
    (absolute, and above the RSS just before training: activations, gradients, optimizer state)."""
    from codecl.memory import PeakMemory

    tokenizer, pairs = tokenizer_and_pairs(samples)
    data = encode_pairs(tokenizer, [p.source for p in pairs], [p.target for p in pairs], 64, 256)
    cfg = TrainConfig(epochs=1, batch_size=8, checkpoint_every_steps=0)
    holder = {}
    if side == "codecl":
        model, info = make_model(shape)
        cm = ContinualModel(model, method, MethodConfig(lora=LoraConfig()), info)
        cm.add_task("python")
        cm.activate("python")
        before = _rss_bytes()
        peak = PeakMemory(torch.device("cpu"))
        train_task(cm, data, cfg, 0, torch.device("cpu"), seed=42, progress=False)
        holder["peak"] = peak.read()
    else:
        import transformers

        original = transformers.Trainer.train

        def measured(self, *a, **k):
            holder["before"] = _rss_bytes()
            peak = PeakMemory(torch.device("cpu"))
            out = original(self, *a, **k)
            holder["peak"] = peak.read()
            return out

        transformers.Trainer.train = measured
        model = reference_model(shape, method, VARIANTS["default"])
        hf.train(model, hf.dataset_from_ids(data.source_ids, data.target_ids), tokenizer, cfg, 42, torch.device("cpu"))
        before = holder["before"]
    print(json.dumps({"side": side, "peak_bytes": holder["peak"], "above_start_bytes": holder["peak"] - before}))


def measure_memory(shape: str, method: str, samples: int) -> dict:
    import subprocess
    import sys

    out = {}
    for side in ("codecl", "reference"):
        proc = subprocess.run([sys.executable, __file__, "--memory-child", side, "--shapes", shape, "--methods", method,
                               "--samples", str(samples)], capture_output=True, text=True, check=True)
        out[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=160)
    parser.add_argument("--shapes", default="quickstart,codet5-small")
    parser.add_argument("--methods", default="lora,hybrid", help="lora, full_layer, hybrid")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="codecl settings, each against a reference of the same dtype and dropout: default (fp32, base dropout, "
                             "FastDropout masks), torch-dropout (train.fast_dropout=false), bf16-frozen (model.frozen_dtype=bfloat16; "
                             "the reference's base in bf16 too), no-base-dropout (train.base_dropout=false; the reference: dropout_rate=0)")
    parser.add_argument("--rounds", type=int, default=2, help="timed trainings per side, alternating which side goes first")
    parser.add_argument("--warmup-steps", type=int, default=3, help="optimizer steps not timed at the start of every training")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--peak-seconds", type=float, default=2.0, help="seconds of 1024^3 matmuls per dtype for the peak")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--predecessor", action="store_true", help="also time (c), padding to 512 (slow; fp32, one round)")
    parser.add_argument("--memory", action="store_true",
                        help="also measure peak RSS of LoRA training on the last shape, codecl vs reference, each in a fresh process")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' deprecation notes, raised through PEFT
    torch.set_num_threads(args.threads)
    if args.warmup_steps < 1:
        parser.error("--warmup-steps must be >= 1 (the clock starts at the end of the last warm-up step)")
    if args.memory_child:
        return memory_child(args.memory_child, args.shapes.split(",")[-1], args.methods.split(",")[0], args.samples)

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    skipped = []
    if any(VARIANTS[v]["dtype"] == "bfloat16" for v in variants) and bf16_is_slow("cpu"):
        skipped = [v for v in variants if VARIANTS[v]["dtype"] == "bfloat16"]
        variants = [v for v in variants if v not in skipped]
        print(f"note: skipping {', '.join(skipped)}: this CPU has no bf16 matrix units (a bf16 matmul takes "
              f"{bf16_matmul_ratio('cpu'):.0f}x the float32 one)")

    tokenizer, pairs = tokenizer_and_pairs(args.samples)
    data = encode_pairs(tokenizer, [p.source for p in pairs], [p.target for p in pairs], 64, 256)
    cfg = TrainConfig(epochs=args.epochs, batch_size=8, checkpoint_every_steps=0)
    peaks = {"float32": matmul_peak_gflops(seconds=args.peak_seconds)}
    if any(VARIANTS[v]["dtype"] == "bfloat16" for v in variants):
        peaks["bfloat16"] = matmul_peak_gflops(seconds=args.peak_seconds, dtype=torch.bfloat16)
    print(f"matmul peak GFLOP/s: {', '.join(f'{k} {v:.1f}' for k, v in peaks.items())}; {len(data)} samples, mean length "
          f"{statistics.fmean(data.lengths()):.0f} tokens; {args.epochs} epoch(s), batch 8; {args.rounds} round(s) per side, "
          f"{args.warmup_steps} warm-up steps untimed; torch threads {torch.get_num_threads()}")
    header = (f"{'shape':13} {'method':10} {'variant':16} {'codecl s/s':>10} {'ref s/s':>8} {'ratio':>6} {'codecl MFU':>10} "
              f"{'ref MFU':>8} {'pad codecl/ref':>15}")
    print(header)
    rows = []
    for shape in args.shapes.split(","):
        for method in args.methods.split(","):
            pred = None
            if args.predecessor:
                pred = combine([run_reference(shape, method, data, cfg, tokenizer, VARIANTS["default"], args.warmup_steps, pad_to=512)])
            # Variants that share a reference (same dtype and dropout) are timed around one reference:
            # A1 A2 B | B A2 A1 | ... — each round alternates which side goes first.
            groups: dict[tuple, list[str]] = {}
            for v in variants:
                groups.setdefault((VARIANTS[v]["dtype"], VARIANTS[v]["base_dropout"]), []).append(v)
            for (dtype, _), members in groups.items():
                timed: dict[str, list[dict]] = {m: [] for m in members} | {"reference": []}
                for r in range(args.rounds):
                    order = members + ["reference"] if r % 2 == 0 else ["reference"] + members[::-1]
                    for side in order:
                        if side == "reference":
                            timed[side].append(run_reference(shape, method, data, cfg, tokenizer, VARIANTS[members[0]], args.warmup_steps))
                        else:
                            timed[side].append(run_codecl(shape, method, data, cfg, VARIANTS[side], args.warmup_steps))
                ref = combine(timed["reference"])
                ref_mfu = ref["flops_per_s"] / 1e9 / peaks[dtype]
                for v in members:
                    ours = combine(timed[v])
                    mfu = ours["flops_per_s"] / 1e9 / peaks[dtype]
                    ratio = ours["samples_per_s"] / ref["samples_per_s"]
                    rows.append({"shape": shape, "method": method, "variant": v, **VARIANTS[v], "codecl": ours, "reference": ref,
                                 "codecl_samples_per_s": ours["samples_per_s"], "reference_samples_per_s": ref["samples_per_s"],
                                 "ratio": ratio, "codecl_mfu": mfu, "reference_mfu": ref_mfu, "peak_dtype": dtype,
                                 "predecessor_samples_per_s": pred["samples_per_s"] if pred else None})
                    print(f"{shape:13} {method:10} {v:16} {ours['samples_per_s']:10.2f} {ref['samples_per_s']:8.2f} {ratio:6.2f} "
                          f"{mfu:10.1%} {ref_mfu:8.1%} {ours['padding']:7.1%}/{ref['padding']:.1%}")
            if pred:
                print(f"{shape:13} {method:10} {'pad-512 (HF)':16} {'':>10} {pred['samples_per_s']:8.2f}   (the predecessor's "
                      f"padding; fp32, one round; padding {pred['padding']:.0%})")
    memory = None
    if args.memory:
        shape = args.shapes.split(",")[-1]
        memory = measure_memory(shape, "lora", args.samples)
        c, r = memory["codecl"], memory["reference"]
        print(f"peak RSS, {shape} lora: codecl {c['peak_bytes'] / 2**20:.0f} MiB ({c['above_start_bytes'] / 2**20:.0f} above the start "
              f"of training), reference {r['peak_bytes'] / 2**20:.0f} MiB ({r['above_start_bytes'] / 2**20:.0f} above)")
    # The summary line: codecl's default settings (the study's semantics), worst case over shapes and methods.
    headline = [r for r in rows if r["variant"] == "default"] or rows
    worst = min(headline, key=lambda r: r["ratio"])
    print(json.dumps({"codecl_samples_per_s": worst["codecl_samples_per_s"], "reference_samples_per_s": worst["reference_samples_per_s"],
                      "ratio": worst["ratio"], "codecl_mfu": min(r["codecl_mfu"] for r in headline), "variant": worst["variant"],
                      "matmul_peak_gflops": peaks, "skipped_variants": skipped, "rounds": args.rounds, "warmup_steps": args.warmup_steps,
                      "memory": memory, "rows": rows}))


if __name__ == "__main__":
    main()
