"""Reading CodeSearchNet-format records from files, folders and the Hugging Face hub.

Formats: `.jsonl`, `.jsonl.gz` (one JSON object a line) and `.json` (a list of objects).
Folder layouts, recognised from path components and file names:
  - CodeSearchNet original: `<lang>/final/jsonl/<split>/<lang>_<split>_<n>.jsonl.gz`
  - CodeXGLUE code-to-text, and codecl's built corpus: `<lang>/<split>.jsonl`
  - a single language's folder: `<split>.jsonl` or `<lang>_<split>_<n>.jsonl.gz`
Every record carries its origin (file, line); a line that is not a JSON object becomes a
record with a `problem` (reported and counted as `malformed`), never a crash.
"""
from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from codecl.errors import DataError
from codecl.languages import get_language, known_languages

SPLITS = ("train", "valid", "test")
_SPLIT_ALIASES = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid", "test": "test"}
_DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json")


@dataclass(frozen=True)
class Record:
    fields: dict | None
    """The record's JSON object (None when the line is malformed)."""
    file: str
    """Where it came from (a path, or `hub:<dataset>/<config>/<split>`)."""
    line: int
    """1-based line (JSONL) or item number (JSON list)."""
    problem: str | None = None
    """Why the line could not be read: `file:line: <what> — <fix>`."""

    @property
    def origin(self) -> str:
        return f"{self.file}:{self.line}"


def is_data_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(_DATA_SUFFIXES)


def read_records(path: Path) -> Iterator[Record]:
    """Records of one `.jsonl`, `.jsonl.gz` or `.json` file, in file order."""
    if path.name.endswith(".json"):
        yield from _read_json_list(path)
        return
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", errors="replace") as fh:  # -sig: a leading BOM is not JSON
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                yield _parse_line(line, path, lineno)
    except (OSError, EOFError) as exc:  # e.g. a truncated or non-gzip `.gz`
        raise DataError(f"{path}: cannot be read ({exc}) — re-download or rebuild the file") from exc


def _parse_line(line: str, path: Path, lineno: int) -> Record:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return Record(None, str(path), lineno, f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}) — fix or delete that line")
    if not isinstance(obj, dict):
        return Record(None, str(path), lineno, f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__} — each line must be one record")
    return Record(obj, str(path), lineno)


def _read_json_list(path: Path) -> Iterator[Record]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig", errors="replace"))
    except json.JSONDecodeError as exc:
        yield Record(None, str(path), exc.lineno, f"{path}:{exc.lineno}: not valid JSON ({exc.msg}) — a .json file must hold one list of records")
        return
    if isinstance(data, dict):  # a single record
        data = [data]
    if not isinstance(data, list):
        yield Record(None, str(path), 1, f"{path}:1: expected a JSON list of records, got {type(data).__name__} — use a list or JSONL")
        return
    for i, obj in enumerate(data, 1):
        if isinstance(obj, dict):
            yield Record(obj, str(path), i)
        else:
            yield Record(None, str(path), i, f"{path}:{i}: item {i} is a {type(obj).__name__}, not a record object — remove it")


# ---------------------------------------------------------------- layouts


def _tokens(path: Path) -> list[str]:
    name = path.name
    for suffix in _DATA_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return [t for t in re.split(r"[_\-.]", name) if t]


def split_of(path: Path, root: Path) -> str | None:
    """train/valid/test from the file name or a folder between `root` and the file."""
    parts = list(path.relative_to(root).parts[:-1]) if path != root else []
    for token in reversed(_tokens(path) + [p.lower() for p in parts]):
        if token.lower() in _SPLIT_ALIASES:
            return _SPLIT_ALIASES[token.lower()]
    return None


def language_of(path: Path, root: Path) -> str | None:
    """A known language named by a folder (or the file name) at or below `root`."""
    parts = [root.name] + (list(path.relative_to(root).parts[:-1]) if path != root else [])
    names = known_languages()  # the registry, `codecl.languages.LANGUAGES`
    for token in reversed(parts + _tokens(path)):
        if token.lower() in names:
            return token.lower()
        for name in names:  # e.g. `codexglue_code_to_text_python`
            if token.lower().endswith("_" + name):
                return name
    return None


@dataclass(frozen=True)
class DataFile:
    path: Path
    split: str | None
    language: str | None


def find_data_files(path: Path, language: str | None = None) -> list[DataFile]:
    """Data files under `path` (a file or a folder), with the split and language their path names.

    With `language`, files whose path names another language are skipped.
    """
    if language is not None:
        get_language(language)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder — give a CodeSearchNet .jsonl/.jsonl.gz/.json file or folder")
    if path.is_file():
        if not path.name.endswith(_DATA_SUFFIXES):
            raise DataError(f"{path}: not a CodeSearchNet data file — expected .jsonl, .jsonl.gz or .json")
        return [DataFile(path, split_of(path, path.parent), language_of(path, path.parent))]
    files = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            file = Path(dirpath) / name
            if name.startswith(".") or not name.endswith(_DATA_SUFFIXES) or name == "stats.json":
                continue
            lang = language_of(file, path)
            if language is not None and lang is not None and lang != language:
                continue
            files.append(DataFile(file, split_of(file, path), lang))
    if not files:
        wanted = f" for {language}" if language else ""
        raise DataError(f"{path}: no .jsonl/.jsonl.gz/.json data files{wanted} — expected <lang>/<split>.jsonl or <lang>/final/jsonl/<split>/*.jsonl.gz")
    order = {s: i for i, s in enumerate(SPLITS)}
    return sorted(files, key=lambda f: (order.get(f.split, len(SPLITS)), str(f.path)))


# ---------------------------------------------------------------- hub

_HUB_FIELDS = {  # claudios/code_search_net (and the original CSN hub script) -> CodeSearchNet names
    "repository_name": "repo",
    "func_path_in_repository": "path",
    "whole_func_string": "original_string",
    "func_code_string": "code",
    "func_code_tokens": "code_tokens",
    "func_documentation_string": "docstring",
    "func_documentation_tokens": "docstring_tokens",
    "func_code_url": "url",
    "split_name": "partition",
}
_HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
_OFFLINE_HINT = "use data.source=local with data.path=<a CodeSearchNet folder>, or data.source=embedded (the default, offline)"


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def read_hub_records(dataset: str, language: str, split: str, revision: str | None = None) -> Iterator[Record]:
    """Records of a Hugging Face dataset (e.g. `claudios/code_search_net` or
    `google/code_x_glue_ct_code_to_text`) for one language config and split, at `revision`
    (data.hub_revision: a commit hash, tag or branch; None = the latest).

    Offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, or no connection) and not cached -> DataError.
    """
    get_language(language)
    if split not in _HUB_SPLITS:
        raise DataError(f"unknown split {split!r}; known: {', '.join(_HUB_SPLITS)}")
    offline = _env_true("HF_HUB_OFFLINE") or _env_true("HF_DATASETS_OFFLINE")
    try:
        import datasets

        pinned = {"revision": revision} if revision else {}
        rows = datasets.load_dataset(dataset, language, split=_HUB_SPLITS[split], **pinned)
    except ImportError as exc:
        raise DataError(f"data.source=hub needs the `datasets` package ({exc}); {_OFFLINE_HINT}") from None
    except Exception as exc:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ...)
        if offline:
            why = "offline mode is set (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE) and it is not cached"
        elif any(word in type(exc).__name__ for word in ("Connection", "Timeout", "Offline", "LocalEntryNotFound")):
            why = f"the hub cannot be reached (no network?): {_first_line(exc)}"
        else:
            why = f"{type(exc).__name__}: {_first_line(exc)}"
        at = f" at revision {revision}" if revision else ""
        raise DataError(f"cannot load hub dataset {dataset!r}{at} ({language}, {split}): {why}; {_OFFLINE_HINT}") from None
    origin = f"hub:{dataset}/{language}/{split}"
    for i, row in enumerate(rows, 1):
        yield Record({_HUB_FIELDS.get(k, k): v for k, v in row.items()}, origin, i)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
