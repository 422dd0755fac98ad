"""results.json: build, recompute summaries, validate with precise messages, save/load atomically."""
import copy
import json

import pytest

from codecl.errors import CheckpointError
from codecl.results import find_run, finalize_run, load_results, new_results, save_results, upsert_run, validate_results

TASKS = ["python", "javascript"]
BASE_ROW = {"bleu": [0.0038, 0.0196], "exact_match": [0.0, 0.0], "syntax_pass": [0.5, 0.4]}


def make_run(method="lora", seed=42, bleu_rows=([0.2166, 0.05], [0.2150, 0.2489]), **extra):
    stages = ["base", *TASKS[: len(bleu_rows)]]
    trained = stages[1:]
    run = {
        "method": method,
        "seed": seed,
        "stages": stages,
        "scores": {
            "bleu": [BASE_ROW["bleu"], *map(list, bleu_rows)],
            "exact_match": [BASE_ROW["exact_match"]] + [[0.01, 0.02]] * len(bleu_rows),
            "syntax_pass": [BASE_ROW["syntax_pass"]] + [[0.9, 0.8]] * len(bleu_rows),
        },
        "trainable_parameters": {t: 589824 for t in trained},
        "stored_parameters": 589824 * len(trained),
        "train_seconds": {t: 720.0 for t in trained},
        "train_samples_per_second": {t: 22.2 for t in trained},
        "peak_memory_bytes": {t: 1900000000 for t in trained},
        **extra,
    }
    return finalize_run(run)


def make_results(*runs):
    results = new_results({"methods": ["lora"], "seeds": [42], "tasks": TASKS}, {"name": "tiny", "fingerprint": "abc", "parameters": 1000}, TASKS)
    for run in runs:
        upsert_run(results, run)
    return results


def test_new_results_has_the_schema_header():
    results = make_results()
    assert results["schema_version"] == 1 and results["codecl_version"] == "0.1.0"
    assert results["tasks"] == TASKS and results["runs"] == []


def test_finalize_recomputes_summaries_from_scores():
    run = make_run()
    assert run["forgetting"] == {"python": pytest.approx(0.0016 / 0.2166)}
    assert run["bwt"]["bleu"] == pytest.approx(-0.0016)
    assert run["fwt"]["bleu"] == pytest.approx(0.05 - 0.0196)
    assert run["final_average"] == {"bleu": pytest.approx(0.23195), "exact_match": pytest.approx(0.015), "syntax_pass": pytest.approx(0.85)}
    assert set(run["bwt"]) == set(run["fwt"]) == {"bleu", "exact_match", "syntax_pass"}


def test_upsert_replaces_the_same_method_and_seed():
    results = make_results(make_run(), make_run(seed=43))
    upsert_run(results, make_run(bleu_rows=([0.3, 0.1],)))
    assert [(r["method"], r["seed"], len(r["stages"])) for r in results["runs"]] == [("lora", 42, 2), ("lora", 43, 3)]
    assert find_run(results, "lora", 43)["seed"] == 43 and find_run(results, "hybrid", 42) is None


def test_optional_metrics_with_nulls_and_extras_are_accepted(tmp_path):
    run = make_run(loss_curve={"python": [{"step": 10, "loss": 2.0}], "javascript": [1.5, 1.0]})
    run["scores"]["pass_at_1"] = [[0.0, None], [0.12, None], [0.1, None]]
    run["scores"]["bleu_sentence_smoothed"] = [[0.01, 0.02], [0.3, 0.1], [0.29, 0.31]]
    finalize_run(run)
    assert run["final_average"]["pass_at_1"] == pytest.approx(0.1) and run["fwt"]["pass_at_1"] is None
    path = save_results(tmp_path / "results.json", make_results(run))
    assert load_results(path)["runs"][0]["scores"]["pass_at_1"][1] == [0.12, None]


def test_incomplete_run_validates_and_complete_mode_rejects_it():
    results = make_results(make_run(bleu_rows=([0.2166, 0.05],)))
    assert results["runs"][0]["forgetting"] == {} and results["runs"][0]["bwt"]["bleu"] is None
    validate_results(results)
    with pytest.raises(CheckpointError, match=r"runs\[0\].stages has 2 stages but a finished run has 3"):
        validate_results(results, complete=True)


def test_complete_mode_requires_every_configured_run():
    results = make_results(make_run())
    results["config"]["methods"] = ["lora", "hybrid"]
    with pytest.raises(CheckpointError, match="lacks the configured run.*hybrid seed 42"):
        validate_results(results, complete=True)


def _broken(mutate):
    results = make_results(make_run(), make_run(seed=43))
    mutate(results)
    return results


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r["runs"][1]["scores"]["bleu"].pop(), r"runs\[1\]\.scores\.bleu has 2 rows but stages has 3"),
        (lambda r: r["runs"][0]["scores"]["exact_match"][1].pop(), r"runs\[0\]\.scores\.exact_match\[1\] must be a list of 2 scores"),
        (lambda r: r["runs"][0]["scores"]["bleu"][2].__setitem__(0, 21.5), r"runs\[0\]\.scores\.bleu\[2\]\[0\] must be a number in \[0, 1\]"),
        (lambda r: r["runs"][0]["scores"]["bleu"][2].__setitem__(0, None), r"runs\[0\]\.scores\.bleu\[2\]\[0\] must be a number"),
        (lambda r: r["runs"][0]["scores"].pop("syntax_pass"), r"runs\[0\]\.scores lacks required metric\(s\) \['syntax_pass'\]"),
        (lambda r: r["runs"][0]["forgetting"].__setitem__("python", 0.5), r"runs\[0\]\.forgetting\.python is 0.5 but the scores give 0.0073"),
        (lambda r: r["runs"][0]["bwt"].__setitem__("bleu", 0.0), r"runs\[0\]\.bwt\.bleu is 0.0 but the scores give"),
        (lambda r: r["runs"][0].pop("final_average"), r"runs\[0\]\.final_average is missing"),
        (lambda r: r["runs"][0].__setitem__("stages", ["base", "javascript", "python"]), r"runs\[0\]\.stages must be base followed by the tasks in order"),
        (lambda r: r["runs"][0]["train_seconds"].pop("javascript"), r"runs\[0\]\.train_seconds has no entry for trained task\(s\) \['javascript'\]"),
        (lambda r: r["runs"][0].__setitem__("stored_parameters", -1), r"runs\[0\]\.stored_parameters must be a non-negative integer"),
        (lambda r: r["runs"].append(copy.deepcopy(r["runs"][0])), r"runs\[2\] repeats method 'lora' seed 42"),
        (lambda r: r.__setitem__("schema_version", 2), r"schema_version is 2; this codecl reads schema_version 1"),
        (lambda r: r.pop("base_model"), r"base_model is missing"),
        (lambda r: r.__setitem__("summary", [1]), r"summary must be an object"),
    ],
)
def test_validation_names_the_bad_field(mutate, message):
    with pytest.raises(CheckpointError, match=r"results\.json: " + message):
        validate_results(_broken(mutate))


def test_save_is_atomic_and_load_names_the_file(tmp_path):
    path = tmp_path / "results.json"
    save_results(path, make_results(make_run()))
    assert json.loads(path.read_text())["runs"][0]["method"] == "lora"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left behind
    broken = _broken(lambda r: r["runs"][1]["scores"]["bleu"].pop())
    path.write_text(json.dumps(broken))
    with pytest.raises(CheckpointError, match=rf"{path}: runs\[1\]\.scores\.bleu has 2 rows but stages has 3"):
        load_results(path)


def test_load_rejects_missing_and_corrupted_files(tmp_path):
    with pytest.raises(CheckpointError, match="no results file"):
        load_results(tmp_path / "results.json")
    (tmp_path / "results.json").write_text('{"schema_version": 1, "runs": [')
    with pytest.raises(CheckpointError, match="results.json: not valid JSON"):
        load_results(tmp_path / "results.json")
    (tmp_path / "results.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CheckpointError, match="not UTF-8"):
        load_results(tmp_path / "results.json")


def test_validate_run_dir_names_the_missing_path(tmp_path):
    from codecl.report import write_report
    from codecl.results import validate_run_dir

    save_results(tmp_path / "results.json", make_results(make_run()))
    (tmp_path / "config.yaml").write_text("tasks: [python, javascript]\n")
    write_report(tmp_path)
    with pytest.raises(CheckpointError, match=r"lora/seed-42/python: missing from the run folder"):
        validate_run_dir(tmp_path)
    for task in TASKS:
        (tmp_path / "lora" / "seed-42" / task).mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"predictions/base/python.jsonl: missing from the run folder"):
        validate_run_dir(tmp_path)
    for stage in ["base", *TASKS]:
        folder = tmp_path / "predictions" / "base" if stage == "base" else tmp_path / "lora" / "seed-42" / "predictions" / stage
        folder.mkdir(parents=True)
        for task in TASKS:
            if (stage, task) != ("javascript", "python"):
                (folder / f"{task}.jsonl").write_text("{}\n")
    with pytest.raises(CheckpointError, match=r"lora/seed-42/predictions/javascript/python.jsonl: missing"):
        validate_run_dir(tmp_path)
    (tmp_path / "lora" / "seed-42" / "predictions" / "javascript" / "python.jsonl").write_text("{}\n")
    assert validate_run_dir(tmp_path)["runs"][0]["method"] == "lora"
    (tmp_path / "plots" / "score_matrix_lora.png").unlink()
    with pytest.raises(CheckpointError, match="score_matrix_lora.png: missing"):
        validate_run_dir(tmp_path)


def test_save_adds_the_summary_over_seeds_recomputed_from_runs(tmp_path):
    results = make_results(make_run(), make_run(seed=43, bleu_rows=([0.2, 0.05], [0.19, 0.25])))
    results["summary"] = {"stale": True}  # e.g. read back from an earlier save, then runs changed
    path = save_results(tmp_path / "results.json", results)
    assert results["summary"] == {"stale": True}  # the caller's document is not modified
    summary = load_results(path)["summary"]
    lora = summary["methods"]["lora"]
    finals = [(0.2150 + 0.2489) / 2, (0.19 + 0.25) / 2]
    assert lora["seeds"] == [42, 43] and lora["final_average"]["bleu"]["mean"] == pytest.approx(sum(finals) / 2)
    assert lora["final_average"]["bleu"]["half_width"] == pytest.approx(12.706 * abs(finals[0] - finals[1]) / 2)
    assert lora["scores"]["bleu"][0][0] == {"mean": 0.0038, "half_width": 0.0, "low": 0.0038, "high": 0.0038, "n": 2}
    assert summary["comparisons"] == [] and {c["id"] for c in summary["claims"]} >= {"hybrid_best_final_average"}
