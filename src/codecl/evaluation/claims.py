"""The design study's headline claims (quoted with the study's numbers in the table below; README,
"Seeds, intervals and the study's claims"), checked on a run's results.

Each claim becomes a one-sided question about a 95% Student-t interval over seeds:
`holds` when the whole interval lies on the claimed side of 0, `does not hold` when it lies
wholly on the other side, and `inconclusive` otherwise, saying why: the interval spans 0, a single
seed gives no interval (needs ≥ 2 seeds), the quantity is undefined (e.g. one task has no
forgetting), or the method is not in this run. Only finished runs count.

| id | the study's claim (its numbers) | tested here |
|---|---|---|
| hybrid_best_final_average | hybrid has the best final average BLEU (0.2497 vs lora 0.2320, hybrid_shared 0.2426*, full_layer 0.2097) | paired t-test of hybrid − X on final average BLEU over shared seeds, X each of lora, full_layer, hybrid_shared present |
| full_layer_negative_forgetting | full_layer forgets negatively: it improves on the earlier task (−6.20%, Python 0.1927 → 0.2046) | mean forgetting over earlier tasks < 0 |
| hybrid_shared_forward_transfer | the shared block transfers to the next task ("evidence of transfer") | FWT on BLEU > 0 |
| hybrid_shared_backward_transfer | the shared block, trained again, helps the earlier task (never measured: incomplete) | BWT on BLEU > 0 |

Each claim is also checked on the held-out `loss` (teacher-forced nats per token, lower is
better; ids ending in `_loss`): the one score that still separates methods when the base is too
weak to write working code (the embedded quickstart base), where BLEU differences sit inside seed
noise. On loss the claimed side flips: hybrid − X < 0; forgetting shows as BWT on loss < 0 for
full_layer's improvement of the earlier task; transfer as FWT / BWT on loss < 0.

Baselines other methods may add (joint training, replay, ...) are not in the study's comparison
and are left out of claim (a).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from codecl.evaluation.stats import Interval, interval95
from codecl.evaluation.groups import COMPARED_METRIC, compare_methods, mean_forgetting, method_groups

__all__ = ["Claim", "evaluate_claims", "verdict", "HOLDS", "FAILS", "SPANS", "ONE_SEED", "ABSENT", "UNDEFINED", "ZERO"]

HOLDS = "holds"
FAILS = "does not hold"
SPANS = "inconclusive (interval spans 0)"
ONE_SEED = "inconclusive (needs ≥ 2 seeds)"
ABSENT = "inconclusive (method not in this run)"
UNDEFINED = "inconclusive (undefined on this run)"
ZERO = "does not hold (exactly 0 on every seed)"

STUDY_METHODS = ("lora", "full_layer", "hybrid", "hybrid_shared")
"""The methods the study compared; claim (a) ranks hybrid among these only."""


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    """The study's claim, in words."""
    study: str
    """What the study measured (its numbers, as the module docstring's table quotes them), or that it did not."""
    test: str
    """The quantity tested here and the side of 0 that supports the claim."""
    verdict: str
    estimate: str
    """This run's numbers, as text: mean ± 95% half-width [low, high] (n seeds)."""
    numbers: dict = field(default_factory=dict)
    """The same numbers as JSON-ready dicts."""

    def as_dict(self) -> dict:
        return {"id": self.id, "statement": self.statement, "study": self.study, "test": self.test,
                "verdict": self.verdict, "estimate": self.estimate, "numbers": self.numbers}


def verdict(found: Interval, sign: int) -> str:
    """The verdict on "the quantity is > 0" (sign=+1) or "< 0" (sign=-1) from its 95% interval."""
    if found.mean is None:
        return UNDEFINED
    if found.half_width is None:
        return ONE_SEED
    low, high = (found.low, found.high) if sign > 0 else (-found.high, -found.low)
    if low == high == 0:  # e.g. per-task modules' forgetting: 0 by construction, not noise around 0
        return ZERO
    return HOLDS if low > 0 else FAILS if high < 0 else SPANS


def describe(found: Interval, fmt: Callable[[float], str] = lambda v: f"{v:.4f}") -> str:
    """`0.2497 ± 0.0100 [0.2397, 0.2597] (3 seeds)`, or the single value and `(1 seed)`."""
    if found.mean is None:
        return "n/a"
    if found.half_width is None:
        return f"{fmt(found.mean)} ({found.n} seed)"
    half = fmt(found.half_width).lstrip("+")  # a half-width has no sign
    return f"{fmt(found.mean)} ± {half} [{fmt(found.low)}, {fmt(found.high)}] ({found.n} seeds)"


def _signed(v: float) -> str:
    return f"{v:+.4f}"


def _pct(v: float) -> str:
    return f"{100 * v:+.2f}%"


def _finished(results: dict) -> dict[str, list[dict]]:
    return {m: runs for m, (runs, complete) in method_groups(results).items() if complete}


def _hybrid_best(finished: dict[str, list[dict]], metric: str = COMPARED_METRIC, sign: int = +1) -> tuple[str, str, dict]:
    """hybrid − X on final average `metric`, on the `sign` side of 0 (+1: higher is better)."""
    rivals = [m for m in STUDY_METHODS if m != "hybrid" and m in finished]
    if "hybrid" not in finished or not rivals:
        missing = "hybrid" if "hybrid" not in finished else "lora, full_layer or hybrid_shared"
        return ABSENT, f"no finished run of {missing}", {}
    if any(metric not in r["final_average"] for m in ["hybrid", *rivals] for r in finished[m]):
        return UNDEFINED, f"{metric} not recorded by every run (runs made before codecl scored it)", {}
    own = interval95(r["final_average"].get(metric) for r in finished["hybrid"])
    tests = {m: compare_methods(finished["hybrid"], finished[m], metric) for m in rivals}
    verdicts = [verdict(_as_interval(t), sign) for t in tests.values()]
    parts = [f"hybrid {describe(own)}"]
    for m, t in tests.items():
        p = "" if t["p_value"] is None else f", p = {t['p_value']:.3g}"
        parts.append(f"hybrid − {m}: {describe(_as_interval(t), _signed)}{p}")
    if FAILS in verdicts:
        found = FAILS
    elif ONE_SEED in verdicts or UNDEFINED in verdicts:
        found = ONE_SEED if ONE_SEED in verdicts else UNDEFINED
    elif SPANS in verdicts:
        found = SPANS
    else:
        found = HOLDS
    return found, "; ".join(parts), {"hybrid": own.as_dict(), "differences": tests}


def _as_interval(test: dict) -> Interval:
    return Interval(test["mean_difference"], test["half_width"], test["n"])


def _one_method(finished: dict[str, list[dict]], method: str, value: Callable[[dict], Optional[float]], sign: int,
                fmt: Callable[[float], str]) -> tuple[str, str, dict]:
    if method not in finished:
        return ABSENT, f"no finished run of {method}", {}
    found = interval95(value(r) for r in finished[method])
    if found.mean is None:
        return UNDEFINED, f"{method}: undefined (one task only, or a zero score right after training)", found.as_dict()
    return verdict(found, sign), f"{method} {describe(found, fmt)}", found.as_dict()


def evaluate_claims(results: dict) -> list[Claim]:
    """The verdict on each of the study's headline claims for this results document."""
    finished = _finished(results)
    checks = [
        ("hybrid_best_final_average", "hybrid (per-task LoRA + per-task block) has the best final average BLEU",
         "0.2497 vs lora 0.2320, hybrid_shared 0.2426 (incomplete), full_layer 0.2097; one seed",
         "hybrid − X on final average BLEU > 0 for every other study method X (paired t-test over seeds)",
         _hybrid_best(finished)),
        ("full_layer_negative_forgetting", "full_layer shows negative forgetting: it improves on the earlier task",
         "forgetting −6.20% (python 0.1927 → 0.2046); one seed",
         "mean forgetting over earlier tasks < 0",
         _one_method(finished, "full_layer", mean_forgetting, -1, _pct)),
        ("hybrid_shared_forward_transfer", "hybrid_shared's shared block transfers forward to the next task",
         "\"evidence of transfer\" (javascript first-epoch loss 0.0826 vs 0.0939); no FWT measured",
         "FWT on BLEU > 0",
         _one_method(finished, "hybrid_shared", lambda r: r["fwt"].get(COMPARED_METRIC), +1, _signed)),
        ("hybrid_shared_backward_transfer", "hybrid_shared's shared block, trained again, helps the earlier task",
         "not measured (the final python evaluation is missing)",
         "BWT on BLEU > 0",
         _one_method(finished, "hybrid_shared", lambda r: r["bwt"].get(COMPARED_METRIC), +1, _signed)),
    ]
    recorded = lambda key: lambda r: r[key].get("loss")  # noqa: E731
    checks += [
        ("hybrid_best_final_average_loss", "hybrid has the best (lowest) final average held-out loss",
         "not measured (the study reports BLEU only)",
         "hybrid − X on final average loss < 0 for every other study method X (paired t-test over seeds)",
         _hybrid_best(finished, "loss", -1)),
        ("full_layer_negative_forgetting_loss", "full_layer improves on the earlier task (its loss falls later)",
         "measured on BLEU only", "BWT on loss < 0",
         _one_method(finished, "full_layer", recorded("bwt"), -1, _signed)),
        ("hybrid_shared_forward_transfer_loss", "hybrid_shared's shared block transfers forward (next task's loss falls before it trains)",
         "first-epoch training loss only", "FWT on loss < 0",
         _one_method(finished, "hybrid_shared", recorded("fwt"), -1, _signed)),
        ("hybrid_shared_backward_transfer_loss", "hybrid_shared's shared block, trained again, lowers the earlier task's loss",
         "not measured", "BWT on loss < 0",
         _one_method(finished, "hybrid_shared", recorded("bwt"), -1, _signed)),
    ]
    return [Claim(cid, statement, study, test, found, estimate, numbers)
            for cid, statement, study, test, (found, estimate, numbers) in checks]
