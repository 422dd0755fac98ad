"""The embedded corpus from the default sources (stdlib, XStatic, node_modules): yields and hygiene."""
from __future__ import annotations

import ast
import re
import time

import pytest

from codecl.config import DataConfig
from codecl.data import tasks
from codecl.data.build import build_corpus
from codecl.data.clean import normalize_whitespace


@pytest.mark.slow
def test_default_build_yields_clean_disjoint_pairs(tmp_path):
    started = time.perf_counter()
    stats = build_corpus(["python", "javascript"], tmp_path, [])
    seconds = time.perf_counter() - started
    assert seconds < 120, f"default build took {seconds:.0f} s"
    tasks.clear_cache()
    cfg = DataConfig(source="local", path=str(tmp_path))
    for language, minimum in (("python", 2000), ("javascript", 500)):
        splits = {s: tasks.load_pairs(cfg, language, s) for s in ("train", "valid", "test")}
        assert len(splits["train"]) >= minimum, stats["languages"][language]
        assert len(splits["train"]) == stats["languages"][language]["train"]["records"]  # the corpus is already clean
        assert all(len(splits[s]) >= 50 for s in ("valid", "test")), stats["languages"][language]
        for pairs in splits.values():
            assert all(len(re.findall(r"\w+", p.source)) >= 3 for p in pairs)
        train_codes = {normalize_whitespace(p.target) for p in splits["train"]}
        for split in ("valid", "test"):
            assert train_codes.isdisjoint(normalize_whitespace(p.target) for p in splits[split])
        if language == "python":
            for pair in (p for pairs in splits.values() for p in pairs):
                first = ast.parse(pair.target).body[0].body[0]
                assert not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                            and isinstance(first.value.value, str)), pair.id
    tasks.clear_cache()
