"""The language registry: every language codecl knows, and how to check that code parses.

`LANGUAGES` is the one place a language is described (a `LanguageSpec`): its tree-sitter grammar,
file suffixes, comment syntax, constructors, where its documented functions are in a source file,
where `codecl data build` finds its code, and whether generated code in it can be executed. Config
validation, corpus building, cleaning, record reading and execution read it; adding a language is
adding a spec (here, or from a plugin's `codecl.languages` entry point, see `codecl.registry`).

`parse_ok` is the syntax check behind the `syntax_pass` metric and the corpus builder:
Python uses `ast.parse` (the reference parser); every other language uses a tree-sitter
parse with no ERROR or MISSING nodes. The tree-sitter grammars (`tree-sitter-<lang>` from
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
from codecl.registry import Registry

DOC_COMMENTS = ("docstring", "block", "lines")
"""How functions are documented: a docstring in the body (Python), one `/** ... */` comment right
above the function (JSDoc, Javadoc, PHPDoc), or a block of line comments right above it (Go, Ruby)."""
EXTRACTORS = ("ast", "jsdoc", "tree")
"""How `codecl.data.extract` finds documented functions in a source file: `ast` (Python's `ast`,
docstrings), `jsdoc` (the JavaScript query: declarations, methods, and function expressions or arrow
functions assigned to a name, under a `/** */` comment), `tree` (the node types of `Extraction`)."""


@dataclass(frozen=True)
class Extraction:
    """Where the documented functions of a tree-sitter grammar are (`codecl.data.extract.extract_documented`)."""

    functions: frozenset[str]
    """Node types of the functions to extract."""
    containers: frozenset[str] = frozenset()
    """Node types whose `name` qualifies the functions inside them (`Class.method`)."""
    comments: frozenset[str] = frozenset({"comment"})
    """Node types of comments."""
    needs_body: bool = True
    """A function without a `body` field (an abstract method, a Go assembly stub) is skipped (Ruby's
    methods have no `body` field)."""
    qualifier: tuple[str, str, str] | None = None
    """`(function node type, field, regex)`: a function of that type outside any container is qualified
    by group 1 of the regex matched at the start of that field's text (Go's receiver type, the object
    of Ruby's `def self.f`); no match: unqualified."""
    generated_marker: str | None = None
    """Regex (multiline) of the marker of generated files, searched in a file's first 4096 characters:
    such files are not extracted (Go's `// Code generated ... DO NOT EDIT.`)."""


@dataclass(frozen=True)
class LanguageSpec:
    name: str
    """Name as CodeSearchNet spells it (also the task name)."""
    grammar_module: str
    """Python module of the tree-sitter grammar (`pip install tree-sitter-<lang>`)."""
    grammar_function: str
    """Function of `grammar_module` returning the grammar's language pointer (for code units)."""
    extensions: tuple[str, ...]
    """File suffixes of source files in this language (the first one names them in messages)."""
    member_wrapper: tuple[str, str] | None = None
    """Code that does not parse as a program is retried inside this (prefix, suffix): CodeSearchNet's
    Java/PHP/JavaScript functions are often class methods (`name(args) {...}`), complete as class members."""

    file_grammar_function: str | None = None
    """The grammar of whole source files, when it differs (PHP files start with `<?php`)."""
    description: str = ""
    """One line for `codecl list languages`."""
    syntax_check: str = "tree_sitter"
    """`tree_sitter` (a parse without ERROR or MISSING nodes) or `ast` (Python's own parser)."""
    open_tag: str | None = None
    """A tag that may open a unit (PHP's `<?php`), removed before the syntax check."""
    line_comment: str | None = None
    """The line-comment marker (`//`, `#`)."""
    doc_comment: str = "block"
    """How functions are documented (`DOC_COMMENTS`): `docstring`, `block` (`/** ... */` above the
    function) or `lines` (a block of `line_comment` lines above it)."""
    doc_line_marker: str | None = None
    """For `lines` doc comments: regex of the marker removed from each line; None: `line_comment` and
    one optional space."""
    doc_block_comment: tuple[str, str] | None = None
    """Another doc comment form for `lines` languages, delimited at line starts (Ruby's `=begin`/`=end`)."""
    constructors: tuple[str, ...] = ()
    """Names of constructors (cleaning drops them, as CodeSearchNet did)."""
    constructor_is_class_name: bool = False
    """A method named as its class is a constructor (Java: `func_name` `Class.Class`)."""
    extractor: str | None = "tree"
    """How `codecl data build` finds documented functions (`EXTRACTORS`); None: it does not."""
    extraction: Extraction | None = None
    """Node types of functions, containers and comments (the `tree` extractor; `jsdoc` reads `containers`
    to qualify methods as `Class.method` when given)."""
    skip_file_suffixes: tuple[str, ...] = ()
    """Source files whose names end so (tests, declaration files) are not extracted."""
    skip_minified: bool = False
    """Minified source files (`.min.js`, very long lines) are not extracted."""
    default_sources: str | None = None
    """`"module:function"` returning the installed sources of this language (a `codecl.data.build.Source`,
    a list of them, or None); languages naming the same function share its sources (read once)."""
    source_install: str | None = None
    """How to install a default source (the message when there is none)."""
    executes: bool = False
    """Generated code in this language runs against unit-test benchmarks (`codecl.execution`, whose
    sandbox runs Python and JavaScript)."""
    aliases: tuple[str, ...] = ()
    """Other spellings benchmarks use for the language (`py`, `js`)."""

    def __post_init__(self):
        problems = []
        if self.syntax_check not in ("tree_sitter", "ast"):
            problems.append(f"syntax_check must be tree_sitter or ast, got {self.syntax_check!r}")
        if self.doc_comment not in DOC_COMMENTS:
            problems.append(f"doc_comment must be one of {', '.join(DOC_COMMENTS)}, got {self.doc_comment!r}")
        if self.doc_comment == "lines" and not (self.line_comment or self.doc_line_marker):
            problems.append("doc_comment 'lines' needs line_comment")
        if self.extractor is not None and self.extractor not in EXTRACTORS:
            problems.append(f"extractor must be one of {', '.join(EXTRACTORS)} or None, got {self.extractor!r}")
        if self.extractor == "tree" and self.extraction is None:
            problems.append("extractor 'tree' needs extraction (the node types of functions)")
        if problems:
            raise ConfigError(f"language {self.name!r}: " + "; ".join(problems))

    @property
    def pip_name(self) -> str:
        return self.grammar_module.replace("_", "-")


_CLASS = ("class _ {\n", "\n}")
_PYTHON_AND_JAVASCRIPT_SOURCES = "codecl.data.build:_python_and_javascript_sources"
LANGUAGES: Registry[LanguageSpec] = Registry(
    "language", LanguageSpec, group="codecl.languages",
    reserved={name: "a language is a task name, and a task may not take the name of a run's own stage or folder"
              for name in ("base", "joint", "predictions", "router")})  # config._RESERVED_NAMES
"""Every language, by name (CodeSearchNet's six first, in its order)."""
for _spec in (
    LanguageSpec("python", "tree_sitter_python", "language", (".py",), description="Python (checked with ast.parse)",
                 syntax_check="ast", line_comment="#", doc_comment="docstring", constructors=("__init__",),
                 extractor="ast", skip_file_suffixes=("_test.py",), default_sources=_PYTHON_AND_JAVASCRIPT_SOURCES,
                 executes=True, aliases=("py",)),
    LanguageSpec("javascript", "tree_sitter_javascript", "language", (".js", ".mjs", ".cjs"), _CLASS,
                 description="JavaScript (JSDoc-documented functions)", line_comment="//", constructors=("constructor",),
                 extractor="jsdoc", skip_file_suffixes=(".test.js", ".spec.js"), skip_minified=True,
                 default_sources=_PYTHON_AND_JAVASCRIPT_SOURCES, executes=True, aliases=("js",)),
    LanguageSpec("java", "tree_sitter_java", "language", (".java",), _CLASS, description="Java (Javadoc-documented methods)",
                 line_comment="//", constructor_is_class_name=True,
                 extraction=Extraction(frozenset({"method_declaration", "constructor_declaration"}),
                                       frozenset({"class_declaration", "interface_declaration", "enum_declaration", "record_declaration"}),
                                       frozenset({"block_comment", "line_comment"})),
                 skip_file_suffixes=("Test.java", "Tests.java")),
    LanguageSpec("go", "tree_sitter_go", "language", (".go",), description="Go (functions documented by // lines)",
                 line_comment="//", doc_comment="lines",
                 extraction=Extraction(frozenset({"function_declaration", "method_declaration"}),
                                       qualifier=("method_declaration", "receiver", r"\(\s*(?:\w+\s+)?\*?\s*(\w+)"),
                                       generated_marker=r"^// Code generated .* DO NOT EDIT\.$"),  # https://go.dev/s/generatedcode
                 skip_file_suffixes=("_test.go",), default_sources="codecl.data.build:go_source",
                 source_install="pip install 'codecl[go]' (the Go distribution, with its standard library)"),
    LanguageSpec("php", "tree_sitter_php", "language_php_only", (".php",), _CLASS, "language_php",
                 description="PHP (PHPDoc-documented functions; code without <?php)", open_tag="<?php", line_comment="//",
                 constructors=("__construct",),
                 extraction=Extraction(frozenset({"function_definition", "method_declaration"}),
                                       frozenset({"class_declaration", "interface_declaration", "trait_declaration", "enum_declaration"})),
                 skip_file_suffixes=("Test.php",)),
    LanguageSpec("ruby", "tree_sitter_ruby", "language", (".rb",), description="Ruby (methods documented by # lines)",
                 line_comment="#", doc_comment="lines", doc_line_marker=r"^\s*#+\s?", doc_block_comment=("=begin", "=end"),
                 constructors=("initialize",),
                 extraction=Extraction(frozenset({"method", "singleton_method"}), frozenset({"class", "module"}), needs_body=False,
                                       qualifier=("singleton_method", "object", r"(?s)(.*)")),
                 skip_file_suffixes=("_test.rb", "_spec.rb")),
    # TypeScript: not in CodeSearchNet; extracted like JavaScript, methods named Class.method; not executed.
    LanguageSpec("typescript", "tree_sitter_typescript", "language_typescript", (".ts", ".mts", ".cts"), _CLASS,
                 description="TypeScript (JSDoc-documented functions; not executed)", line_comment="//",
                 constructors=("constructor",), extractor="jsdoc",
                 extraction=Extraction(frozenset({"function_declaration", "generator_function_declaration", "method_definition"}),
                                       frozenset({"class_declaration", "abstract_class_declaration", "interface_declaration"})),
                 skip_file_suffixes=(".test.ts", ".spec.ts", ".d.ts", ".d.mts", ".d.cts", ".test.mts", ".spec.mts",
                                     ".test.cts", ".spec.cts")),
):
    LANGUAGES.register(_spec)
del _spec


def known_languages() -> list[str]:
    return LANGUAGES.names()


def find_language(name) -> LanguageSpec | None:
    """The spec of `name`, None when no language has that name."""
    try:
        return LANGUAGES.get(name) if name in LANGUAGES else None
    except TypeError:  # not hashable
        return None


def get_language(name: str) -> LanguageSpec:
    """The spec of `name`; an unknown name raises ConfigError listing the known ones."""
    spec = find_language(name)
    if spec is not None:
        return spec
    if isinstance(name, str) and name in LANGUAGES.broken():
        LANGUAGES.get(name)  # raises, naming the plugin that failed to load and why
    raise ConfigError(f"unknown language {name!r}; known: {', '.join(known_languages())}")


def executable_languages() -> list[str]:
    """The languages whose generated code can be run against unit tests (`LanguageSpec.executes`)."""
    return [spec.name for spec in LANGUAGES if spec.executes]


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
    a program, or for languages with a `member_wrapper` (Java, PHP, JavaScript, TypeScript) a class
    member (a method on its own). PHP code is checked without `<?php` (as CodeSearchNet stores it);
    a leading tag (`open_tag`) is allowed."""
    spec = get_language(language)  # unknown name -> ConfigError, even for Python
    if spec.syntax_check == "ast":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. SyntaxWarning for invalid escape sequences
                ast.parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return False
        return True
    parser = get_parser(language)
    data = code.encode("utf-8", errors="surrogatepass")
    tag = spec.open_tag.encode() if spec.open_tag else None
    if tag and data.lstrip().startswith(tag):
        data = data.lstrip()[len(tag):]
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
