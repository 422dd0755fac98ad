"""TypeScript, added as data only (its `LanguageSpec` in codecl.languages): syntax checks, corpus
extraction and builds, user tasks; and the language registry every other module reads."""
from __future__ import annotations

import json
import textwrap
from collections import Counter

import pytest

from codecl import config
from codecl.config import DataConfig, UserTaskConfig, load_config
from codecl.data.build import build_corpus
from codecl.data.clean import clean_fields
from codecl.data.extract import EXTRACTORS
from codecl.data.tasks import clear_cache, load_pairs
from codecl.data.usertasks import task_info
from codecl.errors import ConfigError
from codecl.execution import benchmark
from codecl.languages import LANGUAGES, LanguageSpec, get_language, known_languages, parse_ok
from helpers import run_codecl

SHAPES = textwrap.dedent('''\
    import { Base } from "./base";

    /**
     * Computes the area of a circle from its radius.
     * @param radius the radius
     * @returns the area
     */
    export function circleArea(radius: number): number {
      const r2: number = radius * radius;
      return Math.PI * r2;
    }

    function noDoc(x: number): number {
      const y = x + 1;
      return y;
    }

    // A line comment is not JSDoc.
    function lineCommented(x: number): number {
      const y = x + 2;
      return y;
    }

    export interface Shape {
      area(): number;
    }

    /** A rectangle with a width and a height. */
    export class Rect<T extends object> implements Shape {
      private readonly w: number;

      /**
       * Creates a rectangle of the given size.
       */
      constructor(w: number, private h: number) {
        this.w = w;
      }

      /**
       * Returns the area of the rectangle in square units.
       * @returns width times height
       */
      public area(): number {
        const a = this.w * this.h;
        return a;
      }

      scale(f: number): Rect<T> {
        return new Rect<T>(this.w * f, this.h * f);
      }
    }

    /**
     * Doubles every number of a list and keeps the order.
     */
    export const doubleAll = (xs: number[]): number[] => {
      const out = xs.map((x) => x * 2);
      return out;
    };
    ''')

REPO = textwrap.dedent('''\
    export abstract class Repo<K, V> {
      protected items = new Map<K, V>();

      /** Loads the value stored under a key, if any. */
      abstract load(key: K): V | undefined;

      /**
       * Stores a value under a key and returns the repository.
       */
      save(key: K, value: V): this {
        this.items.set(key, value);
        return this;
      }
    }

    /**
     * Yields the numbers from zero up to a limit.
     */
    export function* count(limit: number): Generator<number> {
      for (let i = 0; i < limit; i++) {
        yield i;
      }
    }
    ''')


# ---------------------------------------------------------------- the registry


def test_every_language_is_in_the_registry_and_the_config_reads_it():
    assert known_languages() == ["python", "javascript", "java", "go", "php", "ruby", "typescript"]
    assert list(config.LANGUAGES) == known_languages()
    assert config.EXEC_LANGUAGES == benchmark.LANGUAGES == ("python", "javascript")  # TypeScript is not executed
    assert not get_language("typescript").executes and get_language("typescript").extensions[0] == ".ts"
    assert list(EXTRACTORS) == known_languages()
    with pytest.raises(ConfigError, match=r"unknown language 'tsx'; known: .*ruby, typescript"):
        get_language("tsx")


def test_a_language_is_data_only():
    """Registering a spec is all a language needs: the syntax check, lookups and extraction read it."""
    spec = LanguageSpec("jsalike", "tree_sitter_javascript", "language", (".jsa",), ("class _ {\n", "\n}"),
                        line_comment="//", constructors=("constructor",), extractor="jsdoc")
    LANGUAGES.register(spec, origin="test")
    try:
        assert get_language("jsalike") is spec and "jsalike" in known_languages()
        assert parse_ok("function f(a) {\n  return a + 1;\n}", "jsalike")
        assert parse_ok("foo(a) {\n  return a;\n}", "jsalike")  # the member wrapper
        assert not parse_ok("function f(a) {{{ return ]", "jsalike")
        dropped = Counter()
        found = EXTRACTORS["jsalike"]("/** Adds one to a number. */\nfunction inc(a) {\n  return a + 1;\n}\n", "r", "x.jsa", dropped)
        assert [(r["func_name"], r["language"], r["docstring"]) for _, r in found] == [("inc", "jsalike", "Adds one to a number.")]
    finally:
        LANGUAGES.unregister("jsalike")
    with pytest.raises(ConfigError, match="unknown language 'jsalike'"):
        get_language("jsalike")
    assert "jsalike" not in EXTRACTORS


def test_a_spec_is_checked_when_made():
    with pytest.raises(ConfigError, match="doc_comment must be one of"):
        LanguageSpec("x", "m", "language", (".x",), doc_comment="javadoc")
    with pytest.raises(ConfigError, match="extractor 'tree' needs extraction"):
        LanguageSpec("x", "m", "language", (".x",), extractor="tree")


# ---------------------------------------------------------------- syntax


@pytest.mark.parametrize("code, ok", [
    ("function add(a: number, b: number): number {\n  return a + b;\n}", True),
    ("function first<T>(xs: T[]): T | undefined {\n  return xs[0];\n}", True),
    ("interface Point {\n  x: number;\n  readonly y?: number;\n}", True),
    ("type Pair<A, B> = { a: A; b: B };\nconst p: Pair<string, number> = { a: 'x', b: 1 };", True),
    ("const id = <T,>(x: T): T => x;", True),
    ("public area(): number {\n  return this.w * this.h;\n}", True),  # a class method on its own
    ("private static async load<K>(key: K): Promise<void> {\n  await fetch(String(key));\n}", True),
    ("function add(a: number, b: number): number {\n  return a + b;\n", False),  # MISSING }
    ("function add(a: number b: number) { return a; }", False),
    ("interface Point {\n  x: number\n  y: = 2;\n}", False),
    ("area(): number { return 1; }\n} class B {", False),  # may not close the wrapper class
])
def test_typescript_syntax_check(code, ok):
    assert parse_ok(code, "typescript") is ok


# ---------------------------------------------------------------- extraction and builds


def test_extract_documented_typescript_functions():
    dropped = Counter()
    found = EXTRACTORS["typescript"](SHAPES, "repo", "src/shapes.ts", dropped)
    got = {r["func_name"]: (r["docstring"], r["code"].split("\n", 1)[0]) for _, r in found}
    assert got == {
        "circleArea": ("Computes the area of a circle from its radius.", "function circleArea(radius: number): number {"),
        "Rect.constructor": ("Creates a rectangle of the given size.", "constructor(w: number, private h: number) {"),
        "Rect.area": ("Returns the area of the rectangle in square units.", "public area(): number {"),
        "doubleAll": ("Doubles every number of a list and keeps the order.", "(xs: number[]): number[] => {"),
    }
    assert dropped == {"no_docstring": 3}  # noDoc, lineCommented, Rect.scale
    for _, record in found:
        assert record["language"] == "typescript" and parse_ok(record["code"], "typescript")
        assert "@" not in record["docstring"] and not record["code"].lstrip().startswith("/*")
    cleaned = {r["func_name"]: clean_fields(r, "typescript") for _, r in found}
    assert cleaned["Rect.constructor"] == "constructor"  # dropped as CodeSearchNet drops constructors
    assert cleaned["Rect.area"] == ("Returns the area of the rectangle in square units.", found[2][1]["code"])


def _source_folder(tmp_path):
    src = tmp_path / "tsproject"
    (src / "lib").mkdir(parents=True)
    (src / "lib" / "shapes.ts").write_text(SHAPES, encoding="utf-8")
    (src / "repo.ts").write_text(REPO, encoding="utf-8")
    (src / "repo.spec.ts").write_text(REPO.replace("save", "saveTwice"), encoding="utf-8")  # tests are skipped
    (src / "globals.d.ts").write_text("/** Declared elsewhere, no body here. */\ndeclare function ext(a: number): number;\n")
    return src


def _rows(out):
    return [json.loads(line) for split in ("train", "valid", "test")
            for line in (out / "typescript" / f"{split}.jsonl").read_text().splitlines()]


def test_build_a_typescript_corpus_from_a_source_folder(tmp_path):
    stats = build_corpus(["typescript"], tmp_path / "out", [_source_folder(tmp_path)])
    assert stats["languages"]["typescript"]["files"] == 2
    rows = _rows(tmp_path / "out")
    assert sorted(r["func_name"] for r in rows) == ["Rect.area", "Repo.save", "circleArea", "count", "doubleAll"]
    by_name = {r["func_name"]: r for r in rows}
    assert by_name["Repo.save"]["docstring"] == "Stores a value under a key and returns the repository."
    assert by_name["count"]["code"].startswith("function* count(limit: number): Generator<number> {")
    assert by_name["circleArea"]["docstring_tokens"] == ["Computes", "the", "area", "of", "a", "circle", "from", "its", "radius", "."]
    assert by_name["circleArea"]["path"] == "lib/shapes.ts" and by_name["circleArea"]["url"].startswith("tsproject/lib/shapes.ts#L")
    assert all(r["language"] == "typescript" and r["partition"] in ("train", "valid", "test") for r in rows)


def test_cli_builds_typescript(tmp_path):
    run_codecl("data", "build", "--languages", "typescript", "--output", str(tmp_path / "out"),
               "--source", str(_source_folder(tmp_path)), cache=tmp_path / "cache")
    assert len(_rows(tmp_path / "out")) == 5


# ---------------------------------------------------------------- user tasks


def test_a_user_task_in_typescript(tmp_path):
    clear_cache()
    rows = [{"input": f"add {i} to a number", "target": f"function add{i}(x: number): number {{\n  return x + {i};\n}}",
             "language": "typescript"} for i in range(4)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "test.jsonl").write_text(json.dumps(rows[0] | {"target": "function z(): void {\n}"}) + "\n")
    try:
        cfg = DataConfig(tasks={"tsmine": UserTaskConfig(path=str(tmp_path))})
        assert task_info(cfg, "tsmine").language == "typescript"  # from the rows' language field
        assert len(load_pairs(cfg, "tsmine", "train")) == 4
        clear_cache()
        cfg = DataConfig(tasks={"tsmine": UserTaskConfig(path=str(tmp_path), language="typescript")})
        assert task_info(cfg, "tsmine").language == "typescript"
        run = load_config("smoke", overrides=[f"data.tasks.tsmine.path={tmp_path}", "data.tasks.tsmine.language=typescript"],
                          tasks=["tsmine"])
        assert run.data.tasks["tsmine"].language == "typescript"
    finally:
        clear_cache()
    with pytest.raises(ConfigError, match="language must be one of .*typescript"):
        DataConfig(tasks={"coffee": UserTaskConfig(path=str(tmp_path), language="coffeescript")})
