"""codecl.languages: the registry, cached parsers and the syntax check behind syntax_pass."""
from __future__ import annotations

import sys

import pytest

from codecl import config, languages
from codecl.errors import ConfigError
from codecl.languages import get_language, get_parser, known_languages, parse_ok


def test_registry_matches_the_config_task_names():
    assert known_languages() == list(config.LANGUAGES)
    assert known_languages()[:6] == ["python", "javascript", "java", "go", "php", "ruby"]  # CodeSearchNet's, then any added
    for name in known_languages()[1:]:  # every tree-sitter grammar is installed with codecl
        assert languages.get_tree_sitter_language(name) is not None


def test_unknown_language_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown language 'pyhton'; known: python, javascript, java, go, php, ruby"):
        get_language("pyhton")
    with pytest.raises(ConfigError, match="known: python"):
        parse_ok("x = 1", "cobol")


@pytest.mark.parametrize("code, ok", [
    ("def f(x):\n    return x\n", True),
    ("def f(self):\n        return 1", True),  # a method as CodeSearchNet stores it
    ("def f(x:\n    return x", False),
    ('print "python 2"', False),
    ("x = 1\0", False),  # null byte: ValueError, not a crash
])
def test_python_uses_ast(code, ok):
    assert parse_ok(code, "python") is ok


@pytest.mark.parametrize("code, ok", [
    ("function f(a) {\n  return a + 1;\n}", True),
    ("const add = (a, b) => a + b;", True),
    ("function (a) { return a; }", True),  # CodeSearchNet's anonymous functions
    ("function f(a) {\n  return a", False),  # MISSING "}"
    ("function f(a) {{{ return ]", False),  # ERROR
    ("foo(a) {\n  return a;\n}", True),  # a class method on its own is complete as a class member
    ("static async get(a) {\n  return a;\n}", True),
    ("}{", False),  # but code may not close the wrapper class
    ("} class B {", False),
])
def test_javascript_uses_tree_sitter_without_error_or_missing_nodes(code, ok):
    assert parse_ok(code, "javascript") is ok


@pytest.mark.parametrize("language, code, ok", [
    ("java", "public int add(int a, int b) {\n    return a + b;\n}", True),  # CodeSearchNet's bare method
    ("java", "@Override\npublic <T> List<T> copy(List<T> xs) throws IOException {\n    return new ArrayList<>(xs);\n}", True),
    ("java", "class A {\n  void f() {}\n}", True),
    ("java", "public int add(int a, int b) {\n    return a + b;\n", False),  # MISSING }
    ("java", "public int add(int a int b) { return a; }", False),
    ("java", "void f() {}\n} class B {", False),  # may not close the wrapper class
    ("go", "func Add(a, b int) int {\n\treturn a + b\n}", True),
    ("go", "func (s *Stack[T]) Len() int {\n\treturn len(s.items)\n}", True),
    ("go", "func Add(a, b int) int {\n\treturn a +\n", False),
    ("php", "public static function add($a, $b)\n{\n    return $a + $b;\n}", True),  # a method, no <?php
    ("php", "function add($a, $b) {\n    return $a + $b;\n}", True),
    ("php", "<?php\nfunction add($a) { return $a; }", True),
    ("php", "function add($a, $b) {\n    return $a + ;\n}", False),
    ("ruby", "def add(a, b)\n  a + b\nend", True),
    ("ruby", "def self.empty?\n  @items.empty?\nend", True),
    ("ruby", "def add(a, b)\n  a + b\n", False),  # MISSING end
])
def test_other_languages_parse_with_their_grammars(language, code, ok):
    assert parse_ok(code, language) is ok


def test_php_files_use_the_grammar_with_tags():
    assert get_parser("php", whole_file=True) is not get_parser("php")
    root = get_parser("php", whole_file=True).parse(b"<?php\nfunction f() { return 1; }\n").root_node
    assert not root.has_error and root.named_children[0].type == "php_tag"


def test_parsers_are_cached_per_language():
    assert get_parser("javascript") is get_parser("javascript")
    assert get_parser("python") is not get_parser("javascript")


def test_missing_grammar_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tree_sitter_ruby", None)  # import fails as if not installed
    languages.get_tree_sitter_language.cache_clear()
    languages.get_parser.cache_clear()
    try:
        with pytest.raises(ConfigError, match="pip install tree-sitter-ruby"):
            parse_ok("puts 1", "ruby")
    finally:
        languages.get_tree_sitter_language.cache_clear()
        languages.get_parser.cache_clear()
