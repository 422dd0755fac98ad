"""codecl.data.records: formats, folder layouts, origins, malformed lines, the hub loader offline."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codecl.data.records import find_data_files, read_hub_records, read_records
from codecl.errors import ConfigError, DataError
from helpers import write_jsonl

RECORD = {"func_name": "f", "code": "def f():\n    return 1\n", "docstring": "Return one."}


def test_jsonl_records_carry_file_and_line_and_malformed_lines_become_problems(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [RECORD, "", "{not json", "[1, 2]", RECORD])
    records = list(read_records(path))
    assert [r.line for r in records] == [1, 3, 4, 5]  # the blank line 2 is skipped
    assert records[0].fields == RECORD and records[0].origin == f"{path}:1"
    assert records[1].fields is None and records[1].problem.startswith(f"{path}:3: not valid JSON")
    assert "fix or delete that line" in records[1].problem
    assert records[2].problem.startswith(f"{path}:4: expected a JSON object, got list")


def test_gzip_and_json_list(tmp_path):
    gz = write_jsonl(tmp_path / "a.jsonl.gz", [RECORD, RECORD], gz=True)
    assert [r.fields for r in read_records(gz)] == [RECORD, RECORD]
    js = tmp_path / "b.json"
    js.write_text(json.dumps([RECORD, 7]), encoding="utf-8")
    records = list(read_records(js))
    assert records[0].fields == RECORD and records[0].line == 1
    assert records[1].problem == f"{js}:2: item 2 is a int, not a record object — remove it"


def test_truncated_gzip_is_a_data_error(tmp_path):
    bad = tmp_path / "x.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"a": 1}\n' * 100)[:-20])
    with pytest.raises(DataError, match="x.jsonl.gz: cannot be read"):
        list(read_records(bad))


def test_layouts_name_split_and_language(tmp_path):
    write_jsonl(tmp_path / "python/final/jsonl/train/python_train_0.jsonl.gz", [RECORD], gz=True)  # CodeSearchNet original
    write_jsonl(tmp_path / "python/final/jsonl/valid/python_valid_0.jsonl.gz", [RECORD], gz=True)
    write_jsonl(tmp_path / "javascript/test.jsonl", [RECORD])  # CodeXGLUE / codecl's corpus
    write_jsonl(tmp_path / "javascript/train.jsonl", [RECORD])
    (tmp_path / "stats.json").write_text("{}")  # a built corpus's stats are not data
    found = {(f.path.relative_to(tmp_path).as_posix(), f.split, f.language) for f in find_data_files(tmp_path)}
    assert found == {
        ("python/final/jsonl/train/python_train_0.jsonl.gz", "train", "python"),
        ("python/final/jsonl/valid/python_valid_0.jsonl.gz", "valid", "python"),
        ("javascript/train.jsonl", "train", "javascript"),
        ("javascript/test.jsonl", "test", "javascript"),
    }
    ordered = [f.split for f in find_data_files(tmp_path, "javascript")]
    assert ordered == ["train", "test"]  # train first
    single = find_data_files(tmp_path / "javascript" / "test.jsonl")
    assert [(f.split, f.language) for f in single] == [("test", "javascript")]


def test_missing_path_and_unknown_language(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'}: no such file or folder"):
        find_data_files(tmp_path / "nope")
    with pytest.raises(ConfigError, match="known: python, javascript"):
        find_data_files(tmp_path, "klingon")
    with pytest.raises(DataError, match="no .jsonl/.jsonl.gz/.json data files for go"):
        find_data_files(tmp_path, "go")


def test_hub_loader_offline_says_what_to_use_instead(tmp_path):
    # In a subprocess: huggingface_hub reads HF_HUB_OFFLINE when first imported.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    script = ("from codecl.data.records import read_hub_records\n"
              "from codecl.errors import DataError\n"
              "try:\n    next(read_hub_records('claudios/code_search_net', 'python', 'valid'))\n"
              "except DataError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    message = done.stdout.strip()
    assert len(message.splitlines()) == 1, done.stdout + done.stderr
    assert "cannot load hub dataset 'claudios/code_search_net' (python, valid): offline mode is set" in message
    assert "use data.source=local with data.path=" in message and "data.source=embedded" in message


def test_hub_loader_passes_the_revision(monkeypatch):
    """data.hub_revision reaches `datasets.load_dataset(..., revision=...)`; no revision, no keyword."""
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load(name, config, split, **kwargs):
        calls.append((name, config, split, kwargs))
        return [{"func_code_string": "def f():\n    pass", "func_documentation_string": "Doc."}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    rows = list(read_hub_records("google/code_x_glue_ct_code_to_text", "python", "valid", revision="2678080e"))
    list(read_hub_records("claudios/code_search_net", "python", "test"))
    assert calls == [("google/code_x_glue_ct_code_to_text", "python", "validation", {"revision": "2678080e"}),
                     ("claudios/code_search_net", "python", "test", {})]
    assert rows[0].fields["code"].startswith("def f") and rows[0].origin.startswith("hub:google/")
