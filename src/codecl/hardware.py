"""This machine's hardware: which device a run uses (`pick_device`), and what it does fast:
bfloat16 matrix multiplication on CPU.

On CPUs without bf16 matrix units (no AVX-512 BF16 or AMX) torch runs bfloat16 matmuls through a
slow fallback: about 100x slower than float32 (0.9 vs 130 GFLOP/s measured on one such machine),
so `model.frozen_dtype=bfloat16` or `train.mixed_precision=bf16` turns a run of minutes into hours.
With the units (this project's Xeon: AVX-512 BF16 + AMX) bf16 is 1-4x *faster* than float32.
Rather than parse CPU flags (names differ by vendor and kernel), `bf16_matmul_ratio` times a few
small matmuls of each dtype (well under 0.1 s even on a slow machine) once per process.

    from codecl.hardware import check_bf16
    for warning in check_bf16(cfg, device):   # at the start of a run
        print(warning)
"""
from __future__ import annotations

import functools
import time

import torch

from codecl.errors import ConfigError

SLOW_RATIO = 8.0
"""bf16 is "slow" when a bf16 matmul takes more than this many times the float32 one. With bf16
units the ratio is 0.3-1.7 (small matrices: per-call overhead); without, 50-150."""

_SIZE, _REPEATS = 128, 3  # one 128x128 bf16 matmul is ~5 ms on a slow machine, ~30 us on a fast one


def pick_device(name: str) -> torch.device:
    """`train.device` (or `--device`) as a torch device: `auto` is CUDA when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name}: CUDA is not available on this machine; use cpu or auto")
    return torch.device(name)


def _best_seconds(dtype: torch.dtype) -> float:
    """Fastest of a few 128x128 matmuls in `dtype` on CPU (after one untimed call)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(_SIZE, _SIZE, generator=generator).to(dtype)
    b = torch.randn(_SIZE, _SIZE, generator=generator).to(dtype)
    a @ b  # first call: kernel selection, packing
    best = float("inf")
    for _ in range(_REPEATS):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return max(best, 1e-9)


@functools.lru_cache(maxsize=None)
def _cpu_ratio() -> float:
    """On one thread: with several, a core busy with other work stalls the float32 matmul's thread
    barrier (14 ms instead of 30 us measured on a shared 2-core machine) and the ratio means nothing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _best_seconds(torch.bfloat16) / _best_seconds(torch.float32)
    finally:
        torch.set_num_threads(threads)


def bf16_matmul_ratio(device: torch.device | str = "cpu") -> float:
    """Time of a bf16 matmul over the float32 one on `device` (cached per process). CPU: measured;
    CUDA: 1.0 when the GPU supports bf16 (no timing), infinity when it does not; other devices: 1.0."""
    device = torch.device(device)
    if device.type == "cpu":
        return _cpu_ratio()
    if device.type == "cuda":
        return 1.0 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else float("inf")
    return 1.0


def bf16_is_slow(device: torch.device | str = "cpu") -> bool:
    """True when bfloat16 matmuls on `device` are more than `SLOW_RATIO` times slower than float32."""
    return bf16_matmul_ratio(device) > SLOW_RATIO


def check_bf16(cfg, device: torch.device | str) -> list[str]:
    """Warnings (empty when none) for a run config (`codecl.config.RunConfig`) that asks for bfloat16
    on a device where bf16 matmuls are slow; each names the config key and the setting that fixes it."""
    asks = []
    if cfg.model.frozen_dtype == "bfloat16":
        asks.append(("model.frozen_dtype=bfloat16", "--set model.frozen_dtype=float32"))
    if cfg.train.mixed_precision == "bf16":
        asks.append(("train.mixed_precision=bf16", "--set train.mixed_precision=no"))
    if not asks or not bf16_is_slow(device):
        return []
    if torch.device(device).type == "cpu":
        why = (f"this CPU has no bf16 matrix units (AVX-512 BF16 / AMX): a bf16 matmul takes {bf16_matmul_ratio(device):.0f}x "
               "the float32 one here")
    else:
        why = f"{device} does not support bf16"
    return [f"warning: {key}, but {why}, so the run will be much slower than in float32; use {fix}" for key, fix in asks]
