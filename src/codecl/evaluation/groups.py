"""A results document's runs grouped by method, and the paired comparison of two methods' runs:
what both the `summary` of results.json (`codecl.evaluation.summary`) and the verdicts on the design
study's claims (`codecl.evaluation.claims`) are computed from.
"""
from __future__ import annotations

from statistics import fmean
from typing import Optional

from codecl.evaluation.stats import paired_t_test

__all__ = ["method_groups", "mean_forgetting", "compare_methods", "COMPARED_METRIC"]

COMPARED_METRIC = "bleu"
"""The paired comparisons and the claims are on final average BLEU, the study's headline number."""


def _complete(results: dict, run: dict) -> bool:
    # as codecl.results.is_complete (a layer above): every task trained, or a finished joint run
    return len(run["stages"]) == len(results["tasks"]) + 1 or run["stages"] == ["base", "joint"]


def method_groups(results: dict) -> dict[str, tuple[list[dict], bool]]:
    """method → (runs summarised, complete?): its finished runs, else all of its runs (complete=False)."""
    groups: dict[str, tuple[list[dict], bool]] = {}
    for method in dict.fromkeys(r["method"] for r in results["runs"]):
        runs = [r for r in results["runs"] if r["method"] == method]
        finished = [r for r in runs if _complete(results, r)]
        groups[method] = (finished, True) if finished else (runs, False)
    return groups


def mean_forgetting(run: dict) -> Optional[float]:
    """Mean of the run's defined per-task forgetting values (None when it has none)."""
    values = [v for v in run["forgetting"].values() if v is not None]
    return fmean(values) if values else None


def _order(run: dict) -> int:
    return int(run.get("order_index", 0))


def compare_methods(runs_a: list[dict], runs_b: list[dict], metric: str = COMPARED_METRIC) -> dict:
    """Paired t-test of final average `metric`, a − b, over the (seed, task order) runs both methods ran."""
    by_key_b = {(r["seed"], _order(r)): r for r in runs_b}
    pairs = [(r, by_key_b[(r["seed"], _order(r))]) for r in runs_a if (r["seed"], _order(r)) in by_key_b]
    test = paired_t_test([a["final_average"].get(metric) for a, _ in pairs], [b["final_average"].get(metric) for _, b in pairs])
    return {"seeds": [a["seed"] for a, _ in pairs], "orders": [_order(a) for a, _ in pairs], **test.as_dict()}
