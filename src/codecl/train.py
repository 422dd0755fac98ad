"""Training one task's modules: the loop reads top to bottom (nanoGPT style).

AdamW over the active task's parameters only; dynamic padding with length-bucketed batches;
a non-finite loss skips its step (counted) and too many in a row stop the run (exit 5);
grad-norm clipping; loss and timing to the event log. Returns the stage's measured cost.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from codecl.data.batching import EncodedPairs, bucketed_batches, pad_batch
from codecl.errors import DivergenceError
from codecl.memory import PeakMemory


@dataclass
class StageCost:
    trainable_parameters: int
    seconds: float
    samples_per_second: float
    peak_memory_bytes: int
    steps: int
    skipped_nonfinite_steps: int
    loss_curve: list[dict] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_task(model, data: EncodedPairs, cfg, pad_id: int, device: torch.device, seed: int,
               log=lambda event: None, progress: bool = True, desc: str = "train") -> StageCost:
    """Train the active task's modules of `model` (a ContinualModel) on `data` for cfg.epochs."""
    from tqdm.auto import tqdm

    params = model.trainable_parameters()
    n_trainable = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    lengths = data.lengths()
    epochs = [bucketed_batches(lengths, cfg.batch_size, seed + epoch) for epoch in range(cfg.epochs)]
    total_steps = sum(len(b) for b in epochs)
    model.train()
    peak = PeakMemory(device)
    started, step, skipped, consecutive, samples = time.perf_counter(), 0, 0, 0, 0
    curve, window = [], []
    bar = tqdm(total=total_steps, desc=desc, disable=not progress, leave=False, unit="step")
    for epoch, batches in enumerate(epochs):
        for batch_ids in batches:
            batch = pad_batch([data.source_ids[i] for i in batch_ids], [data.target_ids[i] for i in batch_ids], pad_id)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            loss = model(**batch).loss
            step += 1
            bar.update(1)
            if not math.isfinite(loss.item()):
                skipped, consecutive = skipped + 1, consecutive + 1
                optimizer.zero_grad(set_to_none=True)
                log({"event": "nonfinite_loss", "step": step, "epoch": epoch})
                if consecutive >= cfg.max_consecutive_nonfinite:
                    raise DivergenceError(f"{desc}: {consecutive} non-finite losses in a row at step {step}; lower train.lr (now {cfg.lr})")
                continue
            consecutive = 0
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            samples += len(batch_ids)
            window.append(loss.item())
            if step % cfg.log_every == 0 or step == total_steps:
                point = {"step": step, "epoch": epoch, "loss": sum(window) / len(window), "seconds": round(time.perf_counter() - started, 3)}
                curve.append(point)
                log({"event": "train_loss", **point})
                bar.set_postfix(loss=f"{point['loss']:.3f}")
                window = []
    bar.close()
    seconds = time.perf_counter() - started
    model.eval()
    return StageCost(n_trainable, seconds, samples / seconds if seconds > 0 else 0.0, peak.read(), step, skipped, curve)
