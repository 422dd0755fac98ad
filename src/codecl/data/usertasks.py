"""Tasks from the user's own data (`data.tasks.<NAME>`, SPEC `--tasks NAME=PATH`).

A task is a name, data, a language and a direction (`codecl.config.UserTaskConfig`). Its rows come from

  - a folder (`path`) with `train`, `valid` (`validation`, `dev`) and `test` files — `.jsonl`, `.jsonl.gz`,
    `.json` (a list), `.csv` or `.parquet`; a folder with one data file, or `path` naming one file, is split
    deterministically: each row goes to train/valid/test by a hash of its id (`split_fractions`);
  - a Hugging Face dataset (`hub_dataset`, `hub_config`, `hub_revision`, `hub_splits`) read with `datasets`;
  - the embedded corpus of `language` (`embedded: true`), narrowed by `match`; the corpus's training rows are split
    by `split_fractions` like one file, its valid/test rows stay evaluation rows, and the embedded base never
    pretrains on the task's valid/test pairs.

`format: pairs` rows give the input and target through `input_field` / `target_field`; `format:
codesearchnet` rows go through codecl's CodeSearchNet cleaning, which makes (description, code) pairs, and
the direction picks the input (`code_to_nl`: the code is the input, the description the target).

Errors name the file, the line (1-based; the header is line 1 of a CSV) and the field, and say how to fix
it — a row without the input field, a non-string value, a row whose `language` disagrees, a bad line —
and exit with the data error code (3). Pairs are cleaned (`clean`), filtered by `data.max_target_lines`
and capped by `data.max_*_examples` exactly like the built-in languages (`codecl.data.tasks`).
"""
from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from codecl.config import DataConfig, UserTaskConfig
from codecl.data.clean import CleanStats, Pair, clean_with_records, normalize_whitespace
from codecl.data.records import SPLITS, Record, read_records
from codecl.errors import DataError
from codecl.languages import LANGUAGES, known_languages

_ALIASES = {"train": "train", "training": "train", "valid": "valid", "validation": "valid", "dev": "valid", "val": "valid", "test": "test"}
_SUFFIXES = (".jsonl.gz", ".jsonl", ".json", ".csv", ".parquet")
_MARKER = re.compile(r"^([A-Za-z]+)(?:$|[-_.])")


@dataclass(frozen=True)
class TaskInfo:
    """What evaluation needs to know about a task, built-in or not."""

    name: str
    language: str
    """The code's language: syntax checks and execution."""
    direction: str
    builtin: bool

    @property
    def output_is_code(self) -> bool:
        return self.direction != "code_to_nl"


def task_info(data_cfg: DataConfig, name: str) -> TaskInfo:
    """The task's language and direction: a built-in language is its own nl_to_code task."""
    spec = data_cfg.tasks.get(name)
    if spec is None:
        return TaskInfo(name, name, "nl_to_code", True)
    language = spec.language if spec.language is not None else _load(data_cfg, name).language  # the rows' language field
    return TaskInfo(name, language, spec.direction, False)


# ---------------------------------------------------------------- reading rows


def _suffix(path: Path) -> str | None:
    return next((s for s in _SUFFIXES if path.name.lower().endswith(s)), None)


def _split_of(path: Path) -> str | None:
    m = _MARKER.match(path.name)
    return _ALIASES.get(m.group(1).lower()) if m else None


def _files(name: str, root: Path) -> dict[str, list[Path]] | list[Path]:
    """`{split: [files]}` for a folder with split files; `[files]` for data to split by hash."""
    if not root.exists():
        raise DataError(f"data.tasks.{name}.path: {root} does not exist — give a folder with train/valid/test files or one data file")
    if root.is_file():
        if _suffix(root) is None:
            raise DataError(f"data.tasks.{name}.path: {root} is not a data file — expected {', '.join(_SUFFIXES)}")
        return [root]
    found = sorted(p for p in root.rglob("*") if p.is_file() and _suffix(p) and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not found:
        raise DataError(f"{root}: no data files for task {name!r} — expected train/valid/test files ({', '.join(_SUFFIXES)})")
    by_split: dict[str, list[Path]] = {}
    for path in found:
        split = _split_of(path)
        if split is not None:
            by_split.setdefault(split, []).append(path)
    if not by_split:
        return found
    stray = [p for p in found if _split_of(p) is None]
    if stray:  # e.g. testing.jsonl beside train.jsonl: never ignored in silence
        raise DataError(f"{stray[0]}: task {name!r} has split files (train/valid/test) and this file, whose name names no split — "
                        f"rename it to train/valid/test.<ext> (valid may be validation or dev) or move it out of {root}")
    if "train" not in by_split:
        raise DataError(f"{root}: task {name!r} has {', '.join(sorted(by_split))} files but no train file — add train.jsonl (or .csv/.parquet)")
    return by_split


def _read_csv(path: Path) -> Iterator[Record]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: a spreadsheet BOM is not part of a column name; bad bytes stop the run, named
            reader = csv.DictReader(fh)
            if reader.fieldnames is None:
                return
            for row in reader:
                line = reader.line_num
                if None in row:
                    yield Record(None, str(path), line, f"{path}:{line}: {len(row[None]) + len(reader.fieldnames)} values but the header "
                                 f"names {len(reader.fieldnames)} columns — quote fields that hold commas or newlines")
                    continue
                yield Record(dict(row), str(path), line)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}) — save the file as UTF-8") from None
    except (OSError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read as CSV ({exc}) — fix the file") from exc


def _read_parquet(path: Path) -> Iterator[Record]:
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except ImportError as exc:
        raise DataError(f"{path}: reading Parquet needs pyarrow ({exc}); pip install pyarrow") from None
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise DataError(f"{path}: cannot be read as Parquet ({type(exc).__name__}: {exc}) — fix or re-export the file") from None
    for i, row in enumerate(table.to_pylist(), 1):
        yield Record(row, str(path), i)


def read_rows(path: Path) -> Iterator[Record]:
    suffix = _suffix(path)
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".parquet":
        return _read_parquet(path)
    return read_records(path)


def _hub_rows(name: str, spec: UserTaskConfig, split_name: str) -> Iterator[Record]:
    try:
        import datasets

        rows = datasets.load_dataset(spec.hub_dataset, spec.hub_config, split=split_name,
                                     **({"revision": spec.hub_revision} if spec.hub_revision else {}))
    except ImportError as exc:
        raise DataError(f"data.tasks.{name}.hub_dataset needs the `datasets` package ({exc})") from None
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise DataError(f"data.tasks.{name}: cannot load hub dataset {spec.hub_dataset!r} split {split_name!r} "
                        f"({type(exc).__name__}: {first}) — check hub_dataset/hub_config/hub_splits, or use a local path offline") from None
    origin = f"hub:{spec.hub_dataset}/{spec.hub_config or 'default'}/{split_name}"
    for i, row in enumerate(rows, 1):
        yield Record(dict(row), origin, i)


def _matches(name: str, spec: UserTaskConfig, record: Record) -> bool:
    for item in spec.match:
        field, _, pattern = item.partition("=")
        value = record.fields.get(field.strip())
        if value is None:
            raise DataError(f"{record.origin}: no field {field.strip()!r} for data.tasks.{name}.match "
                            f"(fields: {', '.join(sorted(record.fields))}) — fix the match item {item!r}")
        if re.search(pattern, str(value)) is None:
            return False
    return True


# ---------------------------------------------------------------- rows -> pairs


def _text(record: Record, field: str, key: str, name: str) -> str:
    if field not in record.fields:
        raise DataError(f"{record.origin}: no field {field!r} (fields: {', '.join(sorted(map(str, record.fields)))}) — "
                        f"set data.tasks.{name}.{key} to the field that holds it")
    value = record.fields[field]
    if not isinstance(value, str):
        raise DataError(f"{record.origin}: field {field!r} is {type(value).__name__}, not text — every row's {field} must be a string")
    return value


def _row_id(record: Record, spec: UserTaskConfig, name: str) -> str:
    if spec.id_field:
        value = record.fields.get(spec.id_field)
        if value is None or isinstance(value, (dict, list)) or not str(value).strip():
            raise DataError(f"{record.origin}: no usable id in field {spec.id_field!r} — set data.tasks.{name}.id_field to a field with "
                            f"one id a row, or remove it (rows are then named file:line)")
        return str(value)
    return f"{name}:{Path(record.file).name}:{record.line}"


def _row_language(record: Record, name: str) -> str | None:
    value = record.fields.get("language")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise DataError(f"{record.origin}: field 'language' is {type(value).__name__}, not a language name")
    language = value.strip().lower()
    if language not in LANGUAGES:  # the registry: syntax checks and execution know only these
        raise DataError(f"{record.origin}: field 'language' is {value!r}, not one of {', '.join(known_languages())} — fix the row, or drop the "
                        f"field and set data.tasks.{name}.language")
    return language


class _Loaded:
    """All splits of one user task, cleaned in the order train, valid, test (one duplicate set)."""

    def __init__(self, data_cfg: DataConfig, name: str):
        self.name, self.spec = name, data_cfg.tasks[name]
        self.language = self.spec.language
        self.pairs: dict[str, list[Pair]] = {}
        self.stats: dict[str, CleanStats] = {}
        self.where = ""
        raw = self._raw_splits(data_cfg)
        seen: set = set()
        train_targets: set = set()
        for split in SPLITS:
            stats = CleanStats()
            self.pairs[split] = list(self._pairs(raw.get(split, []), split, seen, train_targets, stats))
            self.stats[split] = stats
        if self.language is None:
            self.language = "python"

    def _raw_splits(self, data_cfg: DataConfig) -> dict[str, list[Record]]:
        spec, name = self.spec, self.name
        if spec.embedded:
            from codecl.data.tasks import embedded_corpus

            folder = embedded_corpus(data_cfg, spec.language) / spec.language
            self.where = f"the embedded {spec.language} corpus"
            # the corpus splits by source file, so one package may sit in one split only: the corpus's training rows are
            # split by `split_fractions` (a hash of each function's url); its valid/test rows stay evaluation rows, so
            # no task ever trains on a function the built-in language task evaluates; pretraining leaves out the task's
            # valid/test pairs (`codecl.model.embedded`)
            splits = self._by_hash(list(read_records(folder / "train.jsonl")))
            for split in ("valid", "test"):
                splits[split] += [r for r in read_records(folder / f"{split}.jsonl") if _matches(name, spec, self._good(r))]
            return splits
        if spec.hub_dataset:
            self.where = f"hub:{spec.hub_dataset}"
            if len(spec.hub_splits) == 1:
                return self._by_hash(list(_hub_rows(name, spec, spec.hub_splits[0])))
            return {s: [r for r in _hub_rows(name, spec, hub) if _matches(name, spec, self._good(r))] for s, hub in zip(SPLITS, spec.hub_splits)}
        root = Path(spec.path).expanduser()
        self.where = str(root)
        files = _files(name, root)
        if isinstance(files, list):
            return self._by_hash([r for f in files for r in read_rows(f)])
        return {s: [r for f in paths for r in read_rows(f) if _matches(name, spec, self._good(r))] for s, paths in files.items()}

    def _good(self, record: Record) -> Record:
        if record.problem is not None:  # user data is never guessed at: a bad line stops the run, named
            raise DataError(record.problem)
        return record

    def _by_hash(self, records: list[Record]) -> dict[str, list[Record]]:
        train_share, valid_share, _ = self.spec.split_fractions
        out: dict[str, list[Record]] = {s: [] for s in SPLITS}
        for record in records:
            if not _matches(self.name, self.spec, self._good(record)):
                continue
            if self.spec.format == "pairs" and not self.spec.embedded:
                key = _row_id(record, self.spec, self.name)
            else:
                key = str(record.fields.get("url") or f"{record.file}:{record.line}")
            u = int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:8], "big") / 2**64
            out["train" if u < train_share else "valid" if u < train_share + valid_share else "test"].append(record)
        return out

    def _pairs(self, records: Iterable[Record], split: str, seen: set, train_targets: set, stats: CleanStats) -> Iterator[Pair]:
        spec, name = self.spec, self.name
        if spec.embedded or spec.format == "codesearchnet":  # the embedded corpus is CodeSearchNet records
            language = spec.language
            if language is None:
                raise DataError(f"data.tasks.{name}.language must be set for format codesearchnet (the records' language)")
            for _, pair in clean_with_records(records, language, seen, stats):
                source, target = (pair.target, pair.source) if spec.direction == "code_to_nl" else (pair.source, pair.target)
                yield Pair(source, target, language, pair.id)
            return
        for record in records:
            stats.records += 1
            self._good(record)
            source, target = _text(record, spec.input_field, "input_field", name), _text(record, spec.target_field, "target_field", name)
            row_language = _row_language(record, name)
            if row_language is not None:
                if self.language is None:
                    self.language = row_language
                elif row_language != self.language:
                    raise DataError(f"{record.origin}: language {row_language!r} but task {name!r} is {self.language!r} "
                                    f"({'data.tasks.' + name + '.language' if spec.language else 'the first rows'}) — one task holds one language")
            if spec.clean:
                source, target = source.strip(), target.strip("\n").rstrip()
                if not source or not target:
                    stats.drop("empty")
                    continue
                key = (normalize_whitespace(source), normalize_whitespace(target))
                if key in seen:
                    stats.drop("duplicate")
                    continue
                if split != "train" and key[1] in train_targets:
                    stats.drop("target_in_train")
                    continue
                seen.add(key)
                if split == "train":
                    train_targets.add(key[1])
            stats.kept += 1
            yield Pair(source, target, self.language or "python", _row_id(record, spec, name))


_LOADED: dict[tuple, _Loaded] = {}


def _key(data_cfg: DataConfig, name: str) -> tuple:
    spec = data_cfg.tasks[name]
    files = ()
    if spec.path:  # a changed file is read again
        root = Path(spec.path).expanduser()
        paths = [root] if root.is_file() else sorted(root.rglob("*")) if root.is_dir() else []
        files = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths if p.is_file())
    return (name, repr(spec), tuple(data_cfg.extra_sources), data_cfg.path, files)


def _load(data_cfg: DataConfig, name: str) -> _Loaded:
    key = _key(data_cfg, name)
    if key not in _LOADED:
        _LOADED[key] = _Loaded(data_cfg, name)
    return _LOADED[key]


def user_pairs(data_cfg: DataConfig, name: str, split: str) -> tuple[list[Pair], CleanStats, str]:
    """The cleaned pairs of user task `name` / `split`, their counts, and where they were read."""
    loaded = _load(data_cfg, name)
    return loaded.pairs[split], loaded.stats[split], loaded.where


def clear_cache() -> None:
    _LOADED.clear()


__all__ = ["TaskInfo", "task_info", "user_pairs", "read_rows", "clear_cache"]
