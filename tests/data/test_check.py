"""codecl.data.check and the `codecl data check` / `data pairs` commands on files written here."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from codecl.data.check import check_path, iter_pairs
from codecl.errors import ConfigError, DataError

GOOD = {"func_name": "add", "language": "python", "docstring": "Add the two numbers.",
        "code": 'def add(a, b):\n    """Add the two numbers."""\n    c = a + b\n    return c\n'}


@pytest.fixture
def data_file(tmp_path):
    lines = [json.dumps(GOOD), "{broken", json.dumps({**GOOD, "docstring": ["not", "a", "string"]}),
             json.dumps({**GOOD, "code": None}), json.dumps({**GOOD, "func_name": "test_add"})]
    path = tmp_path / "python" / "train.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_check_path_reports_malformed_lines_and_counts_drops(data_file):
    messages = []
    summary = check_path(data_file, None, report=messages.append)
    assert summary == {"records": 5, "kept": 1, "dropped": {"malformed": 1, "missing_field": 1, "test_function": 1, "wrong_type": 1}}
    assert len(messages) == 1 and messages[0].startswith(f"{data_file}:2: not valid JSON")


def test_check_path_errors(tmp_path, data_file):
    with pytest.raises(DataError, match=f"{tmp_path / 'missing.jsonl'}: no such file or folder"):
        check_path(tmp_path / "missing.jsonl", None)
    with pytest.raises(ConfigError, match="unknown language 'rust'; known: python, javascript, java, go, php, ruby"):
        check_path(data_file, "rust")
    with pytest.raises(ConfigError, match="known: python"):
        list(iter_pairs(data_file, "rust"))


def test_iter_pairs_yields_what_training_sees(data_file):
    assert list(iter_pairs(data_file, "python")) == [{"source": "Add the two numbers.", "target": "def add(a, b):\n    c = a + b\n    return c\n"}]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codecl", *args], capture_output=True, text=True, timeout=120)


def test_cli_exit_codes_and_json_last_line(tmp_path, data_file):
    done = run_cli("data", "check", str(data_file))
    assert done.returncode == 0
    assert json.loads(done.stdout.strip().splitlines()[-1])["dropped"]["malformed"] == 1
    assert f"{data_file}:2:" in done.stderr
    done = run_cli("data", "check", str(tmp_path / "nope"))
    assert done.returncode == 3 and "nope: no such file or folder" in done.stderr
    done = run_cli("data", "pairs", str(data_file), "--language", "rust")
    assert done.returncode == 2 and "known: python, javascript" in done.stderr
