"""codecl.data.extract and codecl.data.build on small source trees written here."""
from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from codecl.data.build import build_corpus, split_of_key
from codecl.data.extract import extract_javascript, extract_python
from codecl.errors import ConfigError, DataError

PY_MODULE = textwrap.dedent('''\
    """Module docstring."""
    import os


    def top(a, b):
        """Add two numbers together."""
        c = a + b
        return c


    @decorator
    async def fetch(url):
        """Fetch the page at url."""
        page = await get(url)
        return page


    def undocumented(x):
        return x


    class Outer:
        """A class."""

        def method(self, x):
            """Scale x by the factor."""
            def helper(y):
                """Nested functions are not extracted."""
                return y
            return helper(x) * 2

        class Inner:
            def deep(self):
                """Go deeper than before."""
                value = 1
                return value


    if os.name == "nt":
        def windows_only(path):
            """Normalise a Windows path."""
            path = path.replace("/", "\\\\")
            return path
    ''')

JS_MODULE = textwrap.dedent('''\
    /**
     * Add two numbers together.
     * @param {number} a The first.
     * @returns {number} The sum.
     */
    function add(a, b) {
      var c = a + b;
      return c;
    }

    /** Multiply the two numbers given. */
    const multiply = (a, b) => {
      const c = a * b;
      return c;
    };

    /**
     * Greet a person by name.
     */
    Greeter.prototype.greet = function greet(name) {
      var text = 'Hello ' + name;
      return text;
    };

    var helpers = {
      /** Double the value that is passed. */
      double: function(x) {
        var y = x * 2;
        return y;
      }
    };

    class Shape {
      /** Compute the area of the shape. */
      area() {
        var a = this.w * this.h;
        return a;
      }
    }

    /** Outer builds an inner function here. */
    function outer() {
      /** Inner is nested in outer, same split. */
      function inner() {
        return 1;
      }
      return inner;
    }

    /** Separated from its function by a blank line. */

    function notDocumented() {
      return 2;
    }

    // A line comment is not JSDoc.
    function lineComment() {
      return 3;
    }
    ''')


def test_extract_python_functions_methods_and_exact_segments():
    dropped = Counter()
    found = extract_python(PY_MODULE, "repo", "pkg/mod.py", dropped)
    names = [r["func_name"] for _, r in found]
    assert names == ["top", "fetch", "Outer.method", "Outer.Inner.deep", "windows_only"]
    assert dropped == {"no_docstring": 1}  # `undocumented`; nested `helper` is not considered
    keys = {key for key, _ in found}
    assert keys == {"repo/pkg/mod.py"}  # a Python file is one split unit
    record = found[2][1]
    assert record["code"] == PY_MODULE[PY_MODULE.index("def method"):PY_MODULE.index("return helper(x) * 2") + len("return helper(x) * 2")]
    assert record["docstring"] == "Scale x by the factor." and record["language"] == "python"
    assert found[1][1]["code"].startswith("async def fetch(url):")  # from `def`, without the decorator
    assert set(record) == {"repo", "path", "func_name", "original_string", "language", "code", "code_tokens",
                           "docstring", "docstring_tokens", "url", "partition"}
    assert record["url"] == "repo/pkg/mod.py#L25-L30"


def test_extract_javascript_jsdoc_functions_and_groups():
    dropped = Counter()
    found = extract_javascript(JS_MODULE, "pkg", "lib/a.js", dropped)
    by_name = {r["func_name"]: (key, r) for key, r in found}
    assert sorted(by_name) == ["Greeter.prototype.greet", "add", "area", "double", "inner", "multiply", "outer"]
    assert by_name["add"][1]["docstring"] == "Add two numbers together."  # @tags removed
    assert by_name["add"][1]["code"].startswith("function add(a, b) {") and "/**" not in by_name["add"][1]["code"]
    assert by_name["multiply"][1]["code"].startswith("(a, b) => {")
    assert by_name["Greeter.prototype.greet"][1]["code"].startswith("function greet(name)")
    assert by_name["area"][1]["code"].startswith("area() {")
    assert by_name["inner"][0] == by_name["outer"][0] == "pkg::outer"  # nested: its container's split
    assert by_name["add"][0] == "pkg::add"
    assert dropped["no_docstring"] == 2  # notDocumented, lineComment


def test_split_is_a_stable_hash_of_the_key():
    splits = Counter(split_of_key(f"repo/file{i}.py") for i in range(2000))
    assert splits["train"] / 2000 == pytest.approx(0.8, abs=0.03)
    assert splits["valid"] / 2000 == pytest.approx(0.1, abs=0.03)
    assert split_of_key("repo/file7.py") == split_of_key("repo/file7.py")


def make_tree(root: Path, n_files: int = 40) -> Path:
    for i in range(n_files):
        funcs = "".join(
            f'def f{i}_{j}(x):\n    """Compute value number {i} {j} from x."""\n    y = x + {i}\n    z = y * {j}\n    return z\n\n\n'
            for j in range(3))
        (root / "py" / f"m{i // 10}").mkdir(parents=True, exist_ok=True)
        (root / "py" / f"m{i // 10}" / f"mod{i}.py").write_text(funcs, encoding="utf-8")
    (root / "py" / "tests").mkdir(exist_ok=True)
    (root / "py" / "tests" / "helpers.py").write_text(PY_MODULE, encoding="utf-8")  # a tests folder is skipped
    (root / "py" / "copy.py").write_text((root / "py" / "m0" / "mod0.py").read_text(), encoding="utf-8")  # duplicates
    (root / "js").mkdir()
    for i in range(30):
        (root / "js" / f"lib{i}.js").write_text(JS_MODULE.replace("add(", f"add{i}(").replace("var c = a + b", f"var c = {i} + a + b"), encoding="utf-8")
    (root / "js" / "lib.min.js").write_text("/** Minified. */function m(a){return a}" * 10, encoding="utf-8")
    return root


def read_split(folder: Path, language: str, split: str) -> list[dict]:
    return [json.loads(line) for line in (folder / language / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_build_corpus_is_deterministic_split_by_unit_and_deduplicated(tmp_path):
    src = make_tree(tmp_path / "src")
    stats = build_corpus(["python", "javascript"], tmp_path / "out", [src / "py", src / "js"])
    again = build_corpus(["python", "javascript"], tmp_path / "out2", [src / "py", src / "js"])
    for lang in ("python", "javascript"):
        for split in ("train", "valid", "test"):
            a = (tmp_path / "out" / lang / f"{split}.jsonl").read_bytes()
            assert a == (tmp_path / "out2" / lang / f"{split}.jsonl").read_bytes()
    assert stats["languages"] == again["languages"]
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["languages"] == stats["languages"]

    py = stats["languages"]["python"]
    assert py["files"] == 41  # 40 modules + copy.py; tests/ skipped
    assert sum(py[s]["records"] for s in ("train", "valid", "test")) == 120
    assert sum(py[s]["dropped"].get("duplicate", 0) for s in ("train", "valid", "test")) == 3  # copy.py
    split_of_file, codes = {}, {}
    for split in ("train", "valid", "test"):
        rows = read_split(tmp_path / "out", "python", split)
        assert rows and all(r["partition"] == split and r["language"] == "python" for r in rows)
        for r in rows:
            assert split_of_file.setdefault(r["path"], split) == split  # one file, one split
            assert r["code"] not in codes  # no function in two splits
            codes[r["code"]] = split

    js = stats["languages"]["javascript"]
    assert js["files"] == 30  # lib.min.js skipped
    rows = [r for s in ("train", "valid", "test") for r in read_split(tmp_path / "out", "javascript", s)]
    names = Counter(r["func_name"] for r in rows)
    # `multiply`, `double`, ... are identical in every file: kept once; `addN` differs per file
    assert names["multiply"] == 1 and sum(n.startswith("add") for n in names) == 30
    inner = {r["partition"] for r in rows if r["func_name"] in ("inner", "outer")}
    assert len(inner) == 1


def test_build_errors(tmp_path):
    with pytest.raises(ConfigError, match="known: python, javascript"):
        build_corpus(["perl"], tmp_path / "out", [tmp_path])
    with pytest.raises(ConfigError, match="--languages must name at least one language"):
        build_corpus([], tmp_path / "out", [tmp_path])
    with pytest.raises(DataError, match="nope: source folder not found"):
        build_corpus(["python"], tmp_path / "out", [tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no python source files under"):
        build_corpus(["python"], tmp_path / "out", [tmp_path / "empty"])
