"""Aggregates over seeds of a results document: the optional top-level `summary` of results.json.

Per method, over its finished runs — every seed and task order — (or, when none finished, over its
interrupted runs, flagged `"complete": false`): a mean and 95% Student-t interval for every cell of every score matrix and
for every summary figure (final average, forgetting, BWT, FWT); between every two finished
methods, a paired t-test on final average BLEU over the seeds both ran; and the verdicts on the
design study's claims (`codecl.evaluation.claims`). Pure: recomputed from `runs` on every save,
so it can never disagree with them; readers (the report) recompute it rather than trust it.
"""
from __future__ import annotations

from itertools import combinations

from codecl.evaluation.claims import evaluate_claims
from codecl.evaluation.groups import COMPARED_METRIC, _order, compare_methods, mean_forgetting, method_groups
from codecl.evaluation.stats import interval95

__all__ = ["method_groups", "mean_forgetting", "summarize_method", "compare_methods", "summarize", "COMPARED_METRIC"]
# method_groups, mean_forgetting, compare_methods, COMPARED_METRIC: codecl.evaluation.groups's, re-exported


def summarize_method(runs: list[dict], tasks: list[str]) -> dict:
    """Intervals over `runs` (one per seed and task order) of every score cell and summary figure, as plain dicts.

    Final averages, BWT, FWT and forgetting are averaged over every seed *and* order. A score matrix's
    intermediate rows mean different models on different orders, so its cells are averaged over the runs
    of the first order present only (`scores_order`); `orders` gives each order's final averages over
    seeds and `order_spread` the largest minus the smallest of those means (order sensitivity)."""
    first = min(_order(r) for r in runs)
    same_order = [r for r in runs if _order(r) == first]
    longest = max((r["stages"] for r in same_order), key=len)
    metrics = list(dict.fromkeys(m for r in runs for m in r["scores"]))
    scores = {m: [[interval95(r["scores"][m][s][j] for r in same_order if m in r["scores"] and s < len(r["stages"])).as_dict()
                   for j in range(len(tasks))] for s in range(len(longest))] for m in metrics}
    figures = {key: {m: interval95(r[key].get(m) for r in runs).as_dict() for m in metrics} for key in ("final_average", "bwt", "fwt")}
    trained = list(dict.fromkeys(t for r in runs for t in r["forgetting"]))
    summary = {
        "seeds": sorted({r["seed"] for r in runs}),
        "runs": len(runs),
        "stages": list(longest),
        "scores_order": first,
        "scores": scores,
        **figures,
        "forgetting": {t: interval95(r["forgetting"].get(t) for r in runs).as_dict() for t in (trained if len({_order(r) for r in runs}) > 1 else tasks[:-1])},
        "mean_forgetting": interval95(mean_forgetting(r) for r in runs).as_dict(),
    }
    by_order: dict[int, list[dict]] = {}
    for r in runs:
        by_order.setdefault(_order(r), []).append(r)
    if len(by_order) > 1 or any("order" in r for r in runs):
        per_order = [{"order_index": k, "order": group[0].get("order", tasks), "seeds": [r["seed"] for r in group],
                      "final_average": {m: interval95(r["final_average"].get(m) for r in group).as_dict() for m in metrics}}
                     for k, group in sorted(by_order.items())]
        summary["orders"] = per_order
        spread = {}
        for m in metrics:
            means = [o["final_average"][m]["mean"] for o in per_order if o["final_average"][m]["mean"] is not None]
            spread[m] = max(means) - min(means) if len(means) > 1 else None
        summary["order_spread"] = spread
    routed = [r for r in runs if "routed_scores" in r]
    if routed:
        summary["routed_final_average"] = {m: interval95(r.get("routed_final_average", {}).get(m) for r in routed).as_dict()
                                           for m in routed[0]["routed_scores"]}
        summary["final_routing_accuracy"] = interval95(r["routing_accuracy"][-1] for r in routed).as_dict()
    return summary


def summarize(results: dict) -> dict:
    """The `summary` object of results.json (see the module docstring)."""
    tasks, groups = results["tasks"], method_groups(results)
    methods = {m: {"complete": complete, **summarize_method(runs, tasks)} for m, (runs, complete) in groups.items()}
    finished = [m for m, (_, complete) in groups.items() if complete]
    comparisons = [{"a": a, "b": b, "metric": f"final_average.{COMPARED_METRIC}", **compare_methods(groups[a][0], groups[b][0])}
                   for a, b in combinations(finished, 2)]
    return {
        "confidence": 0.95,
        "interval": "mean ± t_{0.975, n-1} · s / √n over seeds (Student t)",
        "methods": methods,
        "comparisons": comparisons,
        "claims": [claim.as_dict() for claim in evaluate_claims(results)],
    }
