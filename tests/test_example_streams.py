"""The shipped example streams of user-defined tasks (`domain-python`, `mixed-stream`) run end to end,
on a smoke-sized model (the presets' own sizes are quickstart's)."""
import json

import pytest

from codecl.config import load_config
from codecl.results import validate_run_dir
from helpers import run_codecl

SMALL = ["--set", "model.embedded={d_model: 32, num_layers: 2, num_heads: 2, d_ff: 64, vocab_size: 600, pretrain_steps: 10, "
         "pretrain_batch_size: 16, max_pretrain_examples: 400}",
         "--set", "data.max_train_examples=16", "--set", "data.max_valid_examples=6", "--set", "eval.max_new_tokens=16",
         "--set", "train.epochs=1", "--methods", "lora,hybrid", "--quiet"]


def test_presets_define_their_tasks():
    domain = load_config("domain-python")
    assert domain.tasks == ("mail", "concurrency", "devtools") and all(domain.data.tasks[t].embedded for t in domain.tasks)
    mixed = load_config("mixed-stream")
    assert mixed.data.tasks["js-doc"].direction == "code_to_nl" and mixed.orders == 2 and mixed.eval.routing == "router"


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["domain-python", "mixed-stream"])
def test_example_stream_runs(preset, tmp_path):
    out = tmp_path / preset
    run_codecl("run", "--preset", preset, "--output-dir", str(out), *SMALL, cache=tmp_path / "cache")
    results = validate_run_dir(out, complete=True)
    config = json.loads((out / "results.json").read_text())["config"]
    assert results["tasks"] == config["tasks"]
    for run in results["runs"]:
        assert len(run["routing_accuracy"]) == len(results["tasks"]) + 1
    if preset == "mixed-stream":
        doc = results["tasks"].index("js-doc")
        assert {r["order_index"] for r in results["runs"]} == {0, 1}
        assert all(row[doc] is None for r in results["runs"] for row in r["scores"]["syntax_pass"])
        assert "## Task orders" in (out / "report.md").read_text()
