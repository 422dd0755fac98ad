"""Task orders (`--orders`), order-aware summaries, the router (`eval.routing=router`)."""
import copy

import pytest
import torch

from codecl.errors import CheckpointError, ConfigError
from codecl.orders import run_folder_name, task_orders
from codecl.results import finalize_run, new_results, validate_results
from codecl.routing import Router


def test_orders_given_first_then_distinct_seeded_permutations():
    tasks = ["python", "javascript", "go", "ruby"]
    orders = task_orders(tasks, 5)
    assert orders[0] == tasks and len({tuple(o) for o in orders}) == 5
    assert all(sorted(o) == sorted(tasks) for o in orders)
    assert task_orders(tasks, 5) == orders  # the same on every call (resume, Ray trials)
    assert task_orders(["a", "b"], 2) == [["a", "b"], ["b", "a"]]
    with pytest.raises(ValueError, match="only 2 orders"):
        task_orders(["a", "b"], 3)
    assert task_orders(tasks, 1, explicit=[["go", "ruby", "python", "javascript"]]) == [["go", "ruby", "python", "javascript"]]
    assert run_folder_name(42) == "seed-42" and run_folder_name(42, 2) == "seed-42-order-2"


def test_order_config_validation():
    from codecl.config import load_config

    with pytest.raises(ConfigError, match="asks for 3 orders but 2 tasks have only 2"):
        load_config("smoke", overrides=["orders=3"])
    with pytest.raises(ConfigError, match=r"task_orders\[0\] must be a permutation"):
        load_config("smoke", overrides=["task_orders=[[python, go]]"])
    with pytest.raises(ConfigError, match="launcher must be local or ray"):
        load_config("smoke", overrides=["launcher=slurm"])
    cfg = load_config("smoke", overrides=["task_orders=[[javascript, python]]"])
    assert cfg.task_orders == (("javascript", "python"),)


def _run(order, R):
    run = {"method": "lora", "seed": 1, "order": order, "order_index": 0 if order == ["a", "b", "c"] else 1,
           "stages": ["base", *order], "scores": {"bleu": R, "exact_match": R, "syntax_pass": R},
           "trainable_parameters": {t: 1 for t in order}, "train_seconds": {t: 1.0 for t in order},
           "train_samples_per_second": {t: 1.0 for t in order}, "peak_memory_bytes": {t: 1 for t in order}, "stored_parameters": 3}
    return run


def test_summaries_read_a_permuted_run_in_its_training_order():
    # columns are always the top-level tasks a, b, c; this run trained c, then a, then b
    R = [[0.1, 0.1, 0.1],
         [0.1, 0.1, 0.5],   # after c: c jumps
         [0.6, 0.1, 0.4],   # after a: a jumps, c drops 0.1
         [0.3, 0.7, 0.2]]   # after b
    run = finalize_run(_run(["c", "a", "b"], R), ["a", "b", "c"])
    assert run["forgetting"] == pytest.approx({"c": (0.5 - 0.2) / 0.5, "a": (0.6 - 0.3) / 0.6})
    assert run["bwt"]["bleu"] == pytest.approx(((0.2 - 0.5) + (0.3 - 0.6)) / 2)
    assert run["fwt"]["bleu"] == pytest.approx(((0.1 - 0.1) + (0.1 - 0.1)) / 2)  # R[i-1][task i] - R[0][task i] in training order
    # read in column order instead (the bug this guards against) the numbers would differ
    wrong = finalize_run(copy.deepcopy(_run(["c", "a", "b"], R)) | {"order": ["a", "b", "c"]}, ["a", "b", "c"])
    assert wrong["bwt"]["bleu"] != pytest.approx(run["bwt"]["bleu"])
    results = new_results({"tasks": ["a", "b", "c"], "methods": ["lora"], "seeds": [1], "orders": 2}, {"name": "x"}, ["a", "b", "c"])
    results["runs"] = [finalize_run(_run(["a", "b", "c"], R), ["a", "b", "c"]), run]
    validate_results(results, complete=True)
    bad = copy.deepcopy(results)
    bad["runs"][1]["stages"] = ["base", "a", "c", "b"]
    with pytest.raises(CheckpointError, match=r"runs\[1\].stages must be base followed by the tasks in order \['c', 'a', 'b'\]"):
        validate_results(bad)
    missing = copy.deepcopy(results)
    missing["runs"].pop()
    with pytest.raises(CheckpointError, match="lacks the configured run.*lora seed 1 order 1"):
        validate_results(missing, complete=True)


def test_router_learns_prototypes_and_routes_separable_tasks():
    torch.manual_seed(0)
    a = torch.randn(200, 16) + torch.tensor([3.0] + [0.0] * 15)
    b = torch.randn(200, 16) - torch.tensor([3.0] + [0.0] * 15)
    router = Router()
    router.learn("a", a[:100])
    router.learn("b", b[:100])
    routes = router.route(torch.cat([a[100:], b[100:]]))
    accuracy = (sum(r == "a" for r in routes[:100]) + sum(r == "b" for r in routes[100:])) / 200
    assert accuracy >= 0.95
    assert router.route(b[100:110], among=["a"]) == ["a"] * 10  # one learned task: every input goes to it


def test_router_distance_weighs_dimensions_by_their_spread():
    # dimension 0 separates the tasks but varies little; dimension 1 varies a lot inside both: a plain
    # nearest-mean rule is swayed by dimension 1, the standardised distance is not
    torch.manual_seed(1)
    n = 400
    a = torch.stack([torch.full((n,), 0.5) + 0.1 * torch.randn(n), 20 * torch.randn(n)], 1)
    b = torch.stack([torch.full((n,), -0.5) + 0.1 * torch.randn(n), 20 * torch.randn(n)], 1)
    router = Router()
    router.learn("a", a[: n // 2])
    router.learn("b", b[: n // 2])
    test = torch.cat([a[n // 2:], b[n // 2:]])
    truth = ["a"] * (n // 2) + ["b"] * (n // 2)
    ours = sum(r == t for r, t in zip(router.route(test), truth)) / n
    means = torch.stack([a[: n // 2].mean(0), b[: n // 2].mean(0)])
    plain = sum(("a", "b")[int(i)] == t for i, t in zip(torch.cdist(test, means).argmin(1), truth)) / n
    assert ours >= 0.97 and plain < 0.9


def test_router_save_and_load_roundtrip(tmp_path):
    router = Router()
    router.learn("x", torch.randn(10, 4))
    router.learn("y", torch.randn(10, 4) + 5)
    router.save(tmp_path / "router.safetensors", {"base_fingerprint": "f"})
    loaded, extra = Router.load(tmp_path / "router.safetensors")
    probe = torch.randn(20, 4) + 2.5
    assert loaded.tasks == ["x", "y"] and extra == {"base_fingerprint": "f"}
    assert loaded.route(probe) == router.route(probe)
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a codecl router file"):
        Router.load(tmp_path / "bad.safetensors")
