"""bf16 capability check: warn when a config asks for bfloat16 on a CPU without bf16 matrix units."""
import time

import pytest
import torch

from codecl import hardware
from codecl.config import load_config


def _simulate(monkeypatch, ratio: float) -> None:
    monkeypatch.setattr(hardware, "_cpu_ratio", lambda: ratio)


@pytest.mark.parametrize("override, key, fix", [
    ("model.frozen_dtype=bfloat16", "model.frozen_dtype=bfloat16", "--set model.frozen_dtype=float32"),
    ("train.mixed_precision=bf16", "train.mixed_precision=bf16", "--set train.mixed_precision=no"),
])
def test_slow_bf16_cpu_warns_naming_the_key_and_the_fix(monkeypatch, override, key, fix):
    _simulate(monkeypatch, 140.0)  # 0.9 vs 130 GFLOP/s, as measured on a CPU without bf16 units
    warnings = hardware.check_bf16(load_config("smoke", overrides=[override]), torch.device("cpu"))
    assert len(warnings) == 1
    assert key in warnings[0] and fix in warnings[0] and "140x" in warnings[0]


def test_both_bf16_settings_give_two_warnings(monkeypatch):
    _simulate(monkeypatch, 100.0)
    cfg = load_config("smoke", overrides=["model.frozen_dtype=bfloat16", "train.mixed_precision=bf16"])
    assert len(hardware.check_bf16(cfg, "cpu")) == 2


def test_fast_bf16_or_float32_config_gives_no_warning(monkeypatch):
    _simulate(monkeypatch, 1.3)  # AVX-512 BF16 / AMX
    assert hardware.check_bf16(load_config("smoke", overrides=["model.frozen_dtype=bfloat16"]), "cpu") == []
    _simulate(monkeypatch, 140.0)
    assert hardware.check_bf16(load_config("smoke"), "cpu") == []  # float32: nothing to warn about
    assert hardware.bf16_is_slow("cpu")


def test_cuda_is_not_timed(monkeypatch):
    monkeypatch.setattr(hardware, "_cpu_ratio", lambda: pytest.fail("CUDA must not time CPU matmuls"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert hardware.check_bf16(load_config("smoke", overrides=["model.frozen_dtype=bfloat16"]), "cuda") == []


def test_the_real_measurement_is_quick_and_cached():
    hardware._cpu_ratio.cache_clear()
    threads = torch.get_num_threads()
    start = time.perf_counter()
    ratio = hardware.bf16_matmul_ratio("cpu")
    assert time.perf_counter() - start < 0.5  # the brief: < 0.2 s; room for a busy CI machine
    assert 0 < ratio < float("inf")
    assert torch.get_num_threads() == threads  # timed on one thread, then restored
    start = time.perf_counter()
    assert hardware.bf16_matmul_ratio("cpu") == ratio and time.perf_counter() - start < 0.01
