"""The languages codecl knows (CodeSearchNet's six) and how to check that code parses.

`parse_ok` is the syntax check behind the `syntax_pass` metric and the corpus builder:
Python uses `ast.parse` (the reference parser); every other language uses a tree-sitter
parse with no ERROR or MISSING nodes. The six tree-sitter grammars (`tree-sitter-<lang>` from
PyPI) are dependencies of codecl. CodeSearchNet stores Java and PHP functions as bare methods
(`public int f() {...}`) and PHP without its `<?php` tag, so a unit that does not parse alone is
retried as the member of a class, and PHP is parsed by the grammar of PHP code without tags.
"""
from __future__ import annotations

import ast
import importlib
import warnings
from dataclasses import dataclass
from functools import lru_cache

from codecl.errors import ConfigError


@dataclass(frozen=True)
class LanguageSpec:
    name: str
    """Name as CodeSearchNet spells it (also the task name)."""
    grammar_module: str
    """Python module of the tree-sitter grammar (`pip install tree-sitter-<lang>`)."""
    grammar_function: str
    """Function of `grammar_module` returning the grammar's language pointer (for code units)."""
    extensions: tuple[str, ...]
    """File suffixes of source files in this language."""
    member_wrapper: tuple[str, str] | None = None
    """Code that does not parse as a program is retried inside this (prefix, suffix): CodeSearchNet's
    Java/PHP/JavaScript functions are often class methods (`name(args) {...}`), complete as class members."""

    file_grammar_function: str | None = None
    """The grammar of whole source files, when it differs (PHP files start with `<?php`)."""

    @property
    def pip_name(self) -> str:
        return self.grammar_module.replace("_", "-")


_CLASS = ("class _ {\n", "\n}")
LANGUAGES: dict[str, LanguageSpec] = {
    spec.name: spec
    for spec in (
        LanguageSpec("python", "tree_sitter_python", "language", (".py",)),
        LanguageSpec("javascript", "tree_sitter_javascript", "language", (".js", ".mjs", ".cjs"), _CLASS),
        LanguageSpec("java", "tree_sitter_java", "language", (".java",), _CLASS),
        LanguageSpec("go", "tree_sitter_go", "language", (".go",)),
        LanguageSpec("php", "tree_sitter_php", "language_php_only", (".php",), _CLASS, "language_php"),
        LanguageSpec("ruby", "tree_sitter_ruby", "language", (".rb",)),
    )
}


def known_languages() -> list[str]:
    return list(LANGUAGES)


def get_language(name: str) -> LanguageSpec:
    """The spec of `name`; an unknown name raises ConfigError listing the known ones."""
    try:
        return LANGUAGES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown language {name!r}; known: {', '.join(LANGUAGES)}") from None


@lru_cache(maxsize=None)
def get_tree_sitter_language(name: str, whole_file: bool = False):
    """The tree-sitter `Language` of `name` (cached); ConfigError if its grammar is not installed.
    `whole_file` picks the grammar of source files where it differs (PHP with `<?php` tags)."""
    import tree_sitter

    spec = get_language(name)
    try:
        module = importlib.import_module(spec.grammar_module)
    except ImportError:
        raise ConfigError(
            f"language {name!r} needs the tree-sitter grammar {spec.pip_name!r}, which is not installed: pip install {spec.pip_name}"
        ) from None
    function = (whole_file and spec.file_grammar_function) or spec.grammar_function
    return tree_sitter.Language(getattr(module, function)())


@lru_cache(maxsize=None)
def get_parser(name: str, whole_file: bool = False):
    """A tree-sitter `Parser` for `name` (cached per language; not thread-safe, like tree-sitter's).
    `whole_file`: the parser of source files (see `get_tree_sitter_language`)."""
    import tree_sitter

    return tree_sitter.Parser(get_tree_sitter_language(name, whole_file))


def parse_ok(code: str, language: str) -> bool:
    """True when `code` parses as a complete program unit of `language` without syntax errors:
    a program, or for Java, PHP and JavaScript a class member (a method on its own).
    PHP code is checked without `<?php` (as CodeSearchNet stores it); a leading tag is allowed."""
    spec = get_language(language)  # unknown name -> ConfigError, even for Python
    if language == "python":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. SyntaxWarning for invalid escape sequences
                ast.parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return False
        return True
    parser = get_parser(language)
    data = code.encode("utf-8", errors="surrogatepass")
    if language == "php" and data.lstrip().startswith(b"<?php"):
        data = data.lstrip()[len(b"<?php"):]
    # has_error is true when the tree contains an ERROR node or a MISSING (inserted) node.
    if not parser.parse(data).root_node.has_error:
        return True
    if spec.member_wrapper is None:
        return False
    prefix, suffix = (part.encode() for part in spec.member_wrapper)
    wrapped = prefix + data + suffix
    root = parser.parse(wrapped).root_node
    # The wrapper must stay one class: code like `} {` would close it and open something else.
    return not root.has_error and root.named_child_count == 1 and root.named_children[0].end_byte == len(wrapped)
