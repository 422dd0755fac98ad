"""Cleaning and checking the real CodeSearchNet samples in ../shared/data/csn (skipped when absent)."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from codecl.data.check import check_path, iter_pairs
from codecl.data.clean import clean_fields
from codecl.data.records import find_data_files, read_records

EXPECTED = {  # path under csn/ -> (language, check_path counts)
    "codexglue_code_to_text_python/valid.jsonl": ("python", {"records": 120, "kept": 110, "dropped": {"short_code": 9, "short_docstring": 1}}),
    "codexglue_dummy_gz/python/python_train_0.jsonl.gz": ("python", {"records": 3, "kept": 3, "dropped": {}}),
    "codexglue_dummy_gz/python/python_valid_0.jsonl.gz": ("python", {"records": 3, "kept": 3, "dropped": {}}),
    "codexglue_dummy_gz/python/python_test_0.jsonl.gz": ("python", {"records": 3, "kept": 3, "dropped": {}}),
    "codexglue_dummy_gz/javascript/javascript_train_0.jsonl.gz": ("javascript", {"records": 3, "kept": 3, "dropped": {}}),
    "codexglue_dummy_gz/javascript/javascript_valid_0.jsonl.gz": ("javascript", {"records": 3, "kept": 1, "dropped": {"short_docstring": 2}}),
    "codexglue_dummy_gz/javascript/javascript_test_0.jsonl.gz": ("javascript", {"records": 3, "kept": 3, "dropped": {}}),
    # CoSQA: 604 items, 552 distinct functions; no `docstring` field (its `doc` is a web query), so the
    # description is the docstring inside the code; 4 functions are Python 2 (unparseable).
    "cosqa-dev.json": ("python", {"records": 604, "kept": 427, "dropped": {
        "constructor": 1, "duplicate": 32, "short_code": 115, "short_docstring": 21, "test_function": 4, "unparseable": 4}}),
}


@pytest.fixture
def csn(shared_data) -> Path:
    folder = shared_data / "csn"
    if not folder.is_dir():
        pytest.skip("../shared/data/csn is absent")
    return folder


def test_every_file_is_covered(csn):
    assert {f.path.relative_to(csn).as_posix() for f in find_data_files(csn)} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_check_path_counts(csn, name):
    language, expected = EXPECTED[name]
    messages = []
    summary = check_path(csn / name, language, report=messages.append)
    assert summary == expected
    assert summary["records"] == summary["kept"] + sum(summary["dropped"].values())
    if name == "cosqa-dev.json":
        assert messages == [f"{csn / name}: 595 records had no `docstring` field; their description was taken from the docstring inside the code"]


def test_folders_dedup_across_files_and_splits(csn):
    summary = check_path(csn / "codexglue_dummy_gz", "javascript")
    assert summary == {"records": 9, "kept": 7, "dropped": {"short_docstring": 2}}


def _docstring_of(func) -> bool:
    first = func.body[0]
    return isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::SyntaxWarning")  # the data's own escapes
@pytest.mark.parametrize("name", [n for n, (lang, _) in EXPECTED.items() if lang == "python"])
def test_python_targets_have_no_docstring_and_keep_the_rest_byte_exact(csn, name):
    n = 0
    for record in read_records(csn / name):
        result = clean_fields(record.fields, "python")
        if isinstance(result, str):
            continue
        source, target = result
        n += 1
        code = record.fields["code"]
        original = ast.parse(code).body[0]
        cleaned = ast.parse(target).body[0]
        assert _docstring_of(original) and not _docstring_of(cleaned), record.origin
        # the same function minus its docstring statement ...
        assert [ast.dump(s) for s in cleaned.body] == [ast.dump(s) for s in original.body[1:]], record.origin
        # ... whose every line is an original line, in order (formatting kept)
        lines = iter(code.splitlines())
        assert all(any(line == orig for orig in lines) for line in target.splitlines()), record.origin
        assert source and "\n" not in source
    assert n == EXPECTED[name][1]["kept"] + EXPECTED[name][1]["dropped"].get("duplicate", 0)


def test_iter_pairs_on_javascript(csn):
    pairs = list(iter_pairs(csn / "codexglue_dummy_gz" / "javascript", "javascript"))
    assert len(pairs) == 7 and all(set(p) == {"source", "target"} for p in pairs)
    assert pairs[0]["target"].startswith("function createTypeScriptLanguageService(options) {")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codecl", *args], capture_output=True, text=True, timeout=120)


def test_cli_data_check_and_pairs(csn):
    done = run_cli("data", "check", str(csn / "codexglue_code_to_text_python" / "valid.jsonl"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == EXPECTED["codexglue_code_to_text_python/valid.jsonl"][1]

    done = run_cli("data", "pairs", str(csn / "cosqa-dev.json"), "--language", "python", "--limit", "5")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert len(rows) == 5 and rows[0] == {
        "source": "Check if all edges between two nodes have the same relation.",
        "target": "def is_edge_consistent(graph, u, v):\n    if not graph.has_edge(u, v):\n"
                  "        raise ValueError('{} does not contain an edge ({}, {})'.format(graph, u, v))\n\n"
                  "    return 0 == len(set(d[RELATION] for d in graph.edge[u][v].values()))"}
