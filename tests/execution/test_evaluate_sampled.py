"""`codecl evaluate`: sampled completions from a run's modules, executed, with unbiased pass@k and
human-eval's files. The default suite checks arguments, the estimator and the completion format;
the `sandbox` tests train a small smoke run (~40 s once) and execute samples."""
import json
import math

import pytest

from codecl.errors import ConfigError
from codecl.execution import Problem, SampleResult, load_benchmark, pass_at_k, run_problem_samples, summarize
from codecl.execution.inrun import canonical_function, prepare_problem
from codecl.execution.sampled import (RESULTS_FILE, SAMPLES_FILE, SUMMARY_FILE, check_sampling, human_eval_completion,
                                      problem_seed, result_line)
from helpers import SHARED_DATA, run_codecl, write_jsonl

SUBSET = ["HumanEval/0", "HumanEval/2", "HumanEval/10", "HumanEval/115"]


def _results(statuses: list[str], task_id: str = "T/0") -> list[SampleResult]:
    return [SampleResult(task_id, i, s, 0, 0.0, "") for i, s in enumerate(statuses)]


# ---------------------------------------------------------------- fast: arguments, estimator, format


def test_pass_at_k_is_the_unbiased_estimator_not_the_naive_fraction():
    results = {"T/0": _results(["passed", "failed", "passed", "failed", "timed_out"])}  # n=5, c=2
    summary = summarize(results, [1, 2])
    expected = 1 - math.comb(3, 2) / math.comb(5, 2)
    assert summary["pass_at_k"]["2"] == pytest.approx(0.7) == pytest.approx(expected)
    assert summary["pass_at_k"]["1"] == pytest.approx(0.4)
    # the naive "some sample among the first k passed" would give 1.0 here (sample 0 passed)
    assert summary["pass_at_k"]["2"] != 1.0 and pass_at_k(5, 2, 2) == pytest.approx(0.7)


@pytest.mark.parametrize("args, message", [
    (dict(n=4, temperature=0.8, top_p=0.95, ks=[1, 10]), "pass@10 needs at least 10 samples"),
    (dict(n=4, temperature=0.0, top_p=0.95, ks=[1]), "greedy decoding"),
    (dict(n=4, temperature=-1.0, top_p=0.95, ks=[1]), "--temperature"),
    (dict(n=4, temperature=0.8, top_p=0.0, ks=[1]), "--top-p"),
    (dict(n=0, temperature=0.8, top_p=0.95, ks=[1]), "--n-samples"),
    (dict(n=4, temperature=0.8, top_p=0.95, ks=[0]), "--k"),
    (dict(n=4, temperature=0.8, top_p=0.95, ks=[]), "--k"),
])
def test_bad_sampling_arguments_are_clear_errors(args, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check_sampling(**args)


def test_good_sampling_arguments():
    assert check_sampling(20, 0.8, 0.95, [10, 1, 1]) == [1, 10]
    assert check_sampling(1, 0.0, 1.0, [1]) == [1]


def test_sampling_seed_is_stable_and_per_problem():
    assert problem_seed(0, "HumanEval/0") == problem_seed(0, "HumanEval/0")
    assert len({problem_seed(0, "HumanEval/0"), problem_seed(1, "HumanEval/0"), problem_seed(0, "HumanEval/1")}) == 3


def test_result_lines_have_human_evals_format():
    sample = {"task_id": "T/0", "completion": "x"}
    assert result_line(sample, "passed", "") == {**sample, "result": "passed", "passed": True}
    assert result_line(sample, "timed_out", "time limit") == {**sample, "result": "timed out", "passed": False}
    assert result_line(sample, "failed", "exit status 1: AssertionError") == {**sample, "result": "failed: exit status 1: AssertionError",
                                                                              "passed": False}


def test_samples_the_sandbox_could_not_start_are_retried_once(monkeypatch):
    import codecl.execution.evaluate as evaluate
    import codecl.execution.sampled as sampled

    unstarted = SampleResult("T/0", 1, "failed", None, 0.0, "", "could not run: cannot start python3: Resource temporarily unavailable")
    executed = {"T/0": [SampleResult("T/0", 0, "failed", 1, 0.1, ""), unstarted, SampleResult("T/0", 2, "passed", 0, 0.1, "")]}
    calls = []

    def fake_run(problems, completions, **kwargs):
        calls.append(completions)
        return {t: [SampleResult(t, i, "passed", 0, 0.1, "") for i, _ in enumerate(cs)] for t, cs in completions.items()}

    monkeypatch.setattr(evaluate, "run_problem_samples", fake_run)
    monkeypatch.setattr(sampled.time, "sleep", lambda seconds: None)
    assert sampled._retry_unstarted(executed, {"T/0": ["a", "b", "c"]}, {}, None, lambda m: None) == 1
    assert calls == [{"T/0": ["b"]}]
    assert [(r.sample_index, r.status) for r in executed["T/0"]] == [(0, "failed"), (1, "passed"), (2, "passed")]


def test_python_completion_continues_the_prompt_and_binds_the_entry_point():
    import ast

    item = prepare_problem(Problem("X/0", "python", 'import math\n\ndef area(r):\n    """Area of a circle of radius r."""\n',
                                   "def check(c):\n    assert c(1) == math.pi\n", "area"))
    completion = human_eval_completion(item, "def circle(r):\n    return math.pi * r * r\n")
    program = item.problem.prompt + completion
    ast.parse(program)
    assert completion.startswith("def circle(r):") and completion.endswith("\narea = circle\n")
    namespace = {}
    exec(compile(program, "<test>", "exec"), namespace)  # noqa: S102 - our own constant code
    assert namespace["area"](1) == pytest.approx(math.pi)


def test_javascript_completion_closes_the_prompts_body():
    item = prepare_problem(Problem("JavaScript/0", "javascript", "/* Add two numbers together.\n  */\nconst add = (a, b) => {\n", ""))
    completion = human_eval_completion(item, "const sum = (x, y) => {\n  return x + y;\n}")
    assert completion.startswith("  return (() => {\nconst sum") and "return sum;\n})()(a, b);\n}\n" in completion
    item = prepare_problem(Problem("JavaScript/1", "javascript", "/* Add all.\n  */\nfunction total(first, ...rest) {\n", ""))
    assert "})()(first, ...rest);" in human_eval_completion(item, "function add(a) { return a; }")


def test_evaluate_refuses_without_allow_code_execution(tmp_path):
    proc = run_codecl("evaluate", str(tmp_path / "no-run"), "--benchmark", str(tmp_path / "b.jsonl"), "--n-samples", "4",
                      "--k", "1,2", cache=tmp_path / "cache", check=False)
    assert proc.returncode == 2 and "--allow-code-execution" in proc.stderr and "nothing was executed" in proc.stderr
    assert not (tmp_path / "no-run").exists()


def test_evaluate_k_above_n_is_exit_2(tmp_path):
    proc = run_codecl("evaluate", str(tmp_path), "--benchmark", str(tmp_path / "b.jsonl"), "--n-samples", "4", "--k", "1,10",
                      "--allow-code-execution", cache=tmp_path / "cache", check=False)
    assert proc.returncode == 2 and "pass@10 needs at least 10 samples" in proc.stderr


# ---------------------------------------------------------------- sandbox: a real run, real execution


@pytest.mark.sandbox
def test_javascript_completions_run_the_generated_function(humaneval_x_js_file, node):
    problems = load_benchmark(humaneval_x_js_file)
    items = [prepare_problem(problems[t]) for t in ["JavaScript/0", "JavaScript/10", "JavaScript/38"]]
    renamed = [canonical_function(i).replace(i.entry_point, "myFunction", 1) for i in items]
    completions = {i.problem.task_id: [human_eval_completion(i, code), human_eval_completion(i, "const f = () => 0;")]
                   for i, code in zip(items, renamed)}
    results = run_problem_samples(problems, completions, timeout_s=10.0)
    assert [[r.passed for r in rs] for rs in results.values()] == [[True, False]] * 3, results


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("codecl-cache")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("runs") / "smoke"
    run_codecl("run", "--preset", "smoke", "--methods", "lora", "--tasks", "python", "--output-dir", str(out), "--quiet",
               cache=cache)
    return out


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    source = SHARED_DATA / "exec" / "humaneval" / "HumanEval.jsonl.gz"
    if not source.is_file():
        pytest.skip(f"{source} is absent (../shared/data holds the public benchmark files)")
    problems = load_benchmark(source)
    path = tmp_path_factory.mktemp("bench") / "humaneval-subset.jsonl"
    write_jsonl(path, [{"task_id": t, "prompt": p.prompt, "test": p.test, "entry_point": p.entry_point,
                        "canonical_solution": p.canonical_solution} for t, p in problems.items() if t in SUBSET])
    return path


def _evaluate(run, bench, out, *extra, cache, check=True):
    return run_codecl("evaluate", str(run), "--benchmark", str(bench), "--n-samples", "4", "--k", "1,2", "--output", str(out),
                      "--workers", "2", "--allow-code-execution", *extra, cache=cache, check=check)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.sandbox
def test_evaluate_writes_human_eval_files_and_unbiased_pass_at_k(subset, smoke_run, cache, tmp_path):
    proc = _evaluate(smoke_run, subset, tmp_path / "a", cache=cache)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary == json.loads((tmp_path / "a" / SUMMARY_FILE).read_text())
    assert summary["problems"] == 4 and summary["n_samples"] == 4 and summary["temperature"] == 0.8 and summary["top_p"] == 0.95
    assert set(summary["pass_at_k"]) == {"1", "2"} and sum(summary["results"].values()) == 16
    assert summary["method"] == "lora" and summary["task"] == "python"
    samples = _lines(tmp_path / "a" / SAMPLES_FILE)
    assert [s["task_id"] for s in samples] == [t for t in SUBSET for _ in range(4)]
    assert all(set(s) == {"task_id", "completion"} and isinstance(s["completion"], str) for s in samples)
    results = _lines(tmp_path / "a" / RESULTS_FILE)
    assert [{"task_id": r["task_id"], "completion": r["completion"]} for r in results] == samples
    for r in results:
        assert set(r) == {"task_id", "completion", "result", "passed"} and r["passed"] == (r["result"] == "passed")
        assert r["result"] in ("passed", "timed out") or r["result"].startswith("failed: ")
    for k in (1, 2):
        counts = [sum(r["passed"] for r in results if r["task_id"] == t) for t in SUBSET]
        assert summary["pass_at_k"][str(k)] == pytest.approx(sum(pass_at_k(4, c, k) for c in counts) / 4)
    # evaluate-exec reads the same samples file and judges the same programs
    again = run_codecl("evaluate-exec", "--benchmark", str(subset), "--samples", str(tmp_path / "a" / SAMPLES_FILE), "--k", "1,2",
                       "--allow-code-execution", cache=cache)
    assert json.loads(again.stdout.strip().splitlines()[-1])["results"] == summary["results"]

    # same seed: same samples; another temperature or sampling seed: other samples
    _evaluate(smoke_run, subset, tmp_path / "b", cache=cache)
    assert (tmp_path / "b" / SAMPLES_FILE).read_text() == (tmp_path / "a" / SAMPLES_FILE).read_text()
    _evaluate(smoke_run, subset, tmp_path / "c", "--temperature", "0.3", "--max-problems", "2", cache=cache)
    other = _lines(tmp_path / "c" / SAMPLES_FILE)
    assert len(other) == 8 and other != samples[:8]


@pytest.mark.sandbox
def test_known_passing_samples_give_the_unbiased_pass_at_k(subset, smoke_run, cache, tmp_path, monkeypatch):
    """Samples 0 and 2 of every problem are the benchmark's own solution (under another name), 1 and 3 fail: c=2 of n=4."""
    import codecl.serve.evaluate as command

    monkeypatch.setenv("CODECL_CACHE", str(cache))
    problems = load_benchmark(subset)

    def fake_sample_codes(model, tokenizer, sources, keys, settings, device):
        codes = []
        for key in keys:
            item = prepare_problem(problems[key])
            good = canonical_function(item).replace(f"def {item.entry_point}(", "def generated(", 1)
            codes.append([good, "def generated(*args):\n    return None\n", good, "x = ("][: settings.n])
        return codes

    monkeypatch.setattr(command, "sample_codes", fake_sample_codes)
    summary = command.evaluate_run(smoke_run, subset, n=4, temperature=0.8, top_p=0.95, ks=[1, 2], output=tmp_path, workers=2)
    assert summary["results"] == {"passed": 8, "failed": 8, "timed_out": 0}
    assert summary["pass_at_k"] == {"1": pytest.approx(0.5), "2": pytest.approx(1 - 1 / 6)}
    results = _lines(tmp_path / RESULTS_FILE)
    assert [r["passed"] for r in results] == [True, False, True, False] * 4


@pytest.mark.sandbox
def test_sampling_is_seeded_and_greedy_matches_generate(subset, smoke_run, cache, monkeypatch):
    from codecl.execution.sampled import SamplingSettings, sample_codes
    from codecl.serve.generator import load

    monkeypatch.setenv("CODECL_CACHE", str(cache))
    generator = load(smoke_run, method="lora")
    generator.model.activate("python")
    sources, keys = ["Return the sum of a list.", "Sort the words."], ["A/0", "A/1"]

    def sample(**changes):
        settings = SamplingSettings(**{**dict(n=3, temperature=0.8, top_p=0.95, max_new_tokens=16, max_source_tokens=32,
                                              batch_size=2, seed=0), **changes})
        return sample_codes(generator.model, generator.tokenizer, sources, keys, settings, generator.device)

    first = sample()
    assert [len(c) for c in first] == [3, 3] and first == sample()
    assert sample(seed=1) != first and sample(temperature=0.3) != first
    greedy = sample(n=1, temperature=0.0, max_new_tokens=24)
    assert [c[0] for c in greedy] == generator.generate_batch(sources, "python", 24)


@pytest.mark.sandbox
def test_evaluate_argument_errors_against_a_run(subset, smoke_run, cache, tmp_path, humaneval_x_js_file):
    from codecl.serve.evaluate import evaluate_run

    with pytest.raises(ConfigError, match="no trained modules"):
        evaluate_run(smoke_run, subset, n=2, temperature=0.8, top_p=0.95, ks=[1], task="javascript", output=tmp_path)
    with pytest.raises(ConfigError, match="method 'hybrid'"):
        evaluate_run(smoke_run, subset, n=2, temperature=0.8, top_p=0.95, ks=[1], method="hybrid", output=tmp_path)
    with pytest.raises(ConfigError, match="no trained modules"):  # the benchmark's language (javascript) was not trained
        evaluate_run(smoke_run, humaneval_x_js_file, n=2, temperature=0.8, top_p=0.95, ks=[1], output=tmp_path)
    assert not any(tmp_path.iterdir())
