"""Teacher-forced loss of the reference code given its description (SPEC metric `loss`).

Mean cross-entropy in nats per target token over a task's evaluation examples: every label
token counts once (end-of-sequence included when the reference was not cut, padding and — for
decoder-only models — the prompt excluded), so long references weigh by their length, as in
the training loss. It discriminates between models too weak to write working code, where BLEU
and syntax pass sit at the floor. Lower is better.

One forward pass per example, in length-sorted batches; the same encoding (`encode_pairs`) and
padding (`pad_batch`) as training, so the number is the training objective on held-out data.
"""
from __future__ import annotations

import torch

from codecl.data.batching import IGNORE_INDEX, EncodedPairs, pad_batch
from codecl.distributed import Distributed, current


@torch.no_grad()
def per_example_losses(model, data: EncodedPairs, pad_id: int, batch_size: int, device: torch.device,
                       dist: Distributed | None = None) -> list[tuple[float, int]]:
    """`(summed nats, label tokens)` of every example, in input order."""
    dist = dist or current()
    lengths = data.lengths()
    order = sorted(range(len(data)), key=lambda i: lengths[i])
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    out: list[tuple[float, int]] = [(0.0, 0)] * len(data)
    model.eval()
    for idx in batches:  # every rank computes every batch: one forward pass each, cheap next to generation
        batch = pad_batch([data.source_ids[i] for i in idx], [data.target_ids[i] for i in idx], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        with dist.autocast():
            logits = model(**batch, labels=labels).logits  # (B, T, V)
        logits, labels = _aligned(model, logits, labels)
        nats = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")  # (B, T)
        counts = (labels != IGNORE_INDEX).sum(dim=1)
        for i, total, n in zip(idx, nats.sum(dim=1).tolist(), counts.tolist()):
            out[i] = (float(total), int(n))
    return out


def _aligned(model, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the labels they predict: the same positions for an encoder-decoder (labels are
    shifted into the decoder's inputs), one step apart for a decoder-only model."""
    config = next((c for c in (getattr(model, "config", None), getattr(getattr(model, "base", None), "config", None)) if c is not None), None)
    if getattr(config, "is_encoder_decoder", True):
        return logits, labels
    return logits[:, :-1], labels[:, 1:]


def mean_loss(losses: list[tuple[float, int]]) -> float:
    """Nats per label token over a corpus of `(summed nats, tokens)`."""
    tokens = sum(n for _, n in losses)
    if tokens == 0:
        raise ValueError("no label tokens to score (empty evaluation set)")
    return sum(total for total, _ in losses) / tokens
