"""`codecl data check` and `codecl data pairs`: validate CodeSearchNet-format files and show their pairs.

Both read a file or folder (see `codecl.data.records` for layouts), split by split in the
order train, valid, test, others, cleaning with one `seen` set per language so duplicates
across splits count as dropped, exactly as training sees them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from codecl.data.clean import CleanStats, Pair, clean_records
from codecl.data.records import find_data_files, read_records
from codecl.errors import DataError
from codecl.languages import get_language

_NOTES = {
    "docstring_from_code": "records had no `docstring` field; their description was taken from the docstring inside the code",
    "code_from_original_string": "records had no `code` field; `original_string` was used",
}


def _pairs(path: Path, language: str | None, stats: CleanStats, report: Callable[[str], None] | None) -> Iterator[Pair]:
    if language is not None:
        get_language(language)
    seen: set = set()
    for data_file in find_data_files(Path(path), language):
        yield from clean_records(read_records(data_file.path), language, seen, stats, report, file_language=data_file.language)


def check_path(path: Path, language: str | None = None, report: Callable[[str], None] | None = None) -> dict:
    """Validate a file or folder: `{"records": N, "kept": K, "dropped": {reason: n}}`.

    `report(msg)` gets one `file:line: ...` message per malformed line, then one line per
    note (e.g. descriptions taken from the code). Records = kept + all dropped.
    """
    stats = CleanStats()
    for _ in _pairs(Path(path), language, stats, report):
        pass
    if report:
        for note, n in sorted(stats.notes.items()):
            report(f"{path}: {n} {_NOTES.get(note, note)}")
        if stats.dropped.get("missing_language"):
            report(f"{path}: {stats.dropped['missing_language']} records name no language — pass --language")
    return stats.as_dict()


def iter_pairs(path: Path, language: str) -> Iterator[dict]:
    """The `{"source", "target"}` pairs that training and evaluation see for the records at `path`."""
    if language is None:
        raise DataError("data pairs needs --language")
    for pair in _pairs(Path(path), language, CleanStats(), None):
        yield {"source": pair.source, "target": pair.target}
