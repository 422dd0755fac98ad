"""End to end on a few real problems (default suite) and on an in-memory benchmark."""
import json

import pytest

from codecl.errors import ConfigError, DataError
from codecl.execution import Problem, Sandbox, SandboxConfig, evaluate_samples, load_benchmark, run_problem_samples

WRONG = {"python": "    return None\n", "javascript": "  return null\n}\n"}


def write_samples(path, rows):
    path.write_text("".join(json.dumps({"task_id": t, "completion": c}) + "\n" for t, c in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("fixture", ["humaneval_file", "humaneval_x_python_file", "humaneval_x_js_file"])
def test_three_real_problems_canonical_pass_and_wrong_fails(request, tmp_path, fixture):
    if fixture == "humaneval_x_js_file":
        request.getfixturevalue("node")
    benchmark = request.getfixturevalue(fixture)
    problems = list(load_benchmark(benchmark).values())[:3]
    rows = [(p.task_id, p.canonical_solution) for p in problems] + [(p.task_id, WRONG[p.language]) for p in problems]
    summary = evaluate_samples(benchmark, write_samples(tmp_path / "s.jsonl", rows), [1, 2], timeout_s=10.0)
    assert summary["problems"] == 3
    assert summary["results"] == {"passed": 3, "failed": 3, "timed_out": 0}
    assert summary["pass_at_k"] == {"1": pytest.approx(0.5), "2": pytest.approx(1.0)}
    assert set(summary["isolation"]) >= {"network", "user", "filesystem"}


def test_pass_at_k_counts_and_timeouts(tmp_path, humaneval_file):
    problem = load_benchmark(humaneval_file)["HumanEval/0"]
    rows = [(problem.task_id, problem.canonical_solution), (problem.task_id, WRONG["python"]),
            (problem.task_id, "    while True:\n        pass\n")]
    summary = evaluate_samples(humaneval_file, write_samples(tmp_path / "s.jsonl", rows), [1, 2, 5], timeout_s=1.0)
    assert summary["results"] == {"passed": 1, "failed": 1, "timed_out": 1}
    assert summary["pass_at_k"] == {"1": pytest.approx(1 / 3), "2": pytest.approx(2 / 3)}
    assert summary["pass_at_k_skipped"] == [5]


ADD = Problem("Toy/0", "python", "def add(a, b):\n", "def check(candidate):\n    assert candidate(2, 3) == 5\n", "add")


def test_run_problem_samples_api():
    seen = []
    results = run_problem_samples({"Toy/0": ADD}, {"Toy/0": ["    return a + b\n", "    return a - b\n", "    raise SystemExit(0)\n"]},
                                  timeout_s=5.0, workers=2, on_result=seen.append)
    assert [r.status for r in results["Toy/0"]] == ["passed", "failed", "failed"]  # exit 0 alone is no pass
    assert results["Toy/0"][0].reason == "" and "solution process ended" in results["Toy/0"][2].reason
    assert [r.sample_index for r in results["Toy/0"]] == [0, 1, 2] and len(seen) == 3
    assert "AssertionError" in results["Toy/0"][1].stderr_tail


def test_run_problem_samples_rejects_unknown_tasks_and_conflicting_timeouts():
    with pytest.raises(DataError, match="unknown task_id 'Toy/9'"):
        run_problem_samples({"Toy/0": ADD}, {"Toy/9": ["x"]})
    with pytest.raises(ConfigError, match="differs from the sandbox"):
        run_problem_samples({"Toy/0": ADD}, {"Toy/0": ["x"]}, timeout_s=3.0, sandbox=Sandbox(SandboxConfig(timeout_s=5.0)))


def test_evaluate_samples_rejects_bad_k(tmp_path):
    with pytest.raises(ConfigError, match="--k values must be >= 1"):
        evaluate_samples(tmp_path / "b.jsonl", tmp_path / "s.jsonl", [0])
