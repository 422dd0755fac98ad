"""`track.report_to`: a smoke run logging to TensorBoard and a local MLflow store (SQLite), read back (loss
curve, every stage's score matrix, config, summary, the report as an artifact); config checks; a missing
tracker package is one line before anything is computed."""
import json
from pathlib import Path

import pytest

from codecl import tracking
from codecl.config import load_config
from codecl.errors import ConfigError
from codecl.experiment import run_experiment

TASKS = ["python", "javascript"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # one cache for the module: the smoke base is built once
        mp.setenv("CODECL_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)  # in-process runs set Accelerate's process-wide state; later tests set their own


def _cfg(out: Path, *overrides):
    return load_config("smoke", overrides=["methods=[lora]", f"tasks=[{','.join(TASKS)}]", "eval.max_new_tokens=4", "train.log_every=1",
                                           *overrides], output_dir=str(out))


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, cache):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    out = tmp_path_factory.mktemp("tracked") / "run"
    results = run_experiment(_cfg(out, "track.report_to=tensorboard,mlflow"), progress=False)
    return out, results


def _score_keys(results: dict) -> dict[str, list]:
    """`scores/lora/seed-42/<metric>/<task>` -> the run's column of that metric (one value per stage)."""
    run = results["runs"][0]
    return {f"scores/lora/seed-42/{metric}/{task}": [row[i] for row in R]
            for metric, R in run["scores"].items() for i, task in enumerate(TASKS)}


def test_tensorboard_holds_the_loss_curve_and_every_stage_score(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, results = tracked_run
    folder = out / "trackers" / "run"
    assert folder.is_dir(), list((out / "trackers").iterdir())
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    run = results["runs"][0]
    for task in TASKS:
        steps = [e.step for e in acc.Scalars(f"loss/lora/seed-42/{task}")]
        assert steps == [p["step"] for p in run["loss_curve"][task]] and steps
    for key, column in _score_keys(results).items():
        numbers = [(stage, v) for stage, v in enumerate(column) if v is not None]
        if not numbers:
            continue
        assert key in scalars, key
        got = {e.step: e.value for e in acc.Scalars(key)}
        assert sorted(got) == [s for s, _ in numbers]  # stage 0 (the base) and every trained stage
        assert all(got[s] == pytest.approx(v, rel=1e-5, abs=1e-6) for s, v in numbers)
    assert "summary/lora/final_average/bleu" in scalars
    texts = set(acc.Tags()["tensors"])  # add_text is stored as tensors
    assert "report/text_summary" in texts and "scores/lora/seed-42/table/text_summary" in texts


def test_mlflow_local_store_holds_params_metrics_and_the_report(tracked_run):
    from mlflow.tracking import MlflowClient

    out, results = tracked_run
    client = MlflowClient(tracking_uri=f"sqlite:///{(out / 'trackers' / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("codecl")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.0005" and json.loads(run.data.params["tasks"]) == TASKS
    assert run.data.params["track.report_to"] == json.dumps(["tensorboard", "mlflow"])
    curve = results["runs"][0]["loss_curve"]["python"]
    history = client.get_metric_history(run.info.run_id, "loss/lora/seed-42/python")
    assert [m.step for m in history] == [p["step"] for p in curve]
    assert [m.value for m in history] == pytest.approx([p["loss"] for p in curve])
    for key, column in _score_keys(results).items():
        numbers = {stage: v for stage, v in enumerate(column) if v is not None}
        if numbers:
            got = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
            assert got == pytest.approx(numbers), key
    final = results["runs"][0]["final_average"]["bleu"]
    assert run.data.metrics["summary/lora/final_average/bleu"] == pytest.approx(final)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "results.json"} <= artifacts
    report = client.download_artifacts(run.info.run_id, "report.md", str(out.parent / "dl"))
    assert Path(report).read_text() == (out / "report.md").read_text()


def test_no_trackers_by_default_write_no_tracker_files(tmp_path, cache):
    cfg = load_config("smoke", output_dir=str(tmp_path / "run"))
    assert cfg.track.report_to == () and cfg.track.project == "codecl" and cfg.track.run_name is None
    assert tracking.Trackers.from_config(cfg) is None
    assert not (tmp_path / "run" / "trackers").exists()


@pytest.mark.parametrize("override, message", [
    ("track.report_to=[tensorboard,comet]", "track.report_to has unknown tracker(s) ['comet']; available: tensorboard, mlflow, wandb, trackio"),
    ("track.report_to=[mlflow,mlflow]", "track.report_to must not repeat a tracker"),
    ("track.project=' '", "track.project must be a non-empty name"),
    ("track.run_name=''", "track.run_name must be a non-empty name or null"),
])
def test_bad_track_settings_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("smoke", overrides=[override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_missing_tracker_package_fails_before_anything_is_computed(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(tracking, "is_available", lambda name: name != "wandb")
    cfg = _cfg(tmp_path / "run", "track.report_to=[tensorboard,wandb]")
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg, progress=False)
    text = str(err.value)
    assert "track.report_to" in text and "pip install wandb" in text and "\n" not in text
    assert not (tmp_path / "run" / "events.jsonl").exists() and not (tmp_path / "run" / "results.json").exists()


def test_a_worker_logs_its_own_run_with_the_saved_stage0_as_step_0(tmp_path, cache):
    """What a Ray worker does (`run_cell_in_worker`): its own tracker run, the base row read from stage0.json."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    out.mkdir()
    (out / "stage0.json").write_text(json.dumps({"scores": {"bleu": [[1.0, 2.0]], "pass_at_1": [[None, None]]}}))
    trackers = tracking.Trackers.from_config(_cfg(out, "track.report_to=[tensorboard]"), "lora/seed-7-order-1")
    trackers({"event": "train_loss", "method": "lora", "seed": 7, "order": 1, "task": "python", "step": 3, "loss": 2.5})
    trackers({"event": "stage_reused", "method": "lora", "seed": 7, "order": 1, "task": "python", "stage_index": 1,
              "scores": {"bleu": [5.0, 0.5], "pass_at_1": [None, None]}})
    trackers({"event": "stage", "method": "lora", "seed": 7, "order": 1, "task": "javascript", "stage_index": 2,
              "scores": {"bleu": [4.0, float("nan")], "pass_at_1": [None, None]}})
    trackers.close()
    acc = EventAccumulator(str(out / "trackers" / "run" / "lora" / "seed-7-order-1"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss/lora/seed-7/order-1/python")] == [(3, 2.5)]
    assert [(e.step, e.value) for e in acc.Scalars("scores/lora/seed-7/order-1/bleu/python")] == [(0, 1.0), (1, 5.0), (2, 4.0)]
    assert [e.step for e in acc.Scalars("scores/lora/seed-7/order-1/bleu/javascript")] == [0, 1]  # NaN dropped
    assert not any("pass_at_1" in tag for tag in acc.Tags()["scalars"])  # null cells are not scalars
