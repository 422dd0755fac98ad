"""`eval.retention`: general benchmarks scored by pass@1 on the base and after every stage (TRACE's retention)."""
import json
from pathlib import Path

import pytest

from codecl.config import load_config
from codecl.errors import ConfigError
from helpers import SHARED_DATA

HUMANEVAL = SHARED_DATA / "exec" / "humaneval" / "HumanEval.jsonl.gz"
HUMANEVAL_JS = SHARED_DATA / "exec" / "humaneval-x" / "humaneval_js.jsonl.gz"


def test_retention_config_is_validated():
    with pytest.raises(ConfigError, match=r"eval.retention items must be NAME=SOURCE"):
        load_config("smoke", overrides=["eval.retention=[HumanEval.jsonl]"])
    with pytest.raises(ConfigError, match=r"eval.retention names 'h' twice"):
        load_config("smoke", overrides=["eval.retention=[h=a.jsonl, h=b.jsonl]"])


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not HUMANEVAL.is_file():
        pytest.skip(f"{HUMANEVAL} is absent (../shared/data holds the public benchmark files)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CODECL_CACHE", str(tmp_path_factory.mktemp("codecl-cache")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield tmp_path_factory.mktemp("runs")
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)


def _run(out: Path, *overrides):
    from codecl.experiment import run_experiment

    cfg = load_config("smoke", overrides=[f"eval.retention=[humaneval={HUMANEVAL}]", "eval.exec_max_problems=3", "eval.max_new_tokens=16",
                                          *overrides], output_dir=str(out), methods=["lora"])
    return run_experiment(cfg, progress=False)


@pytest.mark.slow
def test_without_the_opt_in_retention_is_null_and_skipped(env):
    results = _run(env / "off")
    (run,) = results["runs"]
    assert run["retention"] == {"humaneval": [None, None, None]}
    events = [json.loads(line) for line in (env / "off" / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "exec_skipped" and e["metric"] == "retention" for e in events)
    assert not any(e["event"] == "exec" for e in events)


@pytest.mark.sandbox
def test_retention_is_scored_on_the_base_and_after_every_stage(env):
    out = env / "on"
    results = _run(out, "eval.allow_code_execution=true")
    (run,) = results["runs"]
    values = run["retention"]["humaneval"]
    assert len(values) == 3 and all(isinstance(v, float) and 0 <= v <= 1 for v in values)
    # python is trained first and lora keeps its adapter: the python benchmark gets the same modules after stage 2
    assert values[2] == values[1]
    stage0 = json.loads((out / "stage0.json").read_text())
    assert stage0["retention"]["humaneval"] == values[:1]
    executed = [e for e in (json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()) if e["event"] == "exec"]
    assert [e["task"] for e in executed] == ["humaneval"] * 3 and all(e["problems"] == 3 for e in executed)
    assert "## General-ability retention" in (out / "report.md").read_text()
