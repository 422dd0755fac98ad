"""What a stage trains on: its tasks' data, and for replay a small buffer of earlier tasks'.

A `Stage` names what one training stage is recorded as (`stages` in results.json) and which
tasks' training data it uses: one task for the continual methods, all of them for `joint`.
The replay buffer (experience replay, e.g. Chaudhry et al. 2019, "On Tiny Episodic Memories in
Continual Learning", arXiv 1902.10486) is a fixed random subset of each earlier task, drawn
from the seed and the task's name, so every stage and every resumed run sees the same buffer.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from codecl.data.batching import EncodedPairs


@dataclass(frozen=True)
class Stage:
    name: str
    """Recorded in results.json `stages` and names the stage's folder: a task, or `joint`."""
    tasks: tuple[str, ...]
    """Tasks whose training data the stage trains on."""


def concat_pairs(parts: list[EncodedPairs]) -> EncodedPairs:
    """One `EncodedPairs` holding every part's examples, in order."""
    if len(parts) == 1:
        return parts[0]
    return EncodedPairs([s for p in parts for s in p.source_ids], [t for p in parts for t in p.target_ids],
                        sum(p.truncated_sources for p in parts), sum(p.truncated_targets for p in parts))


def sample_indices(n: int, k: int, seed: int, task: str) -> list[int]:
    """`min(k, n)` distinct indices of `range(n)`, fixed by (seed, task), in ascending order."""
    rng = np.random.default_rng([seed % 2**32, zlib.crc32(task.encode())])
    return sorted(rng.choice(n, size=min(k, n), replace=False).tolist())


def replay_buffer(earlier: dict[str, EncodedPairs], per_task: int, seed: int) -> EncodedPairs:
    """`per_task` examples of each earlier task (all of a task that has fewer)."""
    parts = []
    for task, pairs in earlier.items():
        keep = sample_indices(len(pairs), per_task, seed, task)
        parts.append(EncodedPairs([pairs.source_ids[i] for i in keep], [pairs.target_ids[i] for i in keep], 0, 0))
    return concat_pairs(parts)
