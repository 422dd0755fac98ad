"""Shared fixtures (builders live in helpers.py, importable as `helpers`)."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import SHARED_DATA, make_base, tiny_config


@pytest.fixture
def tiny_base():
    return make_base(tiny_config())


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA
