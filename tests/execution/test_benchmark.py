import gzip
import json
import os
import subprocess
import sys
import time

import pytest

from codecl.errors import DataError
from codecl.execution.benchmark import load_benchmark, load_samples
from helpers import write_jsonl


def record(task_id, **extra):
    return {"task_id": task_id, "prompt": "p", "test": "t", **extra}


def test_language_from_task_id_prefix_or_language_field(tmp_path):
    path = write_jsonl(tmp_path / "b.jsonl.gz", [
        record("HumanEval/0", entry_point="f"), record("Python/0"), record("JavaScript/0"),
        record("MBPP/1", entry_point="g"), record("MBJSP/1"), record("Custom/1", language="JavaScript"),
    ], gz=True)
    problems = load_benchmark(path)
    assert {t: p.language for t, p in problems.items()} == {
        "HumanEval/0": "python", "Python/0": "python", "JavaScript/0": "javascript",
        "MBPP/1": "python", "MBJSP/1": "javascript", "Custom/1": "javascript"}
    assert problems["HumanEval/0"].entry_point == "f" and problems["Python/0"].entry_point is None


@pytest.mark.parametrize("bad, message", [
    ('{"task_id": "HumanEval/1", "prompt": ', r"b\.jsonl:2: not valid JSON"),
    (json.dumps({"task_id": "HumanEval/1", "prompt": "p"}), r"b\.jsonl:2: field 'test' is missing"),
    (json.dumps(record("HumanEval/1", prompt=3)), r"b\.jsonl:2: field 'prompt' must be a string, got int"),
    (json.dumps(record("HumanEval/0")), r"b\.jsonl:2: duplicate task_id 'HumanEval/0' \(first at .*b\.jsonl:1\)"),
    (json.dumps(record("Java/1")), r"b\.jsonl:2: cannot tell the language of task_id 'Java/1'"),
    (json.dumps(record("X/1", language="cpp")), r"b\.jsonl:2: field 'language' is 'cpp'; supported: python, javascript"),
    ("[1, 2]", r"b\.jsonl:2: expected a JSON object, got list"),
])
def test_bad_benchmark_lines_name_file_line_and_field(tmp_path, bad, message):
    path = write_jsonl(tmp_path / "b.jsonl", [record("HumanEval/0"), bad])
    with pytest.raises(DataError, match=message):
        load_benchmark(path)


def test_missing_or_empty_benchmark(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_benchmark(tmp_path / "absent.jsonl")
    with pytest.raises(DataError, match="no problems"):
        load_benchmark(write_jsonl(tmp_path / "empty.jsonl", []))
    (tmp_path / "broken.jsonl.gz").write_bytes(gzip.compress(b'{"a": 1}\n')[:-12])
    with pytest.raises(DataError, match="broken.jsonl.gz"):
        load_benchmark(tmp_path / "broken.jsonl.gz")


def test_samples_several_per_task_and_errors_name_the_line(tmp_path):
    problems = load_benchmark(write_jsonl(tmp_path / "b.jsonl", [record("HumanEval/0"), record("HumanEval/1")]))
    good = write_jsonl(tmp_path / "s.jsonl", [
        {"task_id": "HumanEval/1", "completion": "a"}, {"task_id": "HumanEval/0", "completion": "b"},
        {"task_id": "HumanEval/1", "completion": "c"}])
    assert load_samples(good, problems) == {"HumanEval/1": ["a", "c"], "HumanEval/0": ["b"]}
    unknown = write_jsonl(tmp_path / "u.jsonl", [{"task_id": "HumanEval/0", "completion": ""},
                                                 {"task_id": "HumanEval/9", "completion": ""}])
    with pytest.raises(DataError, match=r"u\.jsonl:2: unknown task_id 'HumanEval/9'"):
        load_samples(unknown, problems)
    missing = write_jsonl(tmp_path / "m.jsonl", [{"task_id": "HumanEval/0"}])
    with pytest.raises(DataError, match=r"m\.jsonl:1: field 'completion' is missing"):
        load_samples(missing, problems)
    with pytest.raises(DataError, match="no samples"):
        load_samples(write_jsonl(tmp_path / "e.jsonl", []), problems)


def test_hub_benchmark_offline_fails_fast_with_one_line(tmp_path):
    samples = write_jsonl(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": ""}])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "codecl", "evaluate-exec", "--benchmark", "openai_humaneval",
                           "--samples", str(samples), "--allow-code-execution"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert time.monotonic() - start < 60
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot load benchmark 'openai_humaneval'" in lines[0] and "Hugging Face hub" in lines[0]


@pytest.mark.parametrize("fixture, language, entry_point", [
    ("humaneval_file", "python", True), ("humaneval_x_python_file", "python", False),
    ("humaneval_x_js_file", "javascript", False)])
def test_real_benchmark_files_load(request, fixture, language, entry_point):
    problems = load_benchmark(request.getfixturevalue(fixture))
    assert len(problems) == 164
    assert {p.language for p in problems.values()} == {language}
    assert all(bool(p.entry_point) == entry_point and p.canonical_solution for p in problems.values())
