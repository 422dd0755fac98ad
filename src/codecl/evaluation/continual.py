"""Continual-learning summaries of a score matrix (SPEC "Metric definitions").

`R[s][j]` is the score on task `j` (0-based, in task order) after stage `s`; stage 0 is the base
model and task `j` is trained at stage `j + 1`, so the score of task `j` just after its own
training is `R[j + 1][j]` and `T = len(R) - 1` is the last completed stage. A complete run has
`T == num_tasks`; an interrupted one has fewer rows and every summary uses its last stage as `T`.

BWT and FWT follow Lopez-Paz & Ranzato (2017), "Gradient Episodic Memory for Continual
Learning" (NeurIPS), with the base model's scores `R[0]` in place of their random-init `b`.
Forgetting is the study's relative drop. A cell may be `None` (a metric a task has no
benchmark for, e.g. `pass_at_1`): a term that needs it is left out, and a summary with no
terms left is `None`.
"""
from __future__ import annotations

from statistics import fmean
from typing import Optional, Sequence

Matrix = Sequence[Sequence[Optional[float]]]

__all__ = ["forgetting", "bwt", "fwt", "final_average", "last_stage"]


def last_stage(R: Matrix) -> int:
    """`T`: the index of the last completed stage (0 when only the base model was scored)."""
    if not R:
        raise ValueError("score matrix has no stages; stage 0 (the base model) is always present")
    return len(R) - 1


def _mean(values: list[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return fmean(present) if present else None


def forgetting(R: Matrix, tasks: Sequence[str]) -> dict[str, Optional[float]]:
    """Relative forgetting of every trained task except the last one trained, by task name.

    `(R[j+1][j] − R[T][j]) / R[j+1][j]` for task `j` (trained at stage `j + 1 < T`); negative
    means the task improved after later stages. Not clipped. `None` where the just-trained
    score is 0 (relative change undefined) or a cell is missing.

    >>> f = forgetting([[0.0038, 0.0196], [0.2166, 0.05], [0.2150, 0.2489]], ["python", "javascript"])
    >>> {task: round(value, 4) for task, value in f.items()}
    {'python': 0.0074}
    """
    T = last_stage(R)
    result: dict[str, Optional[float]] = {}
    for j in range(T - 1):
        just_trained, final = R[j + 1][j], R[T][j]
        if just_trained is None or final is None or just_trained == 0:
            result[tasks[j]] = None
        else:
            result[tasks[j]] = (just_trained - final) / just_trained
    return result


def bwt(R: Matrix) -> Optional[float]:
    """Backward transfer: mean over tasks trained before the last stage of `R[T][j] − R[j+1][j]`
    (Lopez-Paz & Ranzato 2017, eq. 3); negative = forgetting. `None` when `T < 2`."""
    T = last_stage(R)
    terms = [None if R[T][j] is None or R[j + 1][j] is None else R[T][j] - R[j + 1][j] for j in range(T - 1)]
    return _mean(terms)


def fwt(R: Matrix) -> Optional[float]:
    """Forward transfer: mean over trained tasks after the first of `R[j][j] − R[0][j]`, the
    score of task `j` just before its own stage minus the base model's (Lopez-Paz & Ranzato
    2017, eq. 4; SPEC `R[i−1][i] − R[0][i]` with 1-based `i`). `None` when `T < 2`."""
    T = last_stage(R)
    terms = [None if R[j][j] is None or R[0][j] is None else R[j][j] - R[0][j] for j in range(1, T)]
    return _mean(terms)


def final_average(R: Matrix) -> Optional[float]:
    """Mean over all tasks of the last stage's scores `R[T][j]` (missing cells left out)."""
    return _mean(list(R[last_stage(R)]))
