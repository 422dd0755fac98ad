"""What `codecl run` warns about before and while it works: bf16 asked for on a device where bf16 is
slow, and generations cut at the token budget (in-process runs of the smoke preset, one method)."""
import json

import pytest

from codecl import hardware
from codecl.config import load_config
from codecl.experiment import run_experiment


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # one cache for the module: the smoke base is built once
        mp.setenv("CODECL_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)  # in-process runs set Accelerate's process-wide state; later tests set their own


def _run(tmp_path, *overrides):
    cfg = load_config("smoke", overrides=["methods=[lora]", "tasks=[python]", *overrides], output_dir=str(tmp_path / "run"))
    results = run_experiment(cfg, progress=False)
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    return results, events


def test_bf16_on_a_slow_device_warns_naming_the_key_and_the_fix(tmp_path, cache, monkeypatch, capsys):
    monkeypatch.setattr(hardware, "bf16_is_slow", lambda device="cpu": True)
    monkeypatch.setattr(hardware, "bf16_matmul_ratio", lambda device="cpu": 140.0)
    _, events = _run(tmp_path, "model.frozen_dtype=bfloat16", "eval.max_new_tokens=2")
    err = capsys.readouterr().err
    assert "model.frozen_dtype=bfloat16" in err and "--set model.frozen_dtype=float32" in err
    assert any(e["event"] == "warning" and "frozen_dtype" in e["message"] for e in events)


def test_cut_generations_are_counted_and_warned(tmp_path, cache, capsys):
    results, events = _run(tmp_path, "eval.max_new_tokens=2")  # two tokens: (almost) every output is cut
    err = capsys.readouterr().err
    run = results["runs"][0]
    n_eval = len((tmp_path / "run" / "predictions" / "base" / "python.jsonl").read_text().splitlines())
    assert run["truncated_outputs"][1][0] >= n_eval - 1 > 0
    assert "eval.max_new_tokens=2" in err and "raise eval.max_new_tokens" in err
    assert any(e["event"] == "generation_truncated" for e in events)
