"""Elastic weight consolidation (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting
in neural networks", PNAS 114(13), arXiv 1612.00796).

After task t the diagonal of the (empirical) Fisher information F_t of the trainable weights is
estimated from squared gradients of the training loss on t's own data, and the weights θ*_t are
kept; every later stage adds  λ/2 Σ_t Σ_i F_t,i (θ_i − θ*_t,i)²  to its loss (one term per
finished task, as in the paper). The gradients are those of batch-mean losses (one backward per
batch, in eval mode so dropout does not add noise): the cheap approximation most
implementations use instead of per-example gradients.
"""
from __future__ import annotations

import torch
from torch import nn

from codecl.data.batching import EncodedPairs, bucketed_batches, pad_batch


def fisher_diagonal(model, named: list[tuple[str, nn.Parameter]], data: EncodedPairs, pad_id: int, device,
                    max_batches: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
    """Mean over up to `max_batches` batches of the squared gradient of the loss, per parameter."""
    batches = bucketed_batches(data.lengths(), batch_size, seed)[:max_batches]
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in named}
    flags = [p.requires_grad for _, p in named]
    was_training = model.training
    model.eval()
    for _, p in named:
        p.requires_grad_(True)
        p.grad = None
    for ids in batches:
        batch = pad_batch([data.source_ids[i] for i in ids], [data.target_ids[i] for i in ids], pad_id)
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        for n, p in named:
            if p.grad is not None:
                fisher[n] += p.grad.detach().float() ** 2
                p.grad = None
    for (_, p), flag in zip(named, flags):
        p.requires_grad_(flag)
    model.train(was_training)
    return {n: f / max(1, len(batches)) for n, f in fisher.items()}


class EwcPenalty:
    """λ/2 Σ_t Σ F_t (θ − θ*_t)² over the consolidated tasks; call it for the current value."""

    def __init__(self, strength: float):
        self.strength = strength
        self.terms: list[tuple[list[nn.Parameter], list[torch.Tensor], list[torch.Tensor]]] = []

    def consolidate(self, named: list[tuple[str, nn.Parameter]], fisher: dict[str, torch.Tensor]) -> None:
        """Keep the finished task's Fisher and its weights θ* (copies)."""
        params = [p for _, p in named]
        self.terms.append((params, [fisher[n].detach().clone() for n, _ in named], [p.detach().clone() for p in params]))

    def __call__(self) -> torch.Tensor:
        total = None
        for params, fishers, anchors in self.terms:
            for p, f, anchor in zip(params, fishers, anchors):
                term = (f * (p - anchor) ** 2).sum()
                total = term if total is None else total + term
        if total is None:
            raise ValueError("no task consolidated yet: the EWC penalty is undefined")
        return 0.5 * self.strength * total
