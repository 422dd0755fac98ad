"""Task data: the cleaned (description, code) pairs of one language and split, from the configured source.

`data.source`:
  - `embedded`: the corpus `codecl.data.build` makes from installed source code (Python,
    JavaScript and, with `codecl[go]`, Go) and the folders of `data.extra_sources` (any of the six
    languages), built once per language into `data.path` or the user cache and reused (its
    `<lang>/stats.json`, written last, marks it complete and records the hash of what it was built from);
  - `local`: CodeSearchNet files under `data.path` (layouts in `codecl.data.records`);
  - `hub`: a Hugging Face dataset (`data.hub_dataset`), which needs the network or its cache.
Pairs are cleaned per language with one duplicate set, train first, so valid/test pairs that
repeat training code are removed; then functions over `max_target_lines` are dropped, and the
split is capped at `max_train_examples` (train) or `max_valid_examples` (valid/test),
deterministically: pairs are ordered by a hash of their id and the first N kept.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

from codecl.config import DataConfig
from codecl.data.build import STATS_FILE, Source, as_sources, build_corpus, default_sources, missing_source_message, source_files, sources_key
from codecl.data.clean import CleanStats, Pair, clean_records
from codecl.data.records import SPLITS, Record, find_data_files, read_hub_records, read_records
from codecl.errors import CodeclError, DataError
from codecl.fileio import read_json
from codecl.languages import get_language
from codecl.paths import cache_dir

EXTRA_SOURCES_HINT = "set data.extra_sources: --set 'data.extra_sources=[FOLDER]'"


# ---------------------------------------------------------------- the embedded corpus


@lru_cache(maxsize=16)
def _embedded_sources(extra_sources: tuple[str, ...], language: str) -> tuple[tuple[Source, ...], str, int]:
    """The sources of `language`'s embedded corpus, their hash, and how many files they hold."""
    sources = default_sources([language]) + as_sources([Path(p) for p in extra_sources])
    files = source_files(sources, [language])
    return tuple(sources), sources_key(sources, [language], files), len(files[language])


def _is_complete(folder: Path, language: str, key: str) -> bool:
    stats_file = folder / language / STATS_FILE
    if not stats_file.is_file():
        return False
    try:
        stats = read_json(stats_file)
    except (CodeclError, OSError):  # a corrupted stats file means an incomplete corpus: rebuild it
        return False
    files_present = all((folder / language / f"{split}.jsonl").is_file() for split in SPLITS)
    return files_present and stats.get("sources_key") == key


def embedded_corpus(data_cfg: DataConfig, language: str) -> Path:
    """The folder holding `language`'s embedded corpus (`<folder>/<language>/{split}.jsonl`), built
    first when missing or built from other sources. Each language is built on its own: in the user
    cache under the hash of its sources, or in `data.path`, where languages sit side by side."""
    sources, key, n_files = _embedded_sources(tuple(data_cfg.extra_sources), language)
    if not n_files:
        raise DataError(f"the embedded corpus has no {language} code — " + missing_source_message(language, EXTRA_SOURCES_HINT))
    folder = Path(data_cfg.path).expanduser() if data_cfg.path else cache_dir() / "corpus" / key
    if not _is_complete(folder, language, key):
        build_corpus([language], folder, source_list=list(sources), key=key)
    return folder


# ---------------------------------------------------------------- per-language loading


class _LanguageData:
    """The cleaned splits of one language, loaded in the order train, valid, test (shared `seen`)."""

    def __init__(self, language: str, read_split: Callable[[str], Iterable[Record]], where: str):
        self.language, self.read_split, self.where = language, read_split, where
        self.seen: set = set()
        self.pairs: dict[str, list[Pair]] = {}
        self.stats: dict[str, CleanStats] = {}

    def split(self, split: str) -> tuple[list[Pair], CleanStats]:
        for name in SPLITS[: SPLITS.index(split) + 1]:
            if name not in self.pairs:
                stats = CleanStats()
                self.pairs[name] = list(clean_records(self.read_split(name), self.language, self.seen, stats))
                self.stats[name] = stats
        return self.pairs[split], self.stats[split]


def _local_reader(path: Path, language: str) -> Callable[[str], Iterable[Record]]:
    files = find_data_files(path, language)

    def read_split(split: str) -> Iterable[Record]:
        chosen = [f for f in files if f.split == split]
        if not chosen:
            found = ", ".join(sorted({f.split or "none" for f in files}))
            raise DataError(f"{path}: no {language} {split} file (splits found: {found}) — expected <lang>/{split}.jsonl or <lang>/final/jsonl/{split}/*.jsonl.gz")
        for data_file in chosen:
            yield from read_records(data_file.path)

    return read_split


_LOADED: dict[tuple, _LanguageData] = {}


def clear_cache() -> None:
    """Forget the pairs and corpus locations loaded so far in this process (e.g. after files change)."""
    from codecl.data.usertasks import clear_cache as clear_user_tasks

    _LOADED.clear()
    _embedded_sources.cache_clear()
    clear_user_tasks()


def _language_data(data_cfg: DataConfig, language: str) -> _LanguageData:
    get_language(language)
    key = (data_cfg.source, data_cfg.path, data_cfg.hub_dataset, data_cfg.hub_revision, tuple(data_cfg.extra_sources), language)
    if key in _LOADED:
        return _LOADED[key]
    if data_cfg.source == "embedded":
        folder = embedded_corpus(data_cfg, language)
        data = _LanguageData(language, _local_reader(folder, language), str(folder))
    elif data_cfg.source == "local":
        path = Path(data_cfg.path).expanduser()
        data = _LanguageData(language, _local_reader(path, language), str(path))
    else:
        at = f"@{data_cfg.hub_revision}" if data_cfg.hub_revision else ""
        data = _LanguageData(language, lambda split: read_hub_records(data_cfg.hub_dataset, language, split, data_cfg.hub_revision),
                             f"hub:{data_cfg.hub_dataset}{at}")
    _LOADED[key] = data
    return data


def _order_key(pair: Pair) -> bytes:
    return hashlib.sha1(pair.id.encode("utf-8", errors="surrogatepass")).digest()


def load_pairs_with_stats(data_cfg: DataConfig, language: str, split: str) -> tuple[list[Pair], dict]:
    """`load_pairs` and its counts (`language`: a built-in language or the name of a task of `data.tasks`): `{"records", "kept", "dropped": {reason: n}, "capped": n}`
    (`long_target` drops come from `max_target_lines`; `capped` pairs were cut by the example cap)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    if language in data_cfg.tasks:  # a task defined from the user's own data (`codecl.data.usertasks`)
        from codecl.data.usertasks import user_pairs

        pairs, clean, where = user_pairs(data_cfg, language, split)
    else:
        data = _language_data(data_cfg, language)
        pairs, clean = data.split(split)
        where = data.where
    dropped = Counter(clean.dropped)
    if data_cfg.max_target_lines is not None:
        kept = [p for p in pairs if len(p.target.splitlines()) <= data_cfg.max_target_lines]
        dropped["long_target"] += len(pairs) - len(kept)
        pairs = kept
    pairs = sorted(pairs, key=lambda p: (_order_key(p), p.id))
    cap = data_cfg.max_train_examples if split == "train" else data_cfg.max_valid_examples
    capped = max(0, len(pairs) - cap) if cap is not None else 0
    pairs = pairs[: len(pairs) - capped]
    stats = {"records": clean.records, "kept": len(pairs), "dropped": dict(sorted((k, v) for k, v in dropped.items() if v)), "capped": capped}
    if not pairs:
        raise DataError(f"no {language} {split} pairs in {where} after cleaning ({stats['records']} records, dropped {stats['dropped']}) — "
                        + (f"check data.tasks.{language} (its path's {split} file, input_field/target_field), or relax data.max_target_lines"
                           if language in data_cfg.tasks else "check data.path, or relax data.max_target_lines"))
    return pairs, stats


def load_pairs(data_cfg: DataConfig, language: str, split: str) -> list[Pair]:
    """The cleaned, filtered and capped pairs of `language` / `split` (train, valid or test)."""
    return load_pairs_with_stats(data_cfg, language, split)[0]


def corpus_texts(data_cfg: DataConfig, languages: list[str], exclude_ids: set[str] = frozenset()) -> list[str]:
    """Descriptions and codes of every cleaned training pair of `languages` (no length filter or cap),
    in corpus order, except the pairs whose id is in `exclude_ids`: the texts for training a tokenizer
    and pretraining the embedded model."""
    texts: list[str] = []
    for language in languages:
        pairs, _ = _language_data(data_cfg, language).split("train")
        for pair in pairs:
            if pair.id in exclude_ids:
                continue
            texts.append(pair.source)
            texts.append(pair.target)
    return texts
