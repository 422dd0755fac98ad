"""Code-generation benchmarks with unit tests, and the samples to check against them.

Benchmark formats (one JSON object a line, `.jsonl` or `.jsonl.gz`):
- HumanEval (openai/human-eval): task_id "HumanEval/N", prompt, canonical_solution,
  test (defines `check(candidate)`), entry_point.
- HumanEval-X (THUDM/CodeGeeX): task_id "Python/N" or "JavaScript/N", prompt, declaration,
  canonical_solution, test (calls the check itself), example_test; no entry_point.
- MBXP (amazon-science/mxeval): task_id "MBPP/N" (Python) or "MBJSP/N" (JavaScript),
  language, prompt, test, entry_point, canonical_solution, description.
The language is the `language` field when present, else the task_id prefix (`_PREFIXES`).

A name that is not a local file, e.g. `openai_humaneval` or `THUDM/humaneval-x:js`
(`repo[:config]`), is loaded from the Hugging Face hub with `datasets` (split "test").

Samples: JSONL of {"task_id": ..., "completion": ...}, the completion continuing the prompt
(as in human-eval); several lines per task_id give n samples of that problem.
"""
from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from codecl.errors import DataError
from codecl.languages import executable_languages, get_language

LANGUAGES = tuple(executable_languages())
"""The languages the sandbox runs (`LanguageSpec.executes` in the registry `codecl.languages.LANGUAGES`)."""
_PREFIXES = {"humaneval": "python", "python": "python", "mbpp": "python",
             "javascript": "javascript", "js": "javascript", "mbjsp": "javascript"}
_LANGUAGE_NAMES = {alias: name for name in LANGUAGES for alias in (name, *get_language(name).aliases)}


@dataclass(frozen=True)
class Problem:
    task_id: str
    """As the benchmark spells it, e.g. "HumanEval/0", "JavaScript/12", "MBJSP/3"."""
    language: str
    """"python" or "javascript"."""
    prompt: str
    """Code the completion continues (signature and docstring)."""
    test: str
    """Unit tests (see `programs.assemble_program` for how they are run)."""
    entry_point: str | None = None
    """Function under test; HumanEval and MBXP Python append `check(entry_point)`."""
    canonical_solution: str | None = None
    """Reference completion, when the benchmark ships one."""


def _language_of(task_id: str, record: dict, where: str) -> str:
    if "language" in record:
        name = record["language"]
        if not isinstance(name, str) or name.lower() not in _LANGUAGE_NAMES:
            raise DataError(f"{where}: field 'language' is {name!r}; supported: {', '.join(LANGUAGES)}")
        return _LANGUAGE_NAMES[name.lower()]
    prefix = task_id.split("/", 1)[0].lower()
    if prefix not in _PREFIXES:
        raise DataError(f"{where}: cannot tell the language of task_id {task_id!r} (known prefixes: "
                        f"{', '.join(sorted(_PREFIXES))}); add a 'language' field ({', '.join(LANGUAGES)})")
    return _PREFIXES[prefix]


def _string_field(record: dict, name: str, where: str, required: bool = True) -> str | None:
    if name not in record or record[name] is None:
        if required:
            raise DataError(f"{where}: field '{name}' is missing")
        return None
    value = record[name]
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{name}' must be a string, got {type(value).__name__}")
    return value


def problem_from_record(record, where: str) -> Problem:
    """Validate one benchmark record; `where` ("file:line") prefixes every error."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    task_id = _string_field(record, "task_id", where)
    if not task_id.strip():
        raise DataError(f"{where}: field 'task_id' is empty")
    return Problem(task_id=task_id, language=_language_of(task_id, record, where),
                   prompt=_string_field(record, "prompt", where), test=_string_field(record, "test", where),
                   entry_point=_string_field(record, "entry_point", where, required=False) or None,
                   canonical_solution=_string_field(record, "canonical_solution", where, required=False))


def _json_lines(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed JSON) for every non-blank line of a .jsonl or .jsonl.gz file."""
    try:
        with path.open("rb") as fh:
            gzipped = fh.read(2) == b"\x1f\x8b"
        opener = gzip.open if gzipped else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder; pass a .jsonl or .jsonl.gz file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read it ({exc}); is it a complete .jsonl or .jsonl.gz file?") from None


def _index(problems: Iterator[tuple[str, Problem]], source: str) -> dict[str, Problem]:
    by_id: dict[str, Problem] = {}
    first_seen: dict[str, str] = {}
    for where, problem in problems:
        if problem.task_id in by_id:
            raise DataError(f"{where}: duplicate task_id {problem.task_id!r} (first at {first_seen[problem.task_id]})")
        by_id[problem.task_id] = problem
        first_seen[problem.task_id] = where
    if not by_id:
        raise DataError(f"{source}: no problems in the benchmark")
    return by_id


def _looks_like_hub_id(name: str) -> bool:
    return not name.startswith((".", "/", "~")) and not name.endswith((".jsonl", ".gz", ".json")) and name.count("/") <= 1


def load_benchmark(source: str | Path) -> dict[str, Problem]:
    """Problems by task_id, in file order, from a local JSONL(.gz) file or a hub dataset name."""
    path = Path(source)
    if not path.exists() and _looks_like_hub_id(str(source)):
        return _load_hub(str(source))
    return _index(((f"{path}:{lineno}", problem_from_record(record, f"{path}:{lineno}"))
                   for lineno, record in _json_lines(path)), str(path))


def _load_hub(name: str) -> dict[str, Problem]:
    repo, _, config = name.partition(":")
    try:
        import datasets
    except ImportError:
        raise DataError(f"{name}: not a local file, and loading it from the hub needs `pip install datasets`") from None
    try:
        rows = datasets.load_dataset(repo, config or None, split="test")
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, ValueError, ...)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"cannot load benchmark {name!r}: no such local file, and the Hugging Face hub failed: "
                        f"{reason} (offline? pass a local .jsonl or .jsonl.gz file)") from None
    return _index(((f"{name}[{i}]", problem_from_record(dict(row), f"{name}[{i}]")) for i, row in enumerate(rows)), name)


def load_samples(path: str | Path, problems: dict[str, Problem]) -> dict[str, list[str]]:
    """Completions by task_id (in file order) from a samples JSONL; every task_id must be in `problems`."""
    path = Path(path)
    samples: dict[str, list[str]] = {}
    for lineno, record in _json_lines(path):
        where = f"{path}:{lineno}"
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        task_id = _string_field(record, "task_id", where)
        completion = _string_field(record, "completion", where)
        if task_id not in problems:
            example = next(iter(problems))
            raise DataError(f"{where}: unknown task_id {task_id!r}; the benchmark has {len(problems)} problems, "
                            f"e.g. {example!r}")
        samples.setdefault(task_id, []).append(completion)
    if not samples:
        raise DataError(f"{path}: no samples")
    return samples
