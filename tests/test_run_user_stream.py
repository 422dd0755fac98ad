"""A stream of the user's own tasks through the CLI: 3 JSONL tasks (one code → description), 2 task orders,
2 seeds, routed evaluation; and routing that goes wrong changes what is scored (in-process)."""
import json
import random

import pytest

from codecl.evaluation.loss import mean_loss  # noqa: F401  (the loss the cells hold: nats per token)
from codecl.results import run_path, validate_run_dir
from helpers import run_codecl

pytestmark = pytest.mark.slow  # CLI runs of a 3-task stream over 2 orders and 2 seeds, served: minutes; CI runs -m slow

WORDS = {
    "gen": ["compute", "sum", "numbers", "list", "total", "add", "values"],
    "web": ["render", "widget", "button", "click", "page", "element", "style"],
}


def _write_tasks(root):
    rng = random.Random(0)
    sizes = {"train": 16, "valid": 4, "test": 6}
    for split, n in sizes.items():
        rows = {"gen": [], "web": [], "doc": []}
        for i in range(n):
            k = rng.randint(0, 99)
            words = " ".join(rng.choice(WORDS["gen"]) for _ in range(6))
            rows["gen"].append({"input": f"{words} {k}", "target": f"def f_{split}_{i}(xs):\n    return sum(xs) + {k}"})
            words = " ".join(rng.choice(WORDS["web"]) for _ in range(6))
            rows["web"].append({"input": f"{words} {k}", "target": f"function w_{split}_{i}(e) {{\n  e.style.width = {k};\n}}",
                                "language": "javascript"})
            rows["doc"].append({"input": f"def g_{split}_{i}(x):\n    return x * {k}", "target": f"multiply x by {k} ({split} {i})"})
        for name, lines in rows.items():
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    _write_tasks(root)
    cache = tmp_path_factory.mktemp("cache")
    out = tmp_path_factory.mktemp("runs") / "stream"
    proc = run_codecl("run", "--preset", "smoke", "--tasks", f"gen={root / 'gen'},doc={root / 'doc'},web={root / 'web'}",
                      "--set", "data.tasks.doc.direction=code_to_nl", "--orders", "2", "--seeds", "1,2", "--methods", "lora",
                      "--set", "eval.routing=router", "--output-dir", str(out), "--quiet", cache=cache)
    return out, proc


def test_user_stream_runs_every_method_seed_and_order(stream):
    out, proc = stream
    results = validate_run_dir(out, complete=True)
    assert results["tasks"] == ["gen", "doc", "web"]
    keys = sorted((r["seed"], r["order_index"], tuple(r["order"])) for r in results["runs"])
    assert [k[:2] for k in keys] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    orders = {k[1]: list(k[2]) for k in keys}
    assert orders[0] == ["gen", "doc", "web"] and orders[1] != orders[0] and sorted(orders[1]) == sorted(orders[0])
    for run in results["runs"]:
        assert run["stages"] == ["base", *run["order"]]
        doc = results["tasks"].index("doc")
        assert all(row[doc] is None for row in run["scores"]["syntax_pass"])  # text outputs: no syntax to check
        assert all(row[j] is not None for row in run["scores"]["syntax_pass"] for j in (0, 2))
        assert (run_path(out, run) / run["order"][0] / "adapter_config.json").is_file()
    config = json.loads((out / "results.json").read_text())["config"]
    assert config["data"]["tasks"]["web"]["path"].endswith("web") and config["orders"] == 2


def test_score_columns_follow_the_top_level_tasks_in_every_order(stream):
    """Each cell equals the mean loss re-computed from that stage's predictions file of that task."""
    out, _ = stream
    results = validate_run_dir(out, complete=True)
    for run in results["runs"]:
        for s, stage in enumerate(run["stages"][1:], start=1):
            for j, task in enumerate(results["tasks"]):
                lines = [json.loads(x) for x in (run_path(out, run) / "predictions" / stage / f"{task}.jsonl").read_text().splitlines()]
                exact = sum(x["exact_match"] for x in lines) / len(lines)
                assert run["scores"]["exact_match"][s][j] == pytest.approx(exact, abs=1e-12)
                assert all(x["routed_to"] in run["order"][:s] for x in lines)


def test_routing_accuracy_and_routed_scores(stream):
    out, _ = stream
    results = validate_run_dir(out, complete=True)
    for run in results["runs"]:
        accuracy = run["routing_accuracy"]
        assert len(accuracy) == 4 and accuracy[0] is None and accuracy[1] == 1.0  # one trained task: nothing to confuse
        assert min(accuracy[1:]) >= 0.95  # three clearly separable inputs (two vocabularies and code)
        assert set(run["routed_scores"]) >= {"bleu", "exact_match", "syntax_pass", "loss"}
        assert len(run["routed_scores"]["loss"]) == 4
    assert (out / "router.safetensors").is_file()


def test_report_aggregates_over_seeds_and_orders(stream):
    out, proc = stream
    report = (out / "report.md").read_text()
    assert "## Task orders" in report and "order 1: " in report and "Spread BLEU" in report
    assert "1, 2 × 2 orders" in report  # the across-seeds table names both seeds and both orders
    assert "## Task-free inference (routing)" in report
    summary = json.loads((out / "results.json").read_text())["summary"]["methods"]["lora"]
    assert summary["runs"] == 4 and summary["final_average"]["loss"]["n"] == 4
    assert [o["order_index"] for o in summary["orders"]] == [0, 1] and summary["order_spread"]["loss"] is not None
    assert "order" in proc.stdout.splitlines()[0] or any(" order" in line for line in proc.stdout.splitlines()[:3])


@pytest.fixture(scope="module")
def inproc_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CODECL_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)


def test_wrong_routes_are_regenerated_with_the_routed_modules(tmp_path, inproc_cache, monkeypatch):
    """A router that sends every input to the first task: inputs of the other task are generated and scored
    again with the first task's modules (per-task methods), and a method without task-specific modules (ewc)
    scores the same routed or not."""
    from codecl import routing
    from codecl.config import load_config
    from codecl.experiment import run_experiment

    monkeypatch.setattr(routing.Router, "route", lambda self, features, among=None: [among[0]] * len(features))
    cfg = load_config("smoke", overrides=["methods=[lora,ewc]", "eval.routing=router", "eval.max_new_tokens=8"], output_dir=str(tmp_path / "run"))
    results = run_experiment(cfg, progress=False)
    runs = {r["method"]: r for r in results["runs"]}
    lora, ewc = runs["lora"], runs["ewc"]
    assert lora["routing_accuracy"] == [None, 1.0, 0.5]  # python inputs right, javascript inputs wrong (8 + 8 examples)
    assert lora["routed_scores"]["loss"][1] == lora["scores"]["loss"][1]  # stage 1: javascript is untrained, python's modules either way
    assert lora["routed_scores"]["loss"][2][0] == lora["scores"]["loss"][2][0]  # python routed to python
    assert lora["routed_scores"]["loss"][2][1] != lora["scores"]["loss"][2][1]  # javascript routed to python's adapter
    assert ewc["routed_scores"]["loss"] == ewc["scores"]["loss"]
    lines = [json.loads(x) for x in (tmp_path / "run" / "lora" / "seed-42" / "predictions" / "javascript" / "javascript.jsonl").read_text().splitlines()]
    assert all(x["routed_to"] == "python" and x["routed_loss"] is not None for x in lines)
    # the routed cell is the mean over the routed examples' own losses, token-weighted: close to their plain mean,
    # and equal to stage 1's javascript cell, where javascript was scored with python's adapter too
    assert lora["routed_scores"]["loss"][2][1] == pytest.approx(lora["scores"]["loss"][1][1], abs=1e-9)


def test_served_requests_without_a_language_are_routed(stream, tmp_path):
    """`codecl serve` on the stream's run: a request naming no task goes where the router sends it, and gets
    exactly what naming that task gives; the OpenAI model id METHOD routes each prompt of a list."""
    pytest.importorskip("fastapi")
    from test_serving import Server

    out, _ = stream
    cache = tmp_path / "cache"
    server = Server(out, cache, tmp_path / "serve.log", "--method", "lora", "--seed", "1")
    try:
        prompts = {"gen": "compute sum total values list add 7", "web": "render button click style page widget 7",
                   "doc": "def g(x):\n    return x * 7"}
        for task, prompt in prompts.items():
            status, routed = server.request("/v1/generate", {"prompt": prompt})
            assert status == 200 and routed["routed"] is True and routed["language"] == task, routed
            status, named = server.request("/v1/generate", {"prompt": prompt, "language": task})
            assert status == 200 and named["code"] == routed["code"] and named["routed"] is False
        status, body = server.request("/v1/completions", {"model": "lora", "prompt": list(prompts.values()), "max_tokens": 4})
        assert status == 200 and [c["task"] for c in body["choices"]] == list(prompts) and body["model"] == "lora"
        status, models = server.get("/v1/models")
        assert any(m["id"] == "lora" and m.get("routed") for m in models["data"])
    finally:
        server.stop()
