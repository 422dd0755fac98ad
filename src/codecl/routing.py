"""Task-free inference (SPEC `eval.routing=router`): pick a task's modules from the input alone.

The study gives the task id at inference (the oracle). An IDE or an API does not always know it, so
codecl also scores every stage *routed*: each evaluation input goes to the modules of the task the
router picks among the tasks trained so far.

The router (MoCL / PP-TF's prototype routing, with a better distance): an input's features are the
frozen base's mean-pooled states over the input tokens (the T5 encoder's last layer; a decoder-only
base's last layer over the prompt), computed by the base alone — no task module — so they do not move
as tasks are learned. When a task is trained, the router keeps, from that task's *training inputs only*,
the count, sum and sum of squares of their features (`learn`). An input is routed to the task whose
mean is nearest in the pooled within-task standardised distance Σ_d (x_d − μ_t,d)² / σ²_d (a diagonal
linear discriminant: the per-dimension variance σ² is pooled over the learned tasks, floored at 1e-4 of
its mean so that a dimension constant in the training inputs cannot dominate), which weighs the feature dimensions that separate tasks above those that merely
vary within every task. With one learned task every input goes to it.

State is a few vectors per task, saved as `router.safetensors` in the run folder (`save` / `load`), so
`codecl serve` routes a request that names no task.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = ["Router", "input_rows", "embed_rows", "ROUTER_FILE"]

ROUTER_FILE = "router.safetensors"
_FLOOR = 1e-4
_EPS = 1e-6


def input_rows(encoded) -> list[list[int]]:
    """The token ids of each example's *input* from `EncodedPairs`: the T5 source, or for a causal base
    the prompt (the positions whose labels are masked, -100)."""
    from codecl.data.batching import IGNORE_INDEX

    rows = []
    for source, target in zip(encoded.source_ids, encoded.target_ids):
        if len(source) == len(target) and target and target[0] == IGNORE_INDEX:  # causal: prompt + code, prompt masked
            n = next((i for i, t in enumerate(target) if t != IGNORE_INDEX), len(target))
            rows.append(list(source[:n]))
        else:
            rows.append(list(source))
    return rows


@torch.no_grad()
def embed_rows(model, rows: list[list[int]], pad_id: int, device, batch_size: int = 32) -> torch.Tensor:
    """(N, d) float32 features: the bare base's last-layer states mean-pooled over each input's tokens."""
    from codecl.data.batching import pad_batch
    from codecl.model.causal import is_causal

    was_training = model.training
    model.eval()
    causal = is_causal(model)
    out = []
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths together: little padding
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        batch = pad_batch([rows[i] or [pad_id] for i in index], None, pad_id)
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        if causal:
            states = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False).hidden_states[-1]
        else:
            states = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        weight = mask.unsqueeze(-1).to(torch.float32)
        pooled = (states.to(torch.float32) * weight).sum(1) / weight.sum(1).clamp_min(1.0)
        out.append((index, pooled.cpu()))
    if was_training:
        model.train()
    features = torch.zeros((len(rows), out[0][1].shape[1] if out else 0), dtype=torch.float32)
    for index, pooled in out:
        features[index] = pooled
    return features


class Router:
    """Per-task feature statistics learned from training inputs; routes by diagonal LDA distance."""

    def __init__(self):
        self.stats: dict[str, tuple[int, torch.Tensor, torch.Tensor]] = {}

    @property
    def tasks(self) -> list[str]:
        return list(self.stats)

    def learn(self, task: str, features: torch.Tensor) -> None:
        """Keep `task`'s statistics (its training inputs' features, float64 sums)."""
        if len(features) == 0:
            raise ValueError(f"task {task!r}: no training inputs to learn a route from")
        x = features.to(torch.float64)
        self.stats[task] = (len(x), x.sum(0), (x * x).sum(0))

    def _means_and_variance(self, among: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        means, within, total = [], 0.0, 0
        for task in among:
            n, s, ss = self.stats[task]
            mu = s / n
            means.append(mu)
            within = within + (ss - n * mu * mu)
            total += n
        variance = within / max(total - len(among), 1)
        variance = variance.clamp_min(0)
        variance = torch.maximum(variance, _FLOOR * variance.mean()) + _EPS  # a constant dimension must not dominate
        return torch.stack(means), variance

    def scores(self, features: torch.Tensor, among: list[str]) -> torch.Tensor:
        """(N, len(among)) negative standardised squared distances (higher = closer)."""
        missing = [t for t in among if t not in self.stats]
        if missing:
            raise ValueError(f"the router has not learned task(s) {missing}; learned: {self.tasks}")
        means, variance = self._means_and_variance(among)
        x = features.to(torch.float64)
        return -(((x[:, None, :] - means[None]) ** 2) / variance).sum(-1)

    def route(self, features: torch.Tensor, among: list[str] | None = None) -> list[str]:
        """The task picked for every row of `features`, among `among` (default: every learned task)."""
        among = list(among if among is not None else self.tasks)
        if not among:
            raise ValueError("the router has learned no task yet")
        if len(among) == 1:
            return [among[0]] * len(features)
        best = self.scores(features, among).argmax(dim=1).tolist()
        return [among[i] for i in best]

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        from codecl.fileio import atomic_write

        tensors = {}
        for task, (n, s, ss) in self.stats.items():
            tensors[f"{task}.sum"], tensors[f"{task}.sumsq"] = s.contiguous(), ss.contiguous()
        metadata = {"tasks": json.dumps(self.tasks), "counts": json.dumps({t: v[0] for t, v in self.stats.items()}),
                    "extra": json.dumps(extra or {})}
        return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))

    @classmethod
    def load(cls, path: str | Path) -> tuple["Router", dict]:
        from safetensors import safe_open

        from codecl.errors import CheckpointError

        try:
            with safe_open(str(path), "pt") as fh:
                meta = fh.metadata() or {}
                tasks, counts = json.loads(meta["tasks"]), json.loads(meta["counts"])
                router = cls()
                for task in tasks:
                    router.stats[task] = (int(counts[task]), fh.get_tensor(f"{task}.sum"), fh.get_tensor(f"{task}.sumsq"))
                return router, json.loads(meta.get("extra", "{}"))
        except Exception as exc:  # OSError, KeyError, JSON errors, safetensors' own SafetensorError
            raise CheckpointError(f"{path}: not a codecl router file ({type(exc).__name__}: {exc}); rerun with eval.routing=router") from None
