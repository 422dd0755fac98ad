"""Training one task's modules: the loop reads top to bottom (nanoGPT style).

AdamW over the active task's parameters only; dynamic padding with length-bucketed batches;
a non-finite loss skips its step (counted) and too many in a row stop the run (exit 5);
an optional `regularizer` (a callable returning an extra loss term, e.g. EWC's penalty or
O-LoRA's orthogonality loss) added to each batch's loss; grad-norm clipping; loss and timing to the event log; a mid-stage checkpoint every
`checkpoint_every_steps` steps, from which an interrupted stage continues bit for bit.
Under several processes (`codecl.distributed`) each rank trains on its slice of every global
batch; gradients are summed with each slice weighted by its share of the batch's label tokens.
Returns the stage's measured cost.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from codecl.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from codecl.data.batching import IGNORE_INDEX, EncodedPairs, bucketed_batches, pad_batch
from codecl.distributed import Distributed, current
from codecl.errors import DivergenceError
from codecl.memory import PeakMemory
from codecl.model.base import set_base_dropout
from codecl.model.dropout import use_fast_dropout


@dataclass
class StageCost:
    trainable_parameters: int
    seconds: float
    samples_per_second: float
    peak_memory_bytes: int
    peak_memory_above_start_bytes: int
    steps: int
    skipped_nonfinite_steps: int
    loss_curve: list[dict] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _synced_loss(loss: torch.Tensor, weight: float, params: list, dist: Distributed) -> float:
    """Several processes: backpropagate this rank's token-weighted share of the global batch's mean
    loss, then sum gradients and loss over ranks. A non-finite share is not backpropagated; the
    summed loss is then non-finite on every rank, and every rank skips the step."""
    local = loss * weight
    value = local.item()
    if math.isfinite(value):
        local.backward()
    return dist.sync_gradients(params, value)


def optimizer_options(device: torch.device) -> dict:
    """AdamW's fused CUDA kernel on GPUs (one launch for every parameter); torch's default elsewhere."""
    return {"fused": True} if device.type == "cuda" else {}


def train_task(model, data: EncodedPairs, cfg, pad_id: int, device: torch.device, seed: int,
               log=lambda event: None, progress: bool = True, desc: str = "train",
               checkpoint_dir: Path | None = None, dist: Distributed | None = None, regularizer: Callable[[], torch.Tensor] | None = None) -> StageCost:
    """Train the active task's modules of `model` (a ContinualLearner) on `data` for cfg.epochs;
    `regularizer()`, when given, is added to every batch's loss."""
    from tqdm.auto import tqdm

    dist = dist or current()  # several processes: see codecl.distributed
    named = [(n, p) for n, p in model.task_parameters(model.active) if p.requires_grad]
    params = [p for _, p in named]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **optimizer_options(device))
    lengths = data.lengths()
    # Tokens that carry loss per example (a decoder-only prompt's -100 labels carry none): ranks' weights.
    label_tokens = [sum(t != IGNORE_INDEX for t in ids) for ids in data.target_ids] if dist.is_distributed else None
    epochs = [bucketed_batches(lengths, cfg.batch_size, seed + epoch) for epoch in range(cfg.epochs)]
    total_steps = sum(len(b) for b in epochs)
    pos = {"epoch": 0, "batch": 0, "step": 0, "skipped": 0, "consecutive": 0, "samples": 0, "seconds": 0.0, "curve": [], "window": []}
    dist.broadcast_parameters(params)  # every rank starts from the main process's modules
    found = find_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    if found is not None:
        pos.update(load_checkpoint(found, named, optimizer))
        log({"event": "resume_stage", "step": pos["step"], "checkpoint": str(found)})
    dist.reseed_dropout(seed, pos["step"])  # ranks > 0 only
    model.train()
    if not cfg.base_dropout:
        set_base_dropout(model.base, False)
    if cfg.fast_dropout:
        use_fast_dropout(model)  # FastDropout itself falls back to nn.Dropout off the CPU
    peak = PeakMemory(device)
    started = time.perf_counter() - pos["seconds"]
    bar = tqdm(total=total_steps, initial=pos["step"], desc=desc, disable=not progress, leave=False, unit="step")
    for epoch in range(pos["epoch"], cfg.epochs):
        first = pos["batch"] if epoch == pos["epoch"] else 0
        for b in range(first, len(epochs[epoch])):
            batch_ids = epochs[epoch][b]
            mine, weight = dist.split_batch(batch_ids, [label_tokens[i] for i in batch_ids] if label_tokens else [])  # one process: all, 1.0
            batch = pad_batch([data.source_ids[i] for i in mine], [data.target_ids[i] for i in mine], pad_id)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with dist.autocast():
                loss = model(**batch).loss
            if regularizer is not None:
                loss = loss + regularizer()
            pos["step"] += 1
            bar.update(1)
            loss_value = _synced_loss(loss, weight, params, dist) if dist.is_distributed else loss.item()
            if not math.isfinite(loss_value):
                pos["skipped"] += 1
                pos["consecutive"] += 1
                optimizer.zero_grad(set_to_none=True)
                log({"event": "nonfinite_loss", "step": pos["step"], "epoch": epoch})
                if pos["consecutive"] >= cfg.max_consecutive_nonfinite:
                    raise DivergenceError(f"{desc}: {pos['consecutive']} non-finite losses in a row at step {pos['step']}; "
                                          f"lower train.lr (now {cfg.lr}); the last good checkpoint is kept")
            else:
                pos["consecutive"] = 0
                if not dist.is_distributed:  # several processes: done in _synced_loss
                    loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                pos["samples"] += len(batch_ids)
                pos["window"].append(loss_value)
            if pos["window"] and (pos["step"] % cfg.log_every == 0 or pos["step"] == total_steps):
                point = {"step": pos["step"], "epoch": epoch, "loss": sum(pos["window"]) / len(pos["window"]),
                         "seconds": round(time.perf_counter() - started, 3)}
                pos["curve"].append(point)
                pos["window"] = []
                log({"event": "train_loss", **point})
                bar.set_postfix(loss=f"{point['loss']:.3f}")
            every = cfg.checkpoint_every_steps
            if every and pos["step"] % every == 0:
                dist.reseed_dropout(seed, pos["step"])  # ranks > 0; a resumed stage reseeds alike
            if checkpoint_dir is not None and dist.is_main and every and pos["step"] % every == 0 and pos["step"] < total_steps:
                pos.update(epoch=epoch, batch=b + 1, seconds=time.perf_counter() - started)
                save_checkpoint(checkpoint_dir, named, optimizer, dict(pos))
                log({"event": "checkpoint", "step": pos["step"]})
    bar.close()
    dist.broadcast_parameters(params)  # what every rank evaluates is what the main process saves
    seconds = time.perf_counter() - started
    model.eval()
    n_trainable = sum(p.numel() for p in params)
    return StageCost(n_trainable, seconds, pos["samples"] / seconds if seconds > 0 else 0.0, peak.read(), peak.above_start(), pos["step"],
                     pos["skipped"], pos["curve"])
