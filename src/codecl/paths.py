"""Where codecl caches what it builds (embedded corpus, tokenizer, base model)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$CODECL_CACHE`, else `$XDG_CACHE_HOME/codecl`, else `~/.cache/codecl`."""
    if os.environ.get("CODECL_CACHE"):
        return Path(os.environ["CODECL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "codecl"
