"""`pass_at_1` inside `codecl run` (codecl.execution.inrun): descriptions, program assembly, the opt-in."""
import json
import re
from pathlib import Path

import pytest

from codecl.config import load_config
from codecl.errors import ConfigError
from codecl.execution import Problem, Sandbox, SandboxConfig, load_benchmark, run_problem_samples
from codecl.execution.inrun import SKIPPED_NOTE, canonical_function, completion_for, prepare_problem, program_parts
from helpers import SHARED_DATA

HUMANEVAL = SHARED_DATA / "exec" / "humaneval" / "HumanEval.jsonl.gz"
# Headers with helpers (10, 38), `import math` before the docstring (115), the first problems.
PICKED = ["HumanEval/0", "HumanEval/1", "HumanEval/10", "HumanEval/38", "HumanEval/115"]


@pytest.fixture(scope="module")
def sandbox10() -> Sandbox:
    """10 s per program, as the other full runs: 5 s is tight for Node on a loaded 2-core machine."""
    return Sandbox(SandboxConfig(timeout_s=10.0))


def renamed(item, code: str) -> str:
    """The function under another name, as a model that cannot know the name would write it."""
    return re.sub(rf"\b{re.escape(item.entry_point)}\b", item.entry_point + "_generated", code)


def run_functions(sandbox, items, codes):
    problems, completions = {}, {}
    for item, code in zip(items, codes):
        synthetic, completion = program_parts(item, code)
        problems[synthetic.task_id], completions[synthetic.task_id] = synthetic, [completion]
    return {t: r[0] for t, r in run_problem_samples(problems, completions, sandbox=sandbox).items()}


# ---------------------------------------------------------------- descriptions


def test_every_humaneval_problem_gets_a_description_like_training(humaneval_file):
    problems = load_benchmark(humaneval_file)
    items = {t: prepare_problem(p) for t, p in problems.items()}
    assert len(items) == 164
    for task_id, item in items.items():
        words = item.description.split()
        assert len(words) >= 3, task_id
        assert ">>>" not in item.description and "\n" not in item.description, task_id
        assert item.entry_point == problems[task_id].entry_point
        assert problems[task_id].prompt.startswith(item.header)
        assert re.match(rf"def {item.entry_point}\(", problems[task_id].prompt[len(item.header):]), task_id
    assert items["HumanEval/0"].description == ("Check if in given list of numbers, are any two numbers closer to each "
                                                "other than given threshold.")
    assert items["HumanEval/0"].header == "from typing import List\n\n\n"
    assert "def is_palindrome" in items["HumanEval/10"].header
    assert items["HumanEval/115"].description.startswith("You are given a rectangular grid of wells.")


def test_every_humaneval_x_javascript_problem_gets_its_comment_as_description(humaneval_x_js_file, humaneval_file):
    problems = load_benchmark(humaneval_x_js_file)
    items = {t: prepare_problem(p) for t, p in problems.items()}
    assert len(items) == 164 and all(len(i.description.split()) >= 3 for i in items.values())
    assert all("*/" not in i.description and "/*" not in i.description for i in items.values())
    assert items["JavaScript/0"].entry_point == "hasCloseElements" and items["JavaScript/0"].header == ""
    python = prepare_problem(load_benchmark(humaneval_file)["HumanEval/0"])
    assert items["JavaScript/0"].description == python.description
    assert "const isPalindrome" in items["JavaScript/10"].header


def test_mbxp_style_prompts():
    py = prepare_problem(Problem("MBPP/1", "python", 'def min_cost(cost, m, n):\n\t"""\n\tWrite a function to find the minimum cost path.\n'
                                 '\t>>> min_cost([[1, 2]], 0, 1)\n\t3\n\t"""\n', "", "min_cost"))
    assert py.description == "Write a function to find the minimum cost path." and py.header == ""
    js = prepare_problem(Problem("MBJSP/1", "javascript", "/**\n * Write a function to find the minimum cost path.\n"
                                 " * > minCost([[1, 2]], 0, 1)\n * 3\n */\nconst minCost = function (cost, m, n) {\n", "", "minCost"))
    assert js.description == "Write a function to find the minimum cost path." and js.entry_point == "minCost"


def test_a_prompt_without_description_or_function_is_refused():
    with pytest.raises(ValueError, match="no description"):
        prepare_problem(Problem("X/0", "python", "def f(x):\n", "", "f"))
    with pytest.raises(ValueError, match="declares no function"):
        prepare_problem(Problem("JavaScript/0", "javascript", "/* Add two numbers together. */\n", ""))


# ---------------------------------------------------------------- programs


def test_binding_line_only_when_the_generated_function_has_another_name():
    py = prepare_problem(Problem("X/0", "python", 'import math\n\ndef area(r):\n    """Area of a circle of radius r."""\n',
                                 "def check(c):\n    assert c(1) == math.pi\n", "area"))
    assert py.header == "import math\n\n" and py.description == "Area of a circle of radius r."
    assert completion_for(py, "def area(r):\n    return math.pi * r * r\n") == "def area(r):\n    return math.pi * r * r\n"
    assert completion_for(py, "def circle(r):\n    return 1\n").endswith("\narea = circle\n")
    assert completion_for(py, "x = (") == "x = ("  # no function: nothing to bind, the program fails
    js = prepare_problem(Problem("JavaScript/0", "javascript", "/* Add two numbers together.\n  */\nconst add = (a, b) => {\n", ""))
    assert js.entry_point == "add" and js.description == "Add two numbers together."
    assert completion_for(js, "function sum(a, b) {\n  return a + b;\n}").endswith("}\nconst add = sum;\n")
    assert completion_for(js, "function add(a, b) {\n  return a + b;\n}") == "function add(a, b) {\n  return a + b;\n}"


@pytest.mark.parametrize("fixture, picked", [
    ("humaneval_file", PICKED),
    ("humaneval_x_python_file", ["Python/0", "Python/10", "Python/115"]),
    ("humaneval_x_js_file", ["JavaScript/0", "JavaScript/10", "JavaScript/38"]),
])
def test_canonical_functions_pass_under_any_name_and_wrong_ones_fail(request, sandbox10, fixture, picked):
    problems = load_benchmark(request.getfixturevalue(fixture))
    if problems[picked[0]].language == "javascript":
        request.getfixturevalue("node")
    items = [prepare_problem(problems[t]) for t in picked]
    wrong = {"python": "def {}(*args):\n    return None\n", "javascript": "function {}(...args) {{\n  return null;\n}}\n"}
    results = run_functions(sandbox10, items, [canonical_function(i) for i in items])
    assert all(r.passed for r in results.values()), {t: r.stderr_tail[-300:] for t, r in results.items() if not r.passed}
    results = run_functions(sandbox10, items, [renamed(i, canonical_function(i)) for i in items])
    assert all(r.passed for r in results.values()), {t: r.stderr_tail[-300:] for t, r in results.items() if not r.passed}
    results = run_functions(sandbox10, items, [wrong[i.problem.language].format(i.entry_point) for i in items])
    assert not any(r.passed for r in results.values())


@pytest.mark.sandbox
@pytest.mark.parametrize("fixture, failing", [
    ("humaneval_file", set()),
    ("humaneval_x_python_file", set()),
    ("humaneval_x_js_file", {"JavaScript/112", "JavaScript/155", "JavaScript/162"}),  # their own solutions fail (test_humaneval_full)
])
def test_every_canonical_function_assembles_into_a_passing_program(request, sandbox10, fixture, failing):
    problems = load_benchmark(request.getfixturevalue(fixture))
    if next(iter(problems.values())).language == "javascript":
        request.getfixturevalue("node")
    items = [prepare_problem(p) for p in problems.values()]
    results = run_functions(sandbox10, items, [renamed(i, canonical_function(i)) for i in items])
    assert {t for t, r in results.items() if not r.passed} == failing, {t: (r.status, r.duration_s, r.stderr_tail[-300:]) for t, r in results.items() if not r.passed and t not in failing}


# ---------------------------------------------------------------- config


def test_config_keys_from_set_and_their_validation():
    cfg = load_config("smoke", overrides=["eval.exec_benchmarks=[python=/data/HumanEval.jsonl.gz]", "eval.allow_code_execution=true",
                                          "eval.exec_max_problems=5", "eval.exec_timeout_s=3"])
    assert cfg.eval.exec_benchmarks == ("python=/data/HumanEval.jsonl.gz",)
    assert cfg.eval.allow_code_execution is True and cfg.eval.exec_max_problems == 5 and cfg.eval.exec_timeout_s == 3.0
    defaults = load_config("smoke").eval
    assert defaults.exec_benchmarks == () and defaults.allow_code_execution is False
    for bad, message in [("[python]", "LANGUAGE=SOURCE"), ("[java=x.jsonl]", "cannot be executed"),
                         ("[python=a.jsonl,python=b.jsonl]", "twice")]:
        with pytest.raises(ConfigError, match=message):
            load_config("smoke", overrides=[f"eval.exec_benchmarks={bad}"])
    with pytest.raises(ConfigError, match="exec_max_problems"):
        load_config("smoke", overrides=["eval.exec_max_problems=0"])


# ---------------------------------------------------------------- in a run


@pytest.fixture(scope="module")
def run_env(tmp_path_factory):
    if not HUMANEVAL.is_file():
        pytest.skip(f"{HUMANEVAL} is absent (../shared/data holds the public benchmark files)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CODECL_CACHE", str(tmp_path_factory.mktemp("codecl-cache")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        yield tmp_path_factory.mktemp("runs")


def smoke_run(out: Path, *overrides: str, tasks=None) -> dict:
    from codecl.experiment import run_experiment

    cfg = load_config("smoke", overrides=[f"eval.exec_benchmarks=[python={HUMANEVAL}]", *overrides],
                      output_dir=str(out), methods=["lora"], tasks=tasks)
    return run_experiment(cfg, progress=False)


def events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def test_run_with_execution_allowed_scores_pass_at_1_at_every_stage(run_env):
    out = run_env / "allowed"
    results = smoke_run(out, "eval.allow_code_execution=true", "eval.exec_max_problems=5")
    assert results["tasks"] == ["python", "javascript"]
    (run,) = results["runs"]
    rows = run["scores"]["pass_at_1"]
    assert len(rows) == len(run["stages"]) == 3
    for row in rows:  # a float for python (the benchmark), null for javascript (none configured)
        assert isinstance(row[0], float) and 0.0 <= row[0] <= 1.0 and row[1] is None
    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"][0]["scores"]["pass_at_1"] == rows
    runs = [e for e in events(out) if e["event"] == "exec"]
    assert [e["task"] for e in runs] == ["python"] * 3 and all(e["problems"] == 5 for e in runs)
    assert not any(e["event"] == "exec_skipped" for e in events(out))
    report = (out / "report.md").read_text()
    assert "**pass_at_1**" in report and "pass_at_1 (avg)" in report and SKIPPED_NOTE not in report


def test_run_without_the_opt_in_executes_nothing_and_reports_skipped(run_env):
    out = run_env / "not-allowed"
    results = smoke_run(out, tasks=["python"])
    assert all("pass_at_1" not in run["scores"] and "pass_at_1" not in run["final_average"] for run in results["runs"])
    skipped = [e for e in events(out) if e["event"] == "exec_skipped"]
    assert len(skipped) == 1 and skipped[0]["tasks"] == ["python"] and skipped[0]["reason"] == SKIPPED_NOTE
    assert not any(e["event"] in ("exec", "exec_setup") for e in events(out))
    report = (out / "report.md").read_text()
    assert SKIPPED_NOTE in report and "pass_at_1 (avg)" not in report
