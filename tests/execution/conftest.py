"""Fixtures of the execution tests: the real benchmark files (skipped when ../shared/data is
absent), node (skipped when not on PATH) and sandboxes."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from codecl.execution import Sandbox, SandboxConfig
from helpers import SHARED_DATA

EXEC_DATA = SHARED_DATA / "exec"


def _data_file(relative: str) -> Path:
    path = EXEC_DATA / relative
    if not path.is_file():
        pytest.skip(f"{path} is absent (../shared/data holds the public benchmark files)")
    return path


@pytest.fixture
def humaneval_file() -> Path:
    return _data_file("humaneval/HumanEval.jsonl.gz")


@pytest.fixture
def humaneval_x_python_file() -> Path:
    return _data_file("humaneval-x/humaneval_python.jsonl.gz")


@pytest.fixture
def humaneval_x_js_file() -> Path:
    return _data_file("humaneval-x/humaneval_js.jsonl.gz")


@pytest.fixture
def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.skip("node is not on PATH")
    return path


@pytest.fixture(scope="session")
def strong_sandbox() -> Sandbox:
    """The default sandbox: namespaces where this machine allows them."""
    return Sandbox(SandboxConfig(timeout_s=5.0))


@pytest.fixture(scope="session")
def weak_sandbox() -> Sandbox:
    """No namespaces, as on machines that refuse them: Landlock where the kernel has it, plus runtime guards."""
    return Sandbox(SandboxConfig(timeout_s=5.0, namespaces=False))


@pytest.fixture(scope="session")
def bare_sandbox() -> Sandbox:
    """Neither namespaces nor Landlock: privilege drop, limits and runtime guards only."""
    return Sandbox(SandboxConfig(timeout_s=5.0, namespaces=False, landlock=False))


@pytest.fixture(params=["default", "no-namespaces", "bare"])
def sandbox(request) -> Sandbox:
    """Every guard test runs in each isolation mode a machine may end up with."""
    return request.getfixturevalue({"default": "strong_sandbox", "no-namespaces": "weak_sandbox",
                                    "bare": "bare_sandbox"}[request.param])
