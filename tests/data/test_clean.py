"""codecl.data.clean: descriptions, docstring removal, drop reasons, deduplication across splits."""
from __future__ import annotations

from collections import Counter

import pytest

from codecl.data.clean import (CleanStats, clean_fields, clean_records, first_paragraph, jsdoc_description,
                               strip_leading_doc_comment, strip_python_docstring)
from codecl.data.records import Record

BODY = "    a = 1\n    b = 2\n    return a + b\n"


def py(doc: str = '"""Add two small numbers together."""', name: str = "f", body: str = BODY) -> str:
    return f"def {name}(x):\n    {doc}\n{body}"


# ---------------------------------------------------------------- descriptions


@pytest.mark.parametrize("docstring, expected", [
    ("Return the sum.\n\n    More details here.", "Return the sum."),
    ("Return the\n    sum of  both.\n\nArgs:\n  x: y", "Return the sum of both."),
    ("Compute it.\n:param x: the input\n:returns: y", "Compute it."),
    ("Compute it.\nArgs:\n    x: y", "Compute it."),
    ("Compute it.\n>>> f(1)\n2", "Compute it."),
    ("\n\n  Leading blank lines.\n", "Leading blank lines."),
])
def test_first_paragraph(docstring, expected):
    assert first_paragraph(docstring) == expected


def test_jsdoc_description_drops_tags_and_margins():
    comment = "/**\n * Checks if `value` is {@link Array array-like}.\n *\n * More.\n * @param {*} value The value.\n * @returns {boolean}\n */"
    assert jsdoc_description(comment) == "Checks if `value` is array-like.\n\nMore."
    assert first_paragraph(comment) == "Checks if `value` is array-like."
    angular = "/**\n * @ngdoc function\n * @name angular.lowercase\n *\n * @description Converts the string\n * to lowercase.\n * @param {string} s\n */"
    assert jsdoc_description(angular) == "Converts the string\nto lowercase."
    assert jsdoc_description("/** @private */") == ""


# ---------------------------------------------------------------- Python docstring removal


def test_docstring_lines_are_removed_and_the_rest_kept_byte_exact():
    code = 'def save(self, path=None):\n        """Save the model.\n\n        Long text.\n        """\n\n        if path:   # odd  spacing\n            return  (path ,\n   1)\n'
    target, docstring, reason = strip_python_docstring(code)
    assert reason is None and docstring == "Save the model.\n\nLong text."
    assert target == "def save(self, path=None):\n\n        if path:   # odd  spacing\n            return  (path ,\n   1)\n"


def test_docstring_removal_counts_utf8_bytes_not_characters():
    code = 'def f(x="é"):\n    """Grüße — ünïcode docstring."""  # trailing comment\n    return "ü" + x\n'
    target, _, reason = strip_python_docstring(code)
    assert reason is None and target == 'def f(x="é"):\n    return "ü" + x\n'


@pytest.mark.parametrize("code, expected", [
    ('def f(x): "Doc string here."; return x\n', "def f(x): return x\n"),
    ('def f(x):\n    """Doc."""; y = x\n    return y\n', "def f(x):\n    y = x\n    return y\n"),
    ("async def f(x):\n    'Doc.'\n    return await x\n", "async def f(x):\n    return await x\n"),
    ("@deco\ndef f(x):\n    r'''Doc.'''\n    return x\n", "@deco\ndef f(x):\n    return x\n"),
    ("def f(x):\n    return x\n", "def f(x):\n    return x\n"),  # no docstring: unchanged
])
def test_docstring_removal_edge_cases(code, expected):
    target, _, reason = strip_python_docstring(code)
    assert (target, reason) == (expected, None)


@pytest.mark.parametrize("code, reason", [
    ('def f():\n    """Only a docstring."""\n', "empty_body"),
    ('def f():\n    print "python 2"\n', "unparseable"),
    ("x = 1\n", "not_a_function"),
])
def test_docstring_removal_failures(code, reason):
    assert strip_python_docstring(code)[2] == reason


def test_leading_jsdoc_is_stripped_from_javascript():
    code, comment = strip_leading_doc_comment("/**\n * Doc.\n */\nfunction f() {\n  return 1;\n}")
    assert code == "function f() {\n  return 1;\n}" and comment.startswith("/**")
    assert strip_leading_doc_comment("// not jsdoc\nfunction f() {}") == ("// not jsdoc\nfunction f() {}", None)


# CodeSearchNet-style records of the other four languages: `code` without the comment (the usual
# case) or with it (then the comment is stripped and, without a `docstring` field, describes it).
JAVA_CODE = "public int add(int a, int b) {\n    int c = a + b;\n    return c;\n}"
GO_CODE = "func (s *Stack) Add(a, b int) int {\n\tc := a + b\n\treturn c\n}"
PHP_CODE = "public function add($a, $b)\n{\n    return $a + $b;\n}"
RUBY_CODE = "def add(a, b)\n  c = a + b\n  c\nend"


@pytest.mark.parametrize("language, comment, code", [
    ("java", "/**\n * Adds the two numbers given.\n * @param a the first\n */\n", JAVA_CODE),
    ("go", "// Add adds the two numbers given.\n//\n// It never overflows.\n//go:noinline\n", GO_CODE),
    ("php", "/**\n * Adds the two numbers given.\n *\n * @return int\n */\n", PHP_CODE),
    ("ruby", "# Adds the two numbers given.\n# @param a [Integer]\n", RUBY_CODE),
    ("ruby", "=begin\nAdds the two numbers given.\n=end\n", RUBY_CODE),
])
def test_leading_doc_comments_of_other_languages(language, comment, code):
    assert strip_leading_doc_comment(comment + code, language) == (code, comment)
    assert strip_leading_doc_comment(code, language) == (code, None)
    source, target = clean_fields({"code": comment + code, "func_name": "Calc.add"}, language)
    assert target == code and source.endswith("the two numbers given.")
    assert clean_fields({"code": code, "docstring": "Adds the two numbers given.", "func_name": "Calc.add"}, language) == (
        "Adds the two numbers given.", code)


@pytest.mark.parametrize("language, func_name, code, constructor", [
    ("java", "Box.Box", "public Box() {\n  a();\n  b();\n}", True),
    ("java", "Box.get", JAVA_CODE, False),
    ("php", "User.__construct", PHP_CODE, True),
    ("ruby", "Cart.initialize", RUBY_CODE, True),
    ("python", "initialize", "def initialize():\n    a = 1\n    b = 2\n    return a", False),  # a Ruby name only
    ("go", "Stack.Add", GO_CODE, False),
])
def test_constructors_per_language(language, func_name, code, constructor):
    result = clean_fields({"code": code, "docstring": "Builds the thing from parts.", "func_name": func_name}, language)
    assert (result == "constructor") is constructor


@pytest.mark.parametrize("language, code, name", [
    ("go", GO_CODE, "Add"), ("go", "func Add(a int) int {", "Add"), ("ruby", "def self.empty?\n  true\nend", "empty?"),
    ("java", "@Override\npublic static <T> List<T> copyOf(List<T> xs) {", "copyOf"),
    ("java", "@Override public String toString() {", "toString"), ("python", "@cache\ndef f(x):", "f"),
    ("php", "public static function &make($a) {", "make"), ("javascript", "async function load(url) {", "load"),
])
def test_function_name_from_code(language, code, name):
    from codecl.data.clean import function_name

    assert function_name({}, code) == name


def test_javadoc_paragraph_tag_ends_the_description():
    assert first_paragraph("/**\n * Returns the value.\n * <p>Never null.\n */") == "Returns the value."


# ---------------------------------------------------------------- drop reasons


@pytest.mark.parametrize("fields, reason", [
    ({"docstring": "Add two numbers."}, "missing_field"),
    ({"code": "", "docstring": "Add two numbers."}, "missing_field"),
    ({"code": ["def f(): pass"], "docstring": "Add two numbers."}, "wrong_type"),
    ({"code": py(), "docstring": 3}, "wrong_type"),
    ({"code": py(), "docstring": "Add two numbers.", "func_name": 5}, "wrong_type"),
    ({"code": py(), "docstring": "Add it"}, "short_docstring"),
    ({"code": py(), "docstring": "word " * 300}, "long_docstring"),
    ({"code": py(), "docstring": "Добавить два числа вместе сейчас."}, "non_english"),
    ({"code": py(body="    return x\n"), "docstring": "Return the value x."}, "short_code"),
    ({"code": py(name="test_add"), "docstring": "Add two numbers."}, "test_function"),
    ({"code": py(name="add_test_case"), "docstring": "Add two numbers."}, "test_function"),
    ({"code": py(name="__init__"), "docstring": "Add two numbers."}, "constructor"),
    ({"code": py(), "func_name": "Adder.__init__", "docstring": "Add two numbers."}, "constructor"),
    ({"code": 'def f():\n    """Only a docstring here."""\n', "docstring": "Only a docstring here."}, "empty_body"),
])
def test_python_drop_reasons(fields, reason):
    assert clean_fields(fields, "python") == reason


def test_python_kept_pair_and_docstring_from_code():
    notes = Counter()
    source, target = clean_fields({"code": py('"""Add two small numbers.\n\n    Details."""')}, "python", notes)
    assert source == "Add two small numbers."
    assert target == "def f(x):\n" + BODY and notes["docstring_from_code"] == 1


def test_javascript_constructor_and_pair():
    code = "constructor(a) {\n  this.a = a;\n  this.b = 2;\n}"
    assert clean_fields({"code": code, "docstring": "Make a new thing."}, "javascript") == "constructor"
    code = "/** Sum the two numbers given. */\nfunction add(a, b) {\n  const c = a + b;\n  return c;\n}"
    source, target = clean_fields({"code": code}, "javascript")
    assert source == "Sum the two numbers given." and target.startswith("function add")


# ---------------------------------------------------------------- records -> pairs


def rec(fields, line=1):
    return Record(fields, "f.jsonl", line)


def test_clean_records_counts_everything_and_dedups_across_splits_train_first():
    seen, train_stats, valid_stats = set(), CleanStats(), CleanStats()
    good = {"code": py(), "docstring": "Add two numbers.", "url": "u1"}
    train = [rec(good, 1), rec({"code": py(body=BODY.replace("a + b", "a  +  b")), "docstring": "Same code, spaced."}, 2),  # duplicate after normalisation
             Record(None, "f.jsonl", 3, "f.jsonl:3: not valid JSON — fix"), rec({"code": 1}, 4)]
    reports = []
    pairs = list(clean_records(train, "python", seen, train_stats, reports.append))
    assert [p.id for p in pairs] == ["u1"] and pairs[0].language == "python"
    assert train_stats.as_dict() == {"records": 4, "kept": 1, "dropped": {"duplicate": 1, "malformed": 1, "wrong_type": 1}}
    assert reports == ["f.jsonl:3: not valid JSON — fix"]
    valid = [rec({**good, "url": "u2"}, 1), rec({"code": py(body=BODY + "    # x\n"), "docstring": "Add, then comment."}, 2)]
    kept = list(clean_records(valid, "python", seen, valid_stats))
    assert [p.id for p in kept] == ["f.jsonl:2"]  # no url or id: file:line
    assert valid_stats.dropped == {"duplicate": 1}


def test_language_is_checked_against_the_record():
    stats = CleanStats()
    records = [rec({"code": py(), "docstring": "Add two numbers.", "language": "javascript"}),
               rec({"code": py(), "docstring": "Add two numbers."}),
               rec({"code": py(), "docstring": "Add two numbers.", "language": "cobol"})]
    assert [p.language for p in clean_records(records, None, set(), stats)] == ["javascript"]  # the record's own field
    assert stats.dropped == {"missing_language": 1, "unknown_language": 1}
    stats2 = CleanStats()
    assert len(list(clean_records(records, "python", set(), stats2))) == 1
    assert stats2.dropped == {"wrong_language": 2}
