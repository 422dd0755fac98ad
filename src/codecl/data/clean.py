"""Cleaning CodeSearchNet records into (description, code) pairs, as CodeSearchNet and CodeXGLUE did.

A record is kept when: its fields are present and well typed; the description (the
docstring's first paragraph) has at least 3 word tokens, at most 256 tokens, and looks
English; the function is not a test (name starts with `test` or contains `_test`) nor a
constructor (`__init__`, JS `constructor`, PHP `__construct`, Ruby `initialize`, a Java method
named as its class); its code, with the docstring removed, parses (Python) and has at least 3
non-blank lines; and no earlier kept record had the same code after whitespace
normalisation (`seen` is shared across splits, train first, so valid/test never repeat train).
Every drop is counted under a named reason.

The docstring is removed from the target code: Python's docstring statement by its AST
location; for the other languages CodeSearchNet's `code` holds the function without the
comment before it, and a leading doc comment, when present, is removed (Java, PHP and
JavaScript `/** */`, Go `//` lines, Ruby `#` lines or `=begin`/`=end`). Constructor names and comment
syntax are each language's (`codecl.languages.LanguageSpec`: `constructors`, `doc_comment`, `line_comment`).

Sources: CodeSearchNet (arXiv 1909.09436) section 3.1; CodeXGLUE code-to-text (arXiv 2102.04664).
"""
from __future__ import annotations

import ast
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator

from codecl.data.records import Record
from codecl.languages import LANGUAGES, LanguageSpec, find_language, get_language

MIN_DOCSTRING_TOKENS = 3
MAX_DOCSTRING_TOKENS = 256
MIN_CODE_LINES = 3


@dataclass(frozen=True)
class Pair:
    source: str
    """The cleaned natural-language description (model input)."""
    target: str
    """The function's code without its docstring (reference output)."""
    language: str
    """Language name (the task)."""
    id: str
    """Stable identifier: the record's url, else its id, else `file:line`."""


@dataclass
class CleanStats:
    records: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    """Dropped records by reason."""
    notes: Counter = field(default_factory=Counter)
    """Things done to kept or dropped records that are not drops (e.g. `docstring_from_code`)."""

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def as_dict(self) -> dict:
        return {"records": self.records, "kept": self.kept, "dropped": dict(sorted(self.dropped.items()))}


# ---------------------------------------------------------------- descriptions

_TOKEN = re.compile(r"\w+|[^\w\s]")
# A line that starts the parameter/return part of a docstring ends the description.
_SECTION_LINE = re.compile(
    r"^(@\w+|:(param|parameter|arg|argument|key|keyword|type|returns?|rtype|raises?|except|exception|var|ivar|cvar|yields?)\b"
    r"|>>>|<p\b|(args|arguments|parameters|params|returns?|yields?|raises?|examples?|notes?|attributes|see also|usage|warnings?)\s*:?\s*$)",
    re.IGNORECASE,
)
_JSDOC_INLINE = re.compile(r"\{@(?:link|linkcode|linkplain|code)\s+([^}|\s]+)[\s|]*([^}]*)\}")


def jsdoc_description(comment: str) -> str:
    """The description of a `/** ... */` comment: delimiters and `*` margins removed, `@tags` dropped.

    The description is the text before the first block tag, else (AngularJS's `@ngdoc` style)
    the text of the `@description` tag.
    """
    body = comment.strip()
    body = body[3:] if body.startswith("/**") else body
    body = body[:-2] if body.endswith("*/") else body
    free: list[str] = []
    tagged: list[str] | None = None
    current = free
    for line in body.splitlines():
        line = re.sub(r"^\s*\*( ?)", "", line).rstrip()
        tag = re.match(r"\s*@(\w+)\s?(.*)", line)
        if tag:  # JSDoc block tags (@param, @returns, ...) end the description
            if tag.group(1) in ("description", "desc") and tagged is None:
                tagged = [tag.group(2)]
                current = tagged
            else:
                current = []
            continue
        current.append(line)
    text = "\n".join(free).strip() or "\n".join(tagged or []).strip()
    return _JSDOC_INLINE.sub(lambda m: m.group(2).strip() or m.group(1), text)


def first_paragraph(docstring: str) -> str:
    """The docstring's first paragraph, whitespace collapsed (CodeSearchNet's summary)."""
    if docstring.lstrip().startswith("/**"):
        docstring = jsdoc_description(docstring)
    out: list[str] = []
    for line in docstring.strip().splitlines():
        line = line.strip()
        if not line or _SECTION_LINE.match(line):
            break
        out.append(line)
    return " ".join(" ".join(out).split())


def description_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _looks_english(text: str) -> bool:
    # CodeXGLUE dropped non-English docstrings; most non-ASCII letters signal another language.
    return sum(c.isascii() for c in text) >= 0.9 * len(text)


# ---------------------------------------------------------------- code


def normalize_whitespace(code: str) -> str:
    return " ".join(code.split())


def _parse_python(code: str) -> ast.Module | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _first_function(tree: ast.Module):
    return next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)


def _docstring_node(func) -> ast.Expr | None:
    first = func.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first
    return None


def _line_starts(data: bytes) -> list[int]:
    starts = [0]
    pos = data.find(b"\n")
    while pos >= 0:
        starts.append(pos + 1)
        pos = data.find(b"\n", pos + 1)
    return starts


def strip_python_docstring(code: str) -> tuple[str | None, str | None, str | None]:
    """Remove the docstring statement of the function in `code` by its AST location.

    Returns `(target, docstring, drop_reason)`. Everything but the docstring's own lines is kept
    byte-exact. `drop_reason` is `unparseable`, `not_a_function` or `empty_body` (the docstring
    was the whole body); `docstring` is `inspect.cleandoc`'d, None when there is none.
    """
    tree = _parse_python(code)
    if tree is None:
        return None, None, "unparseable"
    func = _first_function(tree)
    if func is None:
        return None, None, "not_a_function"
    node = _docstring_node(func)
    if node is None:
        return code, None, None
    docstring = ast.get_docstring(func, clean=True)
    if len(func.body) == 1:
        return None, docstring, "empty_body"
    data = code.encode("utf-8", errors="surrogatepass")
    starts = _line_starts(data)
    line_start = starts[node.lineno - 1]  # ast offsets are 1-based lines, UTF-8 byte columns
    start = line_start + node.col_offset
    end = starts[node.end_lineno - 1] + node.end_col_offset
    newline = data.find(b"\n", end)
    line_end = len(data) if newline < 0 else newline + 1
    rest_of_line = data[end:line_end].strip()
    if rest_of_line.startswith(b";"):  # `"""doc"""; x = 1`: keep what follows, in the docstring's place
        after = data[end:].lstrip(b" \t")[1:].lstrip(b" \t")
        new = data[:start] + after
    elif data[line_start:start].strip():  # shares its first line with code before it
        new = data[:start] + data[line_end:]
    else:  # owns its lines (the usual case): remove them whole
        new = data[:line_start] + data[line_end:]
    target = new.decode("utf-8", errors="surrogatepass")
    if _parse_python(target) is None:
        return None, docstring, "unparseable"
    return target, docstring, None


_BLOCK_DOC_COMMENT = re.compile(r"\A\s*/\*\*.*?\*/[ \t]*\n?", re.DOTALL)


@lru_cache(maxsize=None)
def _leading_doc_comment(spec: LanguageSpec | None) -> re.Pattern:
    """A leading doc comment of a language (`LanguageSpec.doc_comment`): `/** ... */`, or for `lines`
    languages a block of `line_comment` lines (or a `doc_block_comment`, Ruby's `=begin`...`=end`)."""
    if spec is None or spec.doc_comment != "lines":
        return _BLOCK_DOC_COMMENT
    pattern = rf"(?:[ \t]*{re.escape(spec.line_comment)}[^\n]*\n)+"
    if spec.doc_block_comment:
        begin, end = (re.escape(part) for part in spec.doc_block_comment)
        pattern = rf"(?:{pattern}|{begin}\b.*?^{end}[^\n]*\n)"
    return re.compile(rf"\A{pattern}", re.DOTALL | re.MULTILINE)


@lru_cache(maxsize=None)
def _line_comment_marker(spec: LanguageSpec) -> re.Pattern:
    """The comment marker removed from each line of a `lines` doc comment."""
    return re.compile(spec.doc_line_marker or rf"^\s*{re.escape(spec.line_comment)}\s?")

_DIRECTIVE = re.compile(r"^\s*(//go:|//line |//export |#!|#\s*(-\*-|frozen_string_literal|encoding:|typed:))")


def strip_leading_doc_comment(code: str, language: str = "javascript") -> tuple[str, str | None]:
    """Remove a leading doc comment of `language`; returns `(code, comment or None)`.

    Java, PHP and JavaScript: `/** ... */`; Go: `//` lines; Ruby: `#` lines or `=begin`...`=end`
    (the spec's `doc_comment`, `line_comment` and `doc_block_comment`).
    """
    match = _leading_doc_comment(find_language(language)).match(code)
    if not match:
        return code, None
    return code[match.end():], match.group(0)


def line_comment_description(comment: str, language: str) -> str:
    """The text of a block of Go `//` or Ruby `#` comment lines (or a Ruby `=begin` block):
    markers removed, compiler directives (`//go:noinline`) and magic comments dropped."""
    spec = get_language(language)
    lines = comment.strip().splitlines()
    if spec.doc_block_comment and lines and lines[0].startswith(spec.doc_block_comment[0]):
        return "\n".join(lines[1:-1]).strip()
    marker = _line_comment_marker(spec)
    return "\n".join(marker.sub("", line).rstrip() for line in lines if not _DIRECTIVE.match(line)).strip()


def doc_comment_description(comment: str, language: str) -> str:
    """The description of a doc comment of `language` (JSDoc/Javadoc/PHPDoc or line comments)."""
    spec = find_language(language)
    if spec is not None and spec.doc_comment == "lines" and not comment.lstrip().startswith("/*"):
        return line_comment_description(comment, language)
    return jsdoc_description(comment)


_NAME_PATTERNS = (
    re.compile(r"^\s*(?:async\s+)?def\s+(?:self\.)?([\w?!=]+)"),  # Python, Ruby
    re.compile(r"^\s*func\s+(?:\([^)]*\)\s*)?(\w+)"),  # Go
    re.compile(r"^[\w\s]*?function\s*&?\s*\*?\s*([\w$]+)"),  # JavaScript, PHP
    re.compile(r"^\s*(?:@\w+(?:\([^)]*\))?\s+)*(?:[\w$<>\[\],.?]+\s+)*?\*?\s*([\w$]+)\s*\("),  # Java, JS methods
)
_ANNOTATION_LINE = re.compile(r"^(?:@[\w.]+(?:\(.*\))?\s*)+$|^#\[.*\]$")


def function_name(fields: dict, code: str) -> str | None:
    """The bare function name: last part of `func_name`, else read from the code's first line."""
    name = fields.get("func_name")
    if isinstance(name, str) and name.strip():
        return re.split(r"[.#:]+", name.strip())[-1]
    lines = [line.strip() for line in code.splitlines() if line.strip()]
    # the first line that is not an annotation or decorator (`@Override`, PHP `#[Pure]`)
    first_line = next((line for line in lines if not _ANNOTATION_LINE.match(line)), "")
    for pattern in _NAME_PATTERNS:
        match = pattern.match(first_line)
        if match:
            return match.group(1)
    return None


def is_test_function(name: str) -> bool:
    return name.lower().startswith("test") or "_test" in name.lower()


def is_constructor(name: str, fields: dict | None = None, language: str | None = None) -> bool:
    """`name` is a constructor of `language` (None: Python or JavaScript), one of its spec's `constructors`;
    for a language whose constructors are named as their class (Java), `func_name` `Class.Class`
    (CodeSearchNet's spelling) is one."""
    if language is None:
        return name in get_language("python").constructors + get_language("javascript").constructors
    spec = find_language(language)
    if spec is None:
        return False
    qualified = (fields or {}).get("func_name")
    if spec.constructor_is_class_name and isinstance(qualified, str):
        parts = qualified.strip().split(".")
        return len(parts) >= 2 and parts[-1] == parts[-2]
    return name in spec.constructors


# ---------------------------------------------------------------- records -> pairs


def record_id(fields: dict, origin_file: str, line: int) -> str:
    for key in ("url", "idx", "id"):
        value = fields.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return str(value)
    return f"{Path(origin_file).name}:{line}"


def clean_fields(fields: dict, language: str, notes: Counter | None = None) -> tuple[str, str] | str:
    """`(source, target)` for a kept record, else the drop reason (a string)."""
    notes = notes if notes is not None else Counter()
    code = fields.get("code")
    if code is None and isinstance(fields.get("original_string"), str):
        code = fields["original_string"]
        notes["code_from_original_string"] += 1
    if code is None:
        return "missing_field"
    if not isinstance(code, str):
        return "wrong_type"
    if not code.strip():
        return "missing_field"
    for key in ("docstring", "func_name"):
        if fields.get(key) is not None and not isinstance(fields[key], str):
            return "wrong_type"
    name = function_name(fields, code)
    if name is not None and is_test_function(name):
        return "test_function"
    if name is not None and is_constructor(name, fields, language):
        return "constructor"

    spec = find_language(language)
    if spec is not None and spec.doc_comment == "docstring":  # Python
        target, code_docstring, reason = strip_python_docstring(code)
    else:
        target, comment = strip_leading_doc_comment(code, language)
        code_docstring, reason = (doc_comment_description(comment, language) if comment else None), None
    docstring = fields.get("docstring")
    if not (isinstance(docstring, str) and docstring.strip()):
        if not code_docstring:
            return reason or "missing_field"
        docstring = code_docstring
        notes["docstring_from_code"] += 1
    if reason:
        return reason

    source = first_paragraph(docstring)
    tokens = description_tokens(source)
    n_words = sum(1 for t in tokens if t[0].isalnum() or t[0] == "_")  # punctuation does not count
    if n_words < MIN_DOCSTRING_TOKENS:
        return "short_docstring"
    if len(tokens) > MAX_DOCSTRING_TOKENS:
        return "long_docstring"
    if not _looks_english(source):
        return "non_english"
    if sum(1 for line in target.splitlines() if line.strip()) < MIN_CODE_LINES:
        return "short_code"
    return source, target


def resolve_language(fields: dict | None, language: str | None, file_language: str | None) -> str:
    """The record's language, or a drop reason prefixed `!`."""
    field_language = fields.get("language") if fields else None
    if field_language is not None and not isinstance(field_language, str):
        return "!wrong_type"
    field_language = field_language.strip().lower() if field_language else None
    wanted = language or file_language
    if wanted and field_language and field_language != wanted:
        return "!wrong_language"
    chosen = wanted or field_language
    if not chosen:
        return "!missing_language"
    if chosen not in LANGUAGES:
        return "!unknown_language"
    return chosen


def clean_records(
    records: Iterable[Record],
    language: str | None,
    seen: set,
    stats: CleanStats,
    report: Callable[[str], None] | None = None,
    file_language: str | None = None,
) -> Iterator[Pair]:
    """Pairs of the records that pass cleaning; drops are counted in `stats`, malformed lines reported.

    `seen` holds `(language, normalised code)` of every kept pair; pass the same set to every
    split of a language, train first, to remove duplicates across splits.
    """
    for _, pair in clean_with_records(records, language, seen, stats, report, file_language):
        yield pair


def clean_with_records(records, language, seen, stats, report=None, file_language=None) -> Iterator[tuple[Record, Pair]]:
    """Like `clean_records`, yielding each kept record with its pair."""
    for record in records:
        stats.records += 1
        if record.problem is not None:
            stats.drop("malformed")
            if report:
                report(record.problem)
            continue
        lang = resolve_language(record.fields, language, file_language)
        if lang.startswith("!"):
            stats.drop(lang[1:])
            continue
        result = clean_fields(record.fields, lang, stats.notes)
        if isinstance(result, str):
            stats.drop(result)
            continue
        source, target = result
        key = (lang, normalize_whitespace(target))
        if key in seen:
            stats.drop("duplicate")
            continue
        seen.add(key)
        stats.kept += 1
        yield record, Pair(source, target, lang, record_id(record.fields, record.file, record.line))
