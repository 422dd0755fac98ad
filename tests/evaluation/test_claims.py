"""The study's claims and the summary over seeds, on hand-built results documents."""
import math

import pytest

from codecl.evaluation.claims import ABSENT, FAILS, HOLDS, ONE_SEED, SPANS, UNDEFINED, ZERO, evaluate_claims
from codecl.evaluation.summary import summarize
from codecl.results import finalize_run, new_results, upsert_run, validate_results

TASKS = ["python", "javascript"]
BASE = [0.01, 0.02]


def make_run(method, seed, after_first, after_second=None, tasks=TASKS):
    """BLEU rows after the first and (if given) the second stage; other metrics constant."""
    rows = [BASE[: len(tasks)], after_first] + ([after_second] if after_second is not None else [])
    trained = tasks[: len(rows) - 1]
    const = [[0.5] * len(tasks)] * len(rows)
    run = {"method": method, "seed": seed, "stages": ["base", *trained], "scores": {"bleu": rows, "exact_match": const, "syntax_pass": const},
           "trainable_parameters": {t: 10 for t in trained}, "stored_parameters": 10 * len(trained),
           "train_seconds": {t: 1.0 for t in trained}, "train_samples_per_second": {t: 1.0 for t in trained},
           "peak_memory_bytes": {t: 0 for t in trained}}
    return finalize_run(run)


def results_of(*runs, tasks=TASKS):
    results = new_results({}, {"name": "tiny"}, tasks)
    for run in runs:
        upsert_run(results, run)
    return validate_results(results)


def finals(method, values, seeds=(1, 2, 3)):
    """Runs whose last stage scores `v` on both tasks (final average = v)."""
    return [make_run(method, s, [0.2, 0.05], [v, v]) for s, v in zip(seeds, values)]


def verdicts(results):
    return {c.id: c.verdict for c in evaluate_claims(results)}


def test_hybrid_best_holds_when_every_paired_difference_is_positive():
    results = results_of(*finals("hybrid", [0.30, 0.31, 0.32]), *finals("lora", [0.28] * 3), *finals("full_layer", [0.20] * 3))
    claim = evaluate_claims(results)[0]
    assert claim.id == "hybrid_best_final_average" and claim.verdict == HOLDS
    # hybrid − lora: differences 0.02, 0.03, 0.04 → +0.0300 ± 4.303·0.01/√3, p = 1 − t/√(2+t²) with t = 3√3
    assert "hybrid − lora: +0.0300 ± 0.0248 [+0.0052, +0.0548] (3 seeds), p = 0.0351" in claim.estimate
    assert claim.numbers["differences"]["full_layer"]["mean_difference"] == pytest.approx(0.11)
    assert "hybrid_shared" not in claim.numbers["differences"]


def test_hybrid_best_fails_or_is_inconclusive():
    hybrid = finals("hybrid", [0.30, 0.31, 0.32])
    assert verdicts(results_of(*hybrid, *finals("lora", [0.40, 0.40, 0.40])))["hybrid_best_final_average"] == FAILS
    assert verdicts(results_of(*hybrid, *finals("lora", [0.29, 0.33, 0.30])))["hybrid_best_final_average"] == SPANS
    one_seed = results_of(*finals("hybrid", [0.30], seeds=[1]), *finals("lora", [0.20], seeds=[1]))
    assert verdicts(one_seed)["hybrid_best_final_average"] == ONE_SEED
    # methods the study did not compare (a baseline such as joint training) are left out of the claim
    joint = finals("joint", [0.9, 0.9, 0.9])
    assert verdicts(results_of(*hybrid, *finals("lora", [0.28] * 3), *joint))["hybrid_best_final_average"] == HOLDS
    assert verdicts(results_of(*finals("lora", [0.28] * 3), *joint))["hybrid_best_final_average"] == ABSENT
    assert verdicts(results_of(*hybrid))["hybrid_best_final_average"] == ABSENT  # nothing to beat


def test_unfinished_runs_do_not_count():
    interrupted = make_run("lora", 1, [0.9, 0.1])  # trained python only
    results = results_of(*finals("hybrid", [0.30, 0.31, 0.32]), interrupted)
    claim = evaluate_claims(results)[0]
    assert claim.verdict == ABSENT and "no finished run of lora" in claim.estimate


def test_full_layer_negative_forgetting():
    improves = [make_run("full_layer", s, [0.20, 0.05], [0.20 + d, 0.2]) for s, d in ((1, 0.010), (2, 0.012), (3, 0.014))]
    claim = next(c for c in evaluate_claims(results_of(*improves)) if c.id == "full_layer_negative_forgetting")
    assert claim.verdict == HOLDS
    assert claim.numbers["mean"] == pytest.approx(-0.06)  # forgetting (0.20 − 0.212) / 0.20
    assert claim.estimate.startswith("full_layer -6.00% ± ")
    forgets = [make_run("full_layer", s, [0.20, 0.05], [0.18 + d, 0.2]) for s, d in ((1, 0.0), (2, 0.001), (3, 0.002))]
    assert verdicts(results_of(*forgets))["full_layer_negative_forgetting"] == FAILS
    assert verdicts(results_of(*improves[:1]))["full_layer_negative_forgetting"] == ONE_SEED
    untouched = [make_run("full_layer", s, [0.20 + d, 0.05], [0.20 + d, 0.2]) for s, d in ((1, 0.0), (2, 0.01))]
    assert verdicts(results_of(*untouched))["full_layer_negative_forgetting"] == ZERO  # per-task layers: 0 by construction
    single_task = [make_run("full_layer", s, [0.2], tasks=["python"]) for s in (1, 2)]
    assert verdicts(results_of(*single_task, tasks=["python"]))["full_layer_negative_forgetting"] == UNDEFINED


def test_hybrid_shared_transfer_claims():
    # FWT = R[1][js] − R[0][js] = js-after-python − 0.02; BWT = R[2][py] − R[1][py]
    runs = [make_run("hybrid_shared", s, [0.20, 0.02 + f], [0.20 + b, 0.2]) for s, f, b in ((1, 0.03, -0.01), (2, 0.04, 0.0), (3, 0.05, 0.01))]
    found = verdicts(results_of(*runs))
    assert found["hybrid_shared_forward_transfer"] == HOLDS and found["hybrid_shared_backward_transfer"] == SPANS
    claim = next(c for c in evaluate_claims(results_of(*runs)) if c.id == "hybrid_shared_forward_transfer")
    assert claim.numbers["mean"] == pytest.approx(0.04) and claim.numbers["n"] == 3
    assert verdicts(results_of(*finals("lora", [0.3] * 3)))["hybrid_shared_forward_transfer"] == ABSENT


def test_summary_intervals_comparisons_and_claims():
    results = results_of(*finals("hybrid", [0.30, 0.31, 0.32]), *finals("lora", [0.28] * 3), *finals("full_layer", [0.20] * 2, seeds=[1, 2]))
    summary = summarize(results)
    hybrid = summary["methods"]["hybrid"]
    assert hybrid["seeds"] == [1, 2, 3] and hybrid["complete"] and hybrid["stages"] == ["base", *TASKS]
    cell = hybrid["scores"]["bleu"][2][0]  # after javascript, on python: 0.30, 0.31, 0.32
    assert cell["mean"] == pytest.approx(0.31) and cell["half_width"] == pytest.approx(4.303 * 0.01 / math.sqrt(3)) and cell["n"] == 3
    assert hybrid["final_average"]["bleu"]["mean"] == pytest.approx(0.31)
    assert hybrid["forgetting"]["python"]["mean"] == pytest.approx(fmean_forgetting := (0.2 - 0.31) / 0.2)
    assert hybrid["mean_forgetting"]["mean"] == pytest.approx(fmean_forgetting)
    assert hybrid["bwt"]["bleu"]["mean"] == pytest.approx(0.11) and hybrid["fwt"]["bleu"]["half_width"] == pytest.approx(0.0)
    pairs = {(c["a"], c["b"]): c for c in summary["comparisons"]}
    assert list(pairs) == [("hybrid", "lora"), ("hybrid", "full_layer"), ("lora", "full_layer")]
    assert pairs[("hybrid", "lora")]["p_value"] == pytest.approx(0.0351, abs=1e-4) and pairs[("hybrid", "lora")]["significant"]
    assert pairs[("hybrid", "full_layer")]["seeds"] == [1, 2] and pairs[("hybrid", "full_layer")]["n"] == 2
    assert [c["id"] for c in summary["claims"]][0] == "hybrid_best_final_average" and summary["claims"][0]["verdict"] == HOLDS


def with_loss(run, final_loss, earlier=(3.0, 3.0)):
    """`run` with a loss matrix: the base 4.0 on every task, `earlier` after the first stage, `final_loss` at the end."""
    run["scores"]["loss"] = [[4.0, 4.0], list(earlier), [final_loss, final_loss]]
    return finalize_run(run)


def test_claims_on_loss_read_lower_as_better():
    # hybrid has the lower loss on every seed while its BLEU is no better: the loss claim holds, the BLEU one fails.
    hybrid = [with_loss(r, v) for r, v in zip(finals("hybrid", [0.20, 0.20, 0.20]), [2.0, 2.1, 2.2])]
    lora = [with_loss(r, v) for r, v in zip(finals("lora", [0.30, 0.31, 0.32]), [2.5, 2.5, 2.6])]
    found = verdicts(results_of(*hybrid, *lora))
    assert found["hybrid_best_final_average"] == FAILS and found["hybrid_best_final_average_loss"] == HOLDS
    worse = [with_loss(r, v) for r, v in zip(finals("lora", [0.1] * 3), [1.5, 1.6, 1.5])]
    assert verdicts(results_of(*hybrid, *worse))["hybrid_best_final_average_loss"] == FAILS
    # hybrid_shared: the second task's loss fell before it trained (earlier[1] 3.0 < base 4.0): FWT on loss < 0 holds;
    # python's loss rose after javascript's stage (3.0 → 3.3, 3.4, 3.5): BWT on loss > 0, the backward claim fails.
    shared = [with_loss(r, v) for r, v in zip(finals("hybrid_shared", [0.2] * 3), [3.3, 3.4, 3.5])]
    found = verdicts(results_of(*shared))
    assert found["hybrid_shared_forward_transfer_loss"] == HOLDS and found["hybrid_shared_backward_transfer_loss"] == FAILS
    # runs made before the loss existed: undefined, never a verdict
    assert verdicts(results_of(*finals("hybrid", [0.3] * 3), *finals("lora", [0.2] * 3)))["hybrid_best_final_average_loss"] == UNDEFINED
