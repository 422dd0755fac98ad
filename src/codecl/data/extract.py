"""Extracting documented functions from source files as CodeSearchNet-format records.

Python (with `ast`): module-level functions and methods (also under `if`/`try` blocks, and in
nested classes; not functions nested in functions) that have a docstring. `code` is the
exact source segment from `def` to the end of the body, so it still holds the docstring, as
in CodeSearchNet, and cleaning removes it the same way for both.

JavaScript (with tree-sitter): function declarations, methods (class and object-literal),
named function expressions, and function expressions or arrow functions assigned to a name,
documented by an immediately preceding `/** ... */` comment; the description is that
comment without its JSDoc `@tags`. `code` is the function's own text (without the comment),
kept only when it passes `parse_ok`, so every reference passes the syntax check.

Java, Go, PHP and Ruby (with tree-sitter): methods and constructors (Java), functions and methods
(Go), functions and methods of classes, traits and interfaces (PHP), and `def` / `def self.`
methods (Ruby), documented by the comment directly above them: a `/** */` comment (Java, PHP)
or a block of `//` (Go) or `#` (Ruby) comment lines, separated from the function by whitespace
only, with no blank line. As for JavaScript, `code` is the function without its comment and
must pass `parse_ok`; bodiless declarations (abstract methods, Go assembly stubs) are skipped.
`func_name` is `Class.method` (`Receiver.Method` in Go), as in CodeSearchNet; a file is a split unit.

Which of these a language gets, and its node types and comment style, are its `LanguageSpec`'s
(`codecl.languages`: `extractor`, `extraction`, `doc_comment`): TypeScript uses the JavaScript
extractor with its own grammar, its class methods named `Class.method`.
"""
from __future__ import annotations

import ast
import bisect
import re
import warnings
from collections import Counter
from collections.abc import Mapping
from functools import lru_cache, partial

from codecl.data.clean import description_tokens, doc_comment_description, first_paragraph, jsdoc_description
from codecl.languages import Extraction, find_language, get_language, get_parser, get_tree_sitter_language, known_languages, parse_ok

MAX_JS_FUNCTION_LINES = 200
"""Longer JavaScript functions (whole libraries wrapped in one function) are not extracted."""
MAX_FUNCTION_LINES = 200
"""Longer Java, Go, PHP and Ruby functions are not extracted either (generated tables, giant switches)."""
_CODE_TOKEN = re.compile(r"[A-Za-z_$][\w$]*|\d[\w.]*|\S")


def make_record(repo: str, path: str, func_name: str, language: str, code: str, docstring: str, lines: tuple[int, int]) -> dict:
    """A record with CodeSearchNet's fields (`url` points into the source tree; `partition` is set later)."""
    return {
        "repo": repo,
        "path": path,
        "func_name": func_name,
        "original_string": code,
        "language": language,
        "code": code,
        "code_tokens": _CODE_TOKEN.findall(code),
        "docstring": docstring,
        "docstring_tokens": description_tokens(first_paragraph(docstring)),
        "url": f"{repo}/{path}#L{lines[0]}-L{lines[1]}",
        "partition": None,
    }


# ---------------------------------------------------------------- Python


def _python_functions(node: ast.AST, prefix: str = ""):
    """(qualified name, node) of functions at module or class level, in source order."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + child.name, child
        elif isinstance(child, ast.ClassDef):
            yield from _python_functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):
            yield from _python_functions(child, prefix)  # if / try / with / for blocks


def extract_python(text: str, repo: str, path: str, dropped: Counter) -> list[tuple[str, dict]]:
    """(split key, record) of the documented functions of one Python file; misses are counted in `dropped`.

    The split key is the file (`repo/path`): a module's functions and methods share one split.
    """
    text = text.replace("\r\n", "\n")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        dropped["unparseable_file"] += 1
        return []
    data = text.encode("utf-8", errors="surrogatepass")
    starts = [0] + [m.end() for m in re.finditer(b"\n", data)]
    records = []
    for name, func in _python_functions(tree):
        docstring = ast.get_docstring(func, clean=True)
        if not docstring or not docstring.strip():
            dropped["no_docstring"] += 1
            continue
        # ast offsets: 1-based lines, UTF-8 byte columns; lineno is the `def` line, after decorators
        begin = starts[func.lineno - 1] + func.col_offset
        end = starts[func.end_lineno - 1] + func.end_col_offset
        code = data[begin:end].decode("utf-8", errors="surrogatepass")
        records.append((f"{repo}/{path}", make_record(repo, path, name, "python", code, docstring, (func.lineno, func.end_lineno))))
    return records


# ---------------------------------------------------------------- JavaScript

_FUNCTION = "[(function_expression) (arrow_function) (generator_function)]"
_JS_QUERY = f"""
(function_declaration name: (identifier) @name) @func
(generator_function_declaration name: (identifier) @name) @func
(method_definition name: (_) @name) @func
(variable_declarator name: (identifier) @name value: {_FUNCTION} @func)
(assignment_expression left: [(identifier) (member_expression)] @name right: {_FUNCTION} @func)
(pair key: (_) @name value: {_FUNCTION} @func)
(function_expression name: (identifier) @name) @func
"""
# Nodes between a function and the statement its doc comment precedes.
_WRAPPERS = {"variable_declarator", "lexical_declaration", "variable_declaration", "assignment_expression",
             "expression_statement", "export_statement", "pair"}


@lru_cache(maxsize=None)
def _js_query(language: str = "javascript"):
    import tree_sitter

    return tree_sitter.Query(get_tree_sitter_language(language), _JS_QUERY)


def _js_matches(root, language: str = "javascript"):
    import tree_sitter

    query = _js_query(language)
    if hasattr(tree_sitter, "QueryCursor"):  # tree-sitter >= 0.25
        return tree_sitter.QueryCursor(query).matches(root)
    return query.matches(root)


def _doc_comment(func) -> str | None:
    """The `/** */` comment right above the statement that holds `func`, if any."""
    anchor = func
    while anchor.parent is not None and anchor.parent.type in _WRAPPERS:
        anchor = anchor.parent
    prev = anchor.prev_sibling
    if prev is None or prev.type != "comment" or prev.end_point[0] < anchor.start_point[0] - 1:
        return None
    text = prev.text.decode("utf-8", errors="replace")
    return text if text.startswith("/**") else None


def _container_name(func, containers: frozenset[str]) -> str | None:
    """The name of the innermost container (`LanguageSpec.extraction.containers`) around `func`, if any."""
    node = func.parent
    while node is not None:
        if node.type in containers and node.child_by_field_name("name") is not None:
            return _text(node.child_by_field_name("name"))
        node = node.parent
    return None


def extract_javascript(text: str, repo: str, path: str, dropped: Counter, language: str = "javascript") -> list[tuple[str, dict]]:
    """(split key, record) of the JSDoc-documented functions of one JavaScript file (or of another
    language whose spec has the `jsdoc` extractor and whose grammar has JavaScript's node types:
    TypeScript; when its spec lists `extraction.containers`, methods are named `Class.method`).

    Single-file libraries (lodash.js: 17,000 lines, 470 documented functions) make the file a
    poor split unit, so a JavaScript function's split key is its package (`repo`) and the name of
    its outermost documented enclosing function: nested functions share their container's split,
    and same-named functions of one package (lodash.js / lodash.core.js) share a split too.
    Functions over MAX_JS_FUNCTION_LINES are dropped (`long_code`) so they group nothing.
    """
    spec = get_language(language)
    containers = spec.extraction.containers if spec.extraction is not None else frozenset()
    tree = get_parser(language).parse(text.encode("utf-8", errors="surrogatepass"))
    found, done = [], set()
    for _, captures in _js_matches(tree.root_node, language):
        func, name = captures["func"][0], captures["name"][0]
        if (func.start_byte, func.end_byte) in done:  # a named function expression also matches its assignment
            continue
        done.add((func.start_byte, func.end_byte))
        comment = _doc_comment(func)
        docstring = jsdoc_description(comment) if comment else ""
        if not docstring:
            dropped["no_docstring"] += 1
        elif func.end_point[0] - func.start_point[0] >= MAX_JS_FUNCTION_LINES:
            dropped["long_code"] += 1
        else:
            func_name = name.text.decode("utf-8", errors="replace").strip("'\"")
            container = _container_name(func, containers) if containers and func.type == "method_definition" else None
            found.append((func, f"{container}.{func_name}" if container else func_name, docstring))
    found.sort(key=lambda item: (item[0].start_byte, -item[0].end_byte))
    records, outer_end, group = [], -1, ""
    for func, func_name, docstring in found:
        if func.start_byte >= outer_end:  # not inside the previous outermost function: a new group
            outer_end, group = func.end_byte, func_name
        code = func.text.decode("utf-8", errors="replace")
        if not parse_ok(code, language):
            dropped["unparseable"] += 1
            continue
        lines = (func.start_point[0] + 1, func.end_point[0] + 1)
        records.append((f"{repo}::{group}", make_record(repo, path, func_name, language, code, docstring, lines)))
    return records


# ---------------------------------------------------------------- Java, Go, PHP, Ruby


@lru_cache(maxsize=None)
def _regex(pattern: str, flags: int = 0) -> re.Pattern:
    return re.compile(pattern, flags)


def _walk(root, grammar: Extraction):
    """(functions with their container names, comments) of a tree, in source order."""
    functions, comments = [], []
    stack = [(root, ())]
    while stack:
        node, scope = stack.pop()
        if node.type in grammar.comments:
            comments.append(node)
            continue
        if node.type in grammar.functions:
            functions.append((node, scope))
        if node.type in grammar.containers and node.child_by_field_name("name") is not None:
            scope = scope + (_text(node.child_by_field_name("name")),)
        stack.extend((child, scope) for child in reversed(node.children))
    return functions, comments


def _text(node) -> str:
    return node.text.decode("utf-8", errors="replace")


def _own_line(data: bytes, node) -> bool:
    """Only whitespace precedes `node` on its first line."""
    return not data[data.rfind(b"\n", 0, node.start_byte) + 1:node.start_byte].strip()


def _adjacent(data: bytes, end: int, start: int) -> bool:
    """Only whitespace, and no blank line, between byte offsets `end` and `start`."""
    gap = data[end:start]
    return not gap.strip() and gap.count(b"\n") <= 1


def _doc_comment_above(data: bytes, func, comments: list, ends: list[int], block_doc: bool) -> str | None:
    """The doc comment directly above `func`: one `/** */` comment, or a block of line comments."""
    i = bisect.bisect_right(ends, func.start_byte) - 1
    start, parts = func.start_byte, []
    while i >= 0 and _adjacent(data, comments[i].end_byte, start) and _own_line(data, comments[i]):
        text = _text(comments[i])
        if block_doc:
            return text if text.startswith("/**") else None
        if text.startswith("/*"):  # a block comment ends a block of line comments
            break
        parts.append(text)
        start, i = comments[i].start_byte, i - 1
    return "\n".join(reversed(parts)) or None


def _qualified_name(grammar: Extraction, func, scope: tuple[str, ...]) -> str:
    name = _text(func.child_by_field_name("name"))
    if grammar.qualifier is not None and func.type == grammar.qualifier[0] and scope == ():
        # Go's receiver type (`func (s *Stack) Len()` -> Stack.Len), Ruby's `def self.f` object
        _, field, pattern = grammar.qualifier
        owner = func.child_by_field_name(field)
        match = _regex(pattern).match(_text(owner)) if owner is not None else None
        scope = (match.group(1),) if match else ()
    return ".".join(scope[-1:] + (name,))


def extract_documented(language: str, text: str, repo: str, path: str, dropped: Counter) -> list[tuple[str, dict]]:
    """(split key, record) of the documented functions of one file of a language with the `tree`
    extractor (Java, Go, PHP, Ruby): its spec's `extraction` node types and `doc_comment` style.

    The split key is the file (`repo/path`), as for Python: a file's functions share one split.
    """
    spec = get_language(language)
    grammar = spec.extraction
    if grammar.generated_marker and _regex(grammar.generated_marker, re.MULTILINE).search(text[:4096]):
        dropped["generated_file"] += 1
        return []
    data = text.replace("\r\n", "\n").encode("utf-8", errors="surrogatepass")
    functions, comments = _walk(get_parser(language, whole_file=True).parse(data).root_node, grammar)
    comments.sort(key=lambda node: node.end_byte)
    ends = [node.end_byte for node in comments]
    records = []
    for func, scope in functions:
        if func.child_by_field_name("name") is None or (grammar.needs_body and func.child_by_field_name("body") is None):
            dropped["no_body"] += 1  # abstract and interface methods, Go assembly stubs
            continue
        comment = _doc_comment_above(data, func, comments, ends, spec.doc_comment == "block")
        docstring = doc_comment_description(comment, language) if comment else ""
        if not docstring:
            dropped["no_docstring"] += 1
            continue
        if func.end_point[0] - func.start_point[0] >= MAX_FUNCTION_LINES:
            dropped["long_code"] += 1
            continue
        code = data[func.start_byte:func.end_byte].decode("utf-8", errors="replace")
        if not parse_ok(code, language):
            dropped["unparseable"] += 1
            continue
        lines = (func.start_point[0] + 1, func.end_point[0] + 1)
        name = _qualified_name(grammar, func, scope)
        records.append((f"{repo}/{path}", make_record(repo, path, name, language, code, docstring, lines)))
    return records


class _Extractors(Mapping):
    """Per language: `extract(text, repo, path, dropped) -> [(split key, record)]`, chosen by its spec's
    `extractor` (`codecl.languages.LANGUAGES`; languages without one are not listed)."""

    def __getitem__(self, language: str):
        spec = find_language(language)
        if spec is None or spec.extractor is None:
            raise KeyError(language)
        if spec.extractor == "ast":
            return extract_python
        if spec.extractor == "jsdoc":
            return extract_javascript if language == "javascript" else partial(extract_javascript, language=language)
        return partial(extract_documented, language)

    def __iter__(self):
        return iter([name for name in known_languages() if get_language(name).extractor is not None])

    def __len__(self) -> int:
        return len(list(iter(self)))


EXTRACTORS = _Extractors()
"""Per language: `extract(text, repo, path, dropped) -> [(split key, record)]`."""
