"""Training throughput: codecl's loop vs Hugging Face's Seq2SeqTrainer + PEFT, side by side.

In one process, on the same model, data and batch size:
  (a) codecl: `codecl.train.train_task` on a `ContinualModel` (dynamic padding, length buckets);
  (b) reference: `Seq2SeqTrainer` + PEFT LoRA at its best settings (`DataCollatorForSeq2Seq`
      dynamic padding, `group_by_length=True`, no evaluation, logging and saving off);
  (c) the predecessor's way: the same Trainer, every example padded to the max length (512).
Also this machine's fp32 matmul peak, and codecl's model-FLOP utilisation against it.
The last line printed is one JSON object.

    python bench/train_throughput.py [--samples 160] [--shapes quickstart,codet5-small] [--methods lora,hybrid]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace

import torch

from codecl.config import LoraConfig, MethodConfig, TrainConfig
from codecl.data.batching import encode_pairs
from codecl.methods.continual import ContinualModel
from codecl.model.base import count_parameters
from codecl.train import seed_everything, train_task

from bench_shapes import make_model, tokenizer_and_pairs  # sibling module of this script

def matmul_peak_gflops(n: int = 1024, seconds: float = 2.0, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        done += 1
    return 2 * n**3 * done / (time.perf_counter() - start) / 1e9


def model_flops(model, enc_tokens: int, dec_tokens: int, trainable: int) -> float:
    """Forward 2N + backward-through-activations 2N per token, + 4N for trainable weights' gradients."""
    enc = sum(p.numel() for n, p in model.named_parameters() if n.startswith("encoder."))
    dec = count_parameters(model) - enc
    return 4 * (enc * enc_tokens + dec * dec_tokens) + 2 * trainable * (enc_tokens + dec_tokens)


# codecl settings timed, each against the reference with the same semantics (base dropout on/off).
VARIANTS = {
    "default": dict(frozen_dtype="float32", base_dropout=True, fast_dropout=True),
    "torch-dropout": dict(frozen_dtype="float32", base_dropout=True, fast_dropout=False),
    "bf16-frozen": dict(frozen_dtype="bfloat16", base_dropout=True, fast_dropout=True),
    "no-base-dropout": dict(frozen_dtype="float32", base_dropout=False, fast_dropout=True),
}


def run_codecl(shape, method, data, cfg, frozen_dtype: str = "float32"):
    model, info = make_model(shape, getattr(torch, frozen_dtype))
    cm = ContinualModel(model, method, MethodConfig(lora=LoraConfig()), info)
    seed_everything(42)
    cm.add_task("python")
    cm.activate("python")
    cost = train_task(cm, data, cfg, 0, torch.device("cpu"), seed=42, progress=False)
    enc_tokens = sum(len(s) for s in data.source_ids) * cfg.epochs
    dec_tokens = sum(len(t) for t in data.target_ids) * cfg.epochs
    return cost.samples_per_second, cost.seconds, model_flops(cm.base, enc_tokens, dec_tokens, cost.trainable_parameters)


def run_reference(shape, method, data, cfg, pad_to: int | None, tokenizer=None, base_dropout: bool = True):
    """Seq2SeqTrainer + PEFT LoRA (hybrid: + a trainable copy of the top encoder block via modules_to_save);
    without base dropout, the way a Hugging Face user gets it: `dropout_rate=0` in the model config."""
    from datasets import Dataset
    from peft import LoraConfig as PeftLora, TaskType, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    model, _ = make_model(shape, dropout_rate=0.1 if base_dropout else 0.0)
    top = f"encoder.block.{model.config.num_layers - 1}"
    lora = PeftLora(task_type=TaskType.SEQ_2_SEQ_LM, r=16, lora_alpha=32, lora_dropout=0.1, target_modules=["q", "k", "v", "o", "wi", "wo"],
                    modules_to_save=[top] if method == "hybrid" else None)
    model = get_peft_model(model, lora)
    rows = {"input_ids": data.source_ids, "labels": data.target_ids}
    if pad_to:
        rows = {"input_ids": [s + [0] * (pad_to - len(s)) for s in data.source_ids],
                "labels": [t + [-100] * (pad_to - len(t)) for t in data.target_ids]}
    dataset = Dataset.from_dict(rows)
    with tempfile.TemporaryDirectory() as out:
        args = Seq2SeqTrainingArguments(
            output_dir=out, per_device_train_batch_size=cfg.batch_size, num_train_epochs=cfg.epochs, learning_rate=cfg.lr,
            max_grad_norm=cfg.grad_clip, eval_strategy="no", save_strategy="no", **_grouping(pad_to is None),
            logging_strategy="no", report_to=[], use_cpu=True, seed=42, dataloader_num_workers=0, disable_tqdm=True,
        )
        collator = DataCollatorForSeq2Seq(tokenizer=tokenizer, model=model, label_pad_token_id=-100, padding=True) if pad_to is None else None
        trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    return len(data) * cfg.epochs / seconds, seconds


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
        run_reference(shape, method, data, cfg, None, tokenizer)
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


def _grouping(on: bool) -> dict:
    """transformers 5 names it `train_sampling_strategy="group_by_length"`; 4.x `group_by_length=True`."""
    from transformers import Seq2SeqTrainingArguments

    if "train_sampling_strategy" in Seq2SeqTrainingArguments.__dataclass_fields__:
        return {"train_sampling_strategy": "group_by_length" if on else "random"}
    return {"group_by_length": on}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=160)
    parser.add_argument("--shapes", default="quickstart,codet5-small")
    parser.add_argument("--methods", default="lora,hybrid")
    parser.add_argument("--predecessor", action="store_true", help="also time (c), padding to 512 (slow)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="codecl settings: default (fp32, dropout as the reference, FastDropout masks), torch-dropout "
                             "(train.fast_dropout=false), bf16-frozen (model.frozen_dtype=bfloat16), no-base-dropout "
                             "(train.base_dropout=false; its reference has dropout_rate=0); the reference is fp32")
    parser.add_argument("--memory", action="store_true",
                        help="also measure peak RSS of LoRA training on the last shape, codecl vs reference, each in a fresh process")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(os.cpu_count() or 1)
    if args.memory_child:
        return memory_child(args.memory_child, args.shapes.split(",")[-1], args.methods.split(",")[0], args.samples)

    tokenizer, pairs = tokenizer_and_pairs(args.samples)
    data = encode_pairs(tokenizer, [p.source for p in pairs], [p.target for p in pairs], 64, 256)
    cfg = TrainConfig(epochs=1, batch_size=8, checkpoint_every_steps=0)
    peak = matmul_peak_gflops()
    bf16_peak = matmul_peak_gflops(dtype=torch.bfloat16)
    print(f"matmul peak: fp32 {peak:.1f}, bf16 {bf16_peak:.1f} GFLOP/s; {len(data)} samples, "
          f"mean length {sum(data.lengths()) / len(data):.0f} tokens; torch threads {torch.get_num_threads()}")
    print(f"{'shape':14} {'method':8} {'variant':16} {'codecl s/s':>11} {'HF s/s':>9} {'ratio':>6} {'pad-512 s/s':>12} {'MFU fp32':>9}")
    rows, refs = [], {}
    for shape in args.shapes.split(","):
        for method in args.methods.split(","):
            pred = run_reference(shape, method, data, cfg, 512, tokenizer)[0] if args.predecessor else None
            for variant in args.variants.split(","):
                v = VARIANTS[variant]
                key = (shape, method, v["base_dropout"])
                if key not in refs:
                    refs[key] = run_reference(shape, method, data, cfg, None, tokenizer, v["base_dropout"])[0]
                ref = refs[key]
                train_cfg = replace(cfg, base_dropout=v["base_dropout"], fast_dropout=v["fast_dropout"])
                ours, seconds, flops = run_codecl(shape, method, data, train_cfg, v["frozen_dtype"])
                mfu = flops / seconds / 1e9 / peak
                rows.append({"shape": shape, "method": method, "variant": variant, **v, "codecl_samples_per_s": ours,
                             "reference_samples_per_s": ref, "predecessor_samples_per_s": pred, "ratio": ours / ref, "mfu": mfu})
                pred_s = f"{pred:12.2f}" if pred else f"{'-':>12}"
                print(f"{shape:14} {method:8} {variant:16} {ours:11.2f} {ref:9.2f} {ours / ref:6.2f} {pred_s} {mfu:9.1%}")
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
                      "ratio": worst["ratio"], "mfu": min(r["mfu"] for r in headline), "variant": worst["variant"],
                      "matmul_peak_gflops": peak, "bf16_matmul_peak_gflops": bf16_peak, "memory": memory, "rows": rows}))


if __name__ == "__main__":
    main()
