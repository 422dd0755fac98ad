"""The baselines end to end through the CLI (`codecl run`, a real subprocess): the done-when check of
issue 8 — the study's methods and every baseline over two seeds, report written — and a resume."""
import json
import shutil

import pytest

from codecl.results import validate_run_dir
from helpers import interrupt_run, run_codecl

METHODS = ["lora", "hybrid_shared", "sequential_ft", "joint", "replay", "ewc", "olora"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("codecl-cache")


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("runs") / "baselines"
    proc = run_codecl("run", "--preset", "smoke", "--methods", ",".join(METHODS), "--seeds", "1,2", "--output-dir", str(out),
                      "--quiet", cache=cache)
    return out, proc


@pytest.mark.slow
def test_every_baseline_runs_in_the_harness(baseline_run):
    out, proc = baseline_run
    results = validate_run_dir(out, complete=True)
    runs = {(r["method"], r["seed"]): r for r in results["runs"]}
    assert sorted(runs) == sorted((m, s) for m in METHODS for s in (1, 2))
    base = results["base_model"]["parameters"]
    for seed in (1, 2):
        joint = runs["joint", seed]
        assert joint["stages"] == ["base", "joint"] and len(joint["scores"]["bleu"]) == 2
        assert joint["forgetting"] == {} and joint["bwt"]["bleu"] is None and joint["final_average"]["bleu"] is not None
        lora = runs["lora", seed]["trainable_parameters"]["python"]
        assert runs["sequential_ft", seed]["stored_parameters"] == runs["sequential_ft", seed]["trainable_parameters"]["python"] == base
        assert runs["replay", seed]["stored_parameters"] == runs["ewc", seed]["stored_parameters"] == joint["stored_parameters"] == lora
        assert runs["olora", seed]["stored_parameters"] == 2 * lora
    assert (out / "sequential_ft" / "seed-1" / "javascript" / "model.safetensors").is_file()
    assert (out / "olora" / "seed-2" / "javascript" / "adapter_model.safetensors").is_file()
    report = (out / "report.md").read_text()
    assert all(f"### {m} (seed 2)" in report for m in METHODS)
    assert (out / "plots" / "score_matrix_joint.png").is_file() and "joint" in proc.stdout


@pytest.mark.slow
def test_baselines_resume_to_the_same_scores(baseline_run, cache, tmp_path):
    out, _ = baseline_run
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    results = json.loads((partial / "results.json").read_text())
    kept = []
    for run in results["runs"]:
        if run["seed"] == 2 and run["method"] in ("ewc", "replay"):  # interrupted after python: the Fisher is re-estimated
            run = interrupt_run(run, 2)
            shutil.rmtree(partial / run["method"] / "seed-2" / "javascript")
            shutil.rmtree(partial / run["method"] / "seed-2" / "predictions" / "javascript")
        if not (run["seed"] == 2 and run["method"] == "joint"):  # joint seed 2 not started
            kept.append(run)
    results["runs"] = kept
    shutil.rmtree(partial / "joint" / "seed-2")
    (partial / "results.json").write_text(json.dumps(results))
    run_codecl("run", "--preset", "smoke", "--methods", ",".join(METHODS), "--seeds", "1,2", "--output-dir", str(partial),
               "--resume", "--quiet", cache=cache)
    resumed = {(r["method"], r["seed"]): r for r in validate_run_dir(partial, complete=True)["runs"]}
    for run in json.loads((out / "results.json").read_text())["runs"]:
        again = resumed[run["method"], run["seed"]]
        assert again["scores"] == run["scores"], (run["method"], run["seed"])
        losses = lambda r: {t: [point["loss"] for point in curve] for t, curve in r["loss_curve"].items()}  # noqa: E731
        assert losses(again) == losses(run), (run["method"], run["seed"])  # ewc's includes the penalty: same Fisher
