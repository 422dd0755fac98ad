"""The metric registry (`codecl.registry.METRICS`): `eval.metrics` selects what `score_with_examples`
computes; the built-ins give exactly what the fixed metrics gave; CodeBLEU and runtime/plugin metrics
flow into the scores and the predictions lines."""
from __future__ import annotations

import json
from statistics import fmean

import pytest

from codecl.config import EvalConfig, load_config
from codecl.errors import ConfigError
from codecl.evaluation.metrics import (corpus_bleu, exact_match, exact_matches, score_all, score_with_examples, sentence_bleus,
                                       smoothed_sentence_bleu, syntax_oks, syntax_pass)
from codecl.registry import ALWAYS_COMPUTED, DEFAULT_METRICS, METRICS, MetricSpec, check_metrics_installed

HYPS = ["def add(a, b):\n    return a + b", "def f(x):\n    return x *", "x = 1", "def g():\n    return [i for i in range(3)]"]
REFS = ["def add(a, b):\n    return a + b", "def f(x):\n    return x * 2", "y = 2", "def g():\n    return list(range(3))"]


def test_default_metrics_are_exactly_the_old_four():
    assert EvalConfig().metrics == DEFAULT_METRICS == ("bleu", "exact_match", "syntax_pass", "bleu_sentence_smoothed")
    scores, examples = score_with_examples(HYPS, REFS, "python")
    assert scores == {"bleu": corpus_bleu(HYPS, REFS), "exact_match": exact_match(HYPS, REFS), "syntax_pass": syntax_pass(HYPS, "python"),
                      "bleu_sentence_smoothed": smoothed_sentence_bleu(HYPS, REFS)}
    assert list(scores) == list(DEFAULT_METRICS)  # the order results.json has always had
    assert examples == [{"exact_match": m, "syntax_ok": o, "bleu_sentence": b}
                        for m, o, b in zip(exact_matches(HYPS, REFS), syntax_oks(HYPS, "python"), sentence_bleus(HYPS, REFS))]
    assert [list(e) for e in examples] == [["exact_match", "syntax_ok", "bleu_sentence"]] * len(HYPS)  # SPEC's field order
    assert score_all(HYPS, REFS, "python") == scores


def test_text_outputs_have_no_syntax():
    scores, examples = score_with_examples(HYPS, REFS, None)
    assert scores["syntax_pass"] is None and all(e["syntax_ok"] is None for e in examples)
    assert scores["bleu"] == corpus_bleu(HYPS, REFS)


def test_unknown_metric_is_a_config_error_naming_the_available_ones():
    with pytest.raises(ConfigError, match=r"eval\.metrics has unknown metric\(s\) \['nope'\]; available: bleu, exact_match, "
                                          r"syntax_pass, bleu_sentence_smoothed, codebleu"):
        load_config("smoke", overrides=["eval.metrics=[bleu,nope]"])


def test_broken_plugin_metric_is_named(monkeypatch):
    monkeypatch.setattr(METRICS, "_plugins_loaded", True)
    monkeypatch.setattr(METRICS, "_broken", {"token_f1": "entry point token_f1 = x:metric (group codecl.metrics, x) failed to load: "
                                                         "ImportError: needs libfoo"})
    with pytest.raises(ConfigError, match="token_f1: entry point .* needs libfoo"):
        EvalConfig(metrics=("bleu", "token_f1"))


def test_metrics_the_run_computes_itself_are_not_selectable():
    with pytest.raises(ConfigError, match=r"cannot select \['loss', 'pass_at_1'\]"):
        EvalConfig(metrics=("bleu", "loss", "pass_at_1"))
    with pytest.raises(ConfigError, match="must not repeat a metric"):
        EvalConfig(metrics=("bleu", "bleu"))
    assert METRICS.get("pass_at_1").needs_execution and not METRICS.get("loss").higher_is_better


def test_required_metrics_are_always_computed():
    """bleu (headline, forgetting), exact_match and syntax_pass (results.json requires them) are added in front."""
    assert ALWAYS_COMPUTED == ("bleu", "exact_match", "syntax_pass")
    assert EvalConfig(metrics=("bleu_sentence_smoothed",)).metrics == ("bleu", "exact_match", "syntax_pass", "bleu_sentence_smoothed")
    cfg = load_config("smoke", overrides=["eval.metrics=[codebleu]"])
    assert cfg.eval.metrics == ("bleu", "exact_match", "syntax_pass", "codebleu")
    assert load_config("smoke", overrides=["eval.metrics=[bleu,exact_match,syntax_pass]"]).eval.metrics == ALWAYS_COMPUTED


def test_codebleu_needs_its_package(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "codebleu" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install --no-deps codebleu==0\.7\.0 \(--no-deps: codebleu 0\.7\.0 pins tree-sitter<0\.23"):
        check_metrics_installed(("bleu", "codebleu"))
    check_metrics_installed(DEFAULT_METRICS)  # nothing to install


def test_codebleu_matches_the_package():
    codebleu = pytest.importorskip("codebleu")
    whole = [r for r in REFS if len(r.split()) >= 4]  # codebleu's smoothed n-gram match is < 1 on a 3-token program
    same, _ = score_with_examples(whole, whole, "python", ("bleu", "codebleu"))
    assert same["codebleu"] == pytest.approx(1.0)
    scores, examples = score_with_examples(HYPS, REFS, "python", (*DEFAULT_METRICS, "codebleu"))
    assert scores["codebleu"] == pytest.approx(codebleu.calc_codebleu(REFS, HYPS, lang="python")["codebleu"], abs=1e-12)
    assert 0 < scores["codebleu"] < 1
    # references first: the swapped call scores these pairs differently, so a swap would fail above
    assert abs(codebleu.calc_codebleu(HYPS, REFS, lang="python")["codebleu"] - scores["codebleu"]) > 1e-3
    assert list(examples[0]) == ["exact_match", "syntax_ok", "bleu_sentence"]  # corpus-level only: no per-example field
    js_hyp, js_ref = ["function f(a) { return a + 1; }"], ["function f(a) { return a + 2; }"]
    js, _ = score_with_examples(js_hyp, js_ref, "javascript", ("codebleu",))
    assert js["codebleu"] == pytest.approx(codebleu.calc_codebleu(js_ref, js_hyp, lang="javascript")["codebleu"], abs=1e-12)


def test_codebleu_is_null_for_text_outputs():
    scores, _ = score_with_examples(HYPS, REFS, None, (*DEFAULT_METRICS, "codebleu"))  # null before the package is needed
    assert scores["codebleu"] is None and scores["syntax_pass"] is None


def _length_ratio(hyps, refs, language):
    values = [min(len(h), len(r)) / max(len(h), len(r), 1) for h, r in zip(hyps, refs)]
    return fmean(values), values


def test_a_metric_registered_at_runtime_flows_into_scores_and_examples():
    METRICS.register(MetricSpec("length_ratio", _length_ratio, "shorter / longer length of output and reference"))
    METRICS.register(MetricSpec("bleu_again", "codecl.evaluation.metrics:bleu_metric", "bleu by a module:function reference",
                                needs_code=True, per_example_field="bleu_again_field"))
    try:
        cfg = EvalConfig(metrics=(*DEFAULT_METRICS, "length_ratio", "bleu_again"))
        scores, examples = score_with_examples(HYPS, REFS, "python", cfg.metrics)
        expected, per_example = _length_ratio(HYPS, REFS, "python")
        assert scores["length_ratio"] == expected and scores["bleu_again"] == scores["bleu"]
        assert [e["length_ratio"] for e in examples] == per_example  # its own field: the metric's name
        assert [e["bleu_again_field"] for e in examples] == [None] * len(HYPS)  # a field declared, no per-example values
        text, _ = score_with_examples(HYPS, REFS, None, cfg.metrics)
        assert text["bleu_again"] is None and text["length_ratio"] == expected  # needs_code: null on text outputs
        json.dumps(examples)  # predictions lines stay JSON
    finally:
        METRICS.unregister("length_ratio")
        METRICS.unregister("bleu_again")
    assert "length_ratio" not in METRICS


def test_a_metric_outside_0_1_fails_at_once():
    METRICS.register(MetricSpec("broken_scale", lambda h, r, lang: 2.5, "not on the 0–1 scale"))
    try:
        with pytest.raises(ValueError, match="broken_scale.*0–1 scale"):
            score_with_examples(HYPS, REFS, "python", ("bleu", "broken_scale"))
    finally:
        METRICS.unregister("broken_scale")


@pytest.mark.slow
def test_codebleu_through_a_run_and_the_report(tmp_path):
    pytest.importorskip("codebleu")
    from codecl.results import validate_run_dir
    from helpers import run_codecl

    out = tmp_path / "run"
    run_codecl("run", "--preset", "smoke", "--methods", "lora", "--tasks", "python,javascript", "--output-dir", str(out), "--quiet",
               "--set", "eval.metrics=[bleu,exact_match,syntax_pass,bleu_sentence_smoothed,codebleu]", cache=tmp_path / "cache")
    results = validate_run_dir(out, complete=True)
    (run,) = results["runs"]
    assert list(run["scores"])[:5] == ["bleu", "exact_match", "syntax_pass", "bleu_sentence_smoothed", "codebleu"]
    matrix = run["scores"]["codebleu"]
    assert len(matrix) == 3 and all(v is not None and 0 <= v <= 1 for row in matrix for v in row)
    assert "codebleu" in run["final_average"] and "codebleu" in run["bwt"]
    lines = [json.loads(x) for x in (out / "predictions" / "base" / "python.jsonl").read_text().splitlines()]
    assert {"exact_match", "syntax_ok", "bleu_sentence"} <= set(lines[0])
    (out / "report.md").unlink()
    run_codecl("report", str(out), cache=tmp_path / "cache")
    report = (out / "report.md").read_text()
    assert "**codebleu** (higher is better)" in report and "codebleu (avg)" in report and "CodeBLEU (Ren et al. 2020)" in report
