"""`--launcher ray`: the grid's runs as Ray tasks write the run folder a local run writes."""
import json
import sys

import pytest

from codecl.errors import ConfigError
from codecl.results import validate_run_dir
from helpers import run_codecl


def test_missing_ray_is_one_line_before_any_work(tmp_path, monkeypatch):
    from codecl.config import load_config
    from codecl.experiment import run_experiment

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    cfg = load_config("smoke", overrides=["launcher=ray"], output_dir=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=r"launcher=ray needs the `ray` package.*pip install 'codecl\[ray\]'"):
        run_experiment(cfg, progress=False)
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.slow
def test_ray_grid_equals_the_local_grid(tmp_path_factory):
    pytest.importorskip("ray")
    cache = tmp_path_factory.mktemp("cache")
    runs = tmp_path_factory.mktemp("runs")
    common = ["--preset", "smoke", "--methods", "lora,full_layer", "--seeds", "42,43", "--quiet"]
    run_codecl("run", *common, "--output-dir", str(runs / "local"), cache=cache)
    proc = run_codecl("run", *common, "--launcher", "ray", "--trial-cpus", "1", "--output-dir", str(runs / "ray"), cache=cache)
    local, ray = validate_run_dir(runs / "local", complete=True), validate_run_dir(runs / "ray", complete=True)
    key = lambda r: (r["method"], r["seed"], r["order_index"])  # noqa: E731
    by_key = {key(r): r for r in local["runs"]}
    assert sorted(by_key) == sorted(key(r) for r in ray["runs"]) and len(by_key) == 4
    for run in ray["runs"]:
        # the same cells, bit for bit: every trial trains with the seeds and data of the local run
        assert run["scores"] == by_key[key(run)]["scores"] and run["order"] == by_key[key(run)]["order"]
    events = [json.loads(line) for line in (runs / "ray" / "events.jsonl").read_text().splitlines()]
    trials = [e for e in events if e["event"] == "ray_trial"]
    assert len(trials) == 4 and all(t["ok"] for t in trials)
    assert "report:" in proc.stdout


@pytest.mark.slow
def test_ray_retries_a_killed_worker_and_names_a_failing_trial(tmp_path):
    """One trial's worker is killed once: it is retried and the run completes. Another trial fails every time:
    the run exits non-zero naming it, and the other trials' runs are kept in results.json."""
    pytest.importorskip("ray")
    cache = tmp_path / "cache"
    common = ["--preset", "smoke", "--methods", "lora,full_layer", "--tasks", "python", "--quiet", "--launcher", "ray"]
    marker = tmp_path / "killed-once"
    import os
    import subprocess

    env_kill = {"CODECL_FAULT_INJECT": f"kill-once:lora:42:{marker}"}
    proc = subprocess.run([sys.executable, "-m", "codecl", "run", *common, "--output-dir", str(tmp_path / "kill")], capture_output=True,
                          text=True, env={**__import__("helpers").codecl_env(cache), **env_kill}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists() and "retrying (attempt 2 of 2)" in proc.stderr
    results = validate_run_dir(tmp_path / "kill", complete=True)
    assert sorted(r["method"] for r in results["runs"]) == ["full_layer", "lora"]
    events = [json.loads(line) for line in (tmp_path / "kill" / "events.jsonl").read_text().splitlines()]
    lora = [e for e in events if e["event"] == "ray_trial" and e["method"] == "lora"]
    assert [e["ok"] for e in lora] == [False, True] and "the worker died" in lora[0]["message"]

    env_fail = {"CODECL_FAULT_INJECT": "fail:lora:42"}
    proc = subprocess.run([sys.executable, "-m", "codecl", "run", *common, "--output-dir", str(tmp_path / "fail")], capture_output=True,
                          text=True, env={**__import__("helpers").codecl_env(cache), **env_fail}, timeout=900)
    assert proc.returncode == 1 and "1 ray trial(s) failed: lora seed 42" in proc.stderr and "injected failure" in proc.stderr
    kept = json.loads((tmp_path / "fail" / "results.json").read_text())
    assert [r["method"] for r in kept["runs"]] == ["full_layer"] and kept["runs"][0]["stages"] == ["base", "python"]
    assert os.path.isdir(tmp_path / "fail" / "full_layer" / "seed-42" / "python")
