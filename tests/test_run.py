"""`codecl run` end to end on the smoke preset, through the CLI (a real subprocess)."""
import json

import pytest

from codecl.evaluation.continual import forgetting
from codecl.results import validate_run_dir
from helpers import interrupt_run, run_codecl

METHODS = ["lora", "full_layer", "hybrid", "hybrid_shared"]


def codecl(*args, cache, check=True):
    return run_codecl(*args, cache=cache, check=check)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("codecl-cache")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("runs") / "smoke"
    proc = codecl("run", "--preset", "smoke", "--output-dir", str(out), "--quiet", cache=cache)
    return out, proc


def test_smoke_run_matches_spec(smoke_run):
    out, proc = smoke_run
    results = validate_run_dir(out, complete=True)
    assert results["tasks"] == ["python", "javascript"]
    assert [r["method"] for r in results["runs"]] == METHODS
    for run in results["runs"]:
        assert run["stages"] == ["base", "python", "javascript"]
        for metric in ("bleu", "exact_match", "syntax_pass"):
            assert len(run["scores"][metric]) == 3 and all(len(row) == 2 for row in run["scores"][metric])
        assert run["forgetting"] == pytest.approx(forgetting(run["scores"]["bleu"], ["python", "javascript"]), nan_ok=True)
        assert run["scores"]["bleu"][0] == results["runs"][0]["scores"]["bleu"][0]  # stage 0 shared
        assert all(run["train_seconds"][t] > 0 and run["peak_memory_bytes"][t] > 0 for t in ("python", "javascript"))
    stored = {r["method"]: r["stored_parameters"] for r in results["runs"]}
    trainable = {r["method"]: r["trainable_parameters"]["python"] for r in results["runs"]}
    assert stored["lora"] == 2 * trainable["lora"] and stored["hybrid"] == 2 * trainable["hybrid"]
    block = trainable["full_layer"]
    assert stored["hybrid_shared"] == 2 * trainable["lora"] + block
    for name in ["final_scores.png", "score_vs_params.png", *[f"score_matrix_{m}.png" for m in METHODS]]:
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Detailed performance matrix" in (out / "report.md").read_text()
    assert "report:" in proc.stdout and "hybrid_shared" in proc.stdout
    _check_loss_predictions_provenance(out, results)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "train_loss" for e in events) and events[-1]["event"] == "done"


def _check_loss_predictions_provenance(out, results):
    """SPEC additions: the loss matrix, the predictions files, provenance, memory above the stage's start."""
    from codecl.evaluation.metrics import score_all

    prov = results["provenance"]
    assert prov["packages"]["torch"].startswith("2.") and prov["device"].startswith("cpu")
    assert len(prov["data_fingerprint"]) == 64 and prov["model_revision"] is None and prov["data_revision"] is None
    for run in results["runs"]:
        loss = run["scores"]["loss"]
        assert len(loss) == 3 and all(len(row) == 2 and all(v > 0 for v in row) for row in loss)
        # a task's loss falls when its own modules have trained on it (the base never saw these pairs)
        assert loss[1][0] < loss[0][0] and loss[2][1] < loss[0][1], (run["method"], loss)
        assert "loss" in run["bwt"] and "loss" in run["final_average"]
        assert all(run["peak_memory_above_start_bytes"][t] > 0 for t in ("python", "javascript"))
        assert all(run["peak_memory_above_start_bytes"][t] < run["peak_memory_bytes"][t] for t in ("python", "javascript"))
        assert len(run["truncated_outputs"]) == 3
        for s, stage in enumerate(run["stages"]):
            folder = out / "predictions" / "base" if stage == "base" else out / run["method"] / f"seed-{run['seed']}" / "predictions" / stage
            for j, task in enumerate(results["tasks"]):
                lines = [json.loads(line) for line in (folder / f"{task}.jsonl").read_text().splitlines()]
                assert {"id", "source", "reference", "prediction", "exact_match", "syntax_ok", "bleu_sentence", "truncated"} <= set(lines[0])
                assert len({line["id"] for line in lines}) == len(lines)
                # the saved generations re-score to the matrix cells
                rescored = score_all([x["prediction"] for x in lines], [x["reference"] for x in lines], task)
                for metric in ("bleu", "exact_match", "syntax_pass"):
                    assert rescored[metric] == pytest.approx(run["scores"][metric][s][j], abs=1e-12)
                assert sum(x["truncated"] for x in lines) == run["truncated_outputs"][s][j]


def test_second_run_reuses_cached_base_and_refuses_existing_folder(smoke_run, cache):
    out, _ = smoke_run
    proc = codecl("run", "--preset", "smoke", "--output-dir", str(out), cache=cache, check=False)
    assert proc.returncode == 2 and "--resume" in proc.stderr
    assert len(list((cache / "models").iterdir())) == 1


def test_resume_keeps_completed_stages_and_finishes_the_rest(smoke_run, cache, tmp_path):
    import shutil

    out, _ = smoke_run
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    results = json.loads((partial / "results.json").read_text())
    hs = interrupt_run(results["runs"][3], 2)  # hybrid_shared interrupted after python
    results["runs"] = results["runs"][:2] + [hs]  # hybrid not started at all
    (partial / "results.json").write_text(json.dumps(results))
    shutil.rmtree(partial / "hybrid_shared" / "seed-42" / "javascript")
    shutil.rmtree(partial / "hybrid")
    shutil.rmtree(partial / "hybrid_shared" / "seed-42" / "predictions" / "javascript")
    # --threads changes no result, so a resume may set it (it is recorded, not compared)
    codecl("run", "--preset", "smoke", "--output-dir", str(partial), "--resume", "--quiet", "--threads", "1", cache=cache)
    resumed = validate_run_dir(partial, complete=True)
    starts = [json.loads(line) for line in (partial / "events.jsonl").read_text().splitlines() if '"start"' in line]
    assert starts[-1]["resume"] is True and starts[-1]["torch_threads"] == 1
    assert "num_threads: 1" in (partial / "config.yaml").read_text()
    original = json.loads((out / "results.json").read_text())
    by_method = {r["method"]: r for r in resumed["runs"]}
    for run in original["runs"]:
        assert by_method[run["method"]]["scores"] == run["scores"], run["method"]  # deterministic per stage
        assert by_method[run["method"]]["truncated_outputs"] == run["truncated_outputs"], run["method"]
    assert resumed["provenance"] == original["provenance"]  # recorded when the run started, kept on resume
    assert by_method["lora"]["train_seconds"] == original["runs"][0]["train_seconds"]  # kept, not redone


def test_resume_with_changed_config_is_refused(smoke_run, cache):
    out, _ = smoke_run
    proc = codecl("run", "--preset", "smoke", "--output-dir", str(out), "--resume", "--set", "train.lr=0.001", cache=cache, check=False)
    assert proc.returncode == 2
    assert "train" in proc.stderr and "0.0005" in proc.stderr and "0.001" in proc.stderr


def test_report_regenerates_from_results(smoke_run, cache):
    out, _ = smoke_run
    (out / "report.md").unlink()
    codecl("report", str(out), cache=cache)
    assert (out / "report.md").is_file()


def test_hybrid_shared_reuses_hybrids_first_stage_bit_for_bit(smoke_run, cache, tmp_path):
    """In a run with both, hybrid_shared's first stage is taken from hybrid's (same modules, seed and
    data); trained on its own it comes out the same, tensors and scores."""
    from safetensors.torch import load_file

    out, _ = smoke_run
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [(e["method"], e["task"], e["from"]) for e in events if e["event"] == "stage_reused"] == [("hybrid_shared", "python", "hybrid")]
    alone = tmp_path / "alone"
    codecl("run", "--preset", "smoke", "--methods", "hybrid_shared", "--output-dir", str(alone), "--quiet", cache=cache)
    reused = next(r for r in json.loads((out / "results.json").read_text())["runs"] if r["method"] == "hybrid_shared")
    trained = json.loads((alone / "results.json").read_text())["runs"][0]
    assert reused["reused_stages"] == {"python": "hybrid"} and "reused_stages" not in trained
    assert "| python (from hybrid) |" in (out / "report.md").read_text()
    assert reused["scores"] == trained["scores"]
    losses = lambda run: [(p["step"], p["loss"]) for p in run["loss_curve"]["javascript"]]  # noqa: E731
    assert losses(reused) == losses(trained)
    for name in ("adapter_model.safetensors", "block.safetensors"):
        a = load_file(str(out / "hybrid_shared" / "seed-42" / "python" / name))
        b = load_file(str(alone / "hybrid_shared" / "seed-42" / "python" / name))
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), name


def test_resume_of_a_run_saved_before_newer_settings_existed(smoke_run, cache, tmp_path):
    """Settings added in later versions are absent from an older run's config: they read as their defaults."""
    import shutil

    out, _ = smoke_run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    results = json.loads((old / "results.json").read_text())
    for key in ("base_dropout", "mixed_precision"):
        del results["config"]["train"][key]
    (old / "results.json").write_text(json.dumps(results))
    codecl("run", "--preset", "smoke", "--output-dir", str(old), "--resume", "--quiet", cache=cache)
    proc = codecl("run", "--preset", "smoke", "--output-dir", str(old), "--resume", "--set", "train.base_dropout=false", cache=cache, check=False)
    assert proc.returncode == 2 and "train.base_dropout: true -> false" in proc.stderr
