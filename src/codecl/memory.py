"""Peak memory of a stage, measured: CUDA allocator peak on GPU, RSS high-water mark on CPU.

On Linux the RSS high-water mark (VmHWM) is reset by writing "5" to /proc/self/clear_refs,
so each stage reports its own peak rather than the process's lifetime maximum.

The absolute peak is mostly the process's baseline (corpus, tokenizer, the frozen base,
what earlier stages left), the same for every method; `above_start()` is the peak minus the
level at the start — what the stage itself needed (activations, gradients, optimizer state).
On CPU the start level is taken after `gc.collect()` and glibc's `malloc_trim(0)`, which hands
freed heap pages back to the OS: otherwise the stage would reuse memory an earlier phase freed
but kept mapped, and its growth would not show in the resident set. On GPU the start level is
the allocator's `memory_allocated()` (the loaded weights and whatever earlier stages still hold).
"""
from __future__ import annotations

import ctypes
import gc
import resource
import sys

import torch


def _status_bytes(field: str) -> int | None:
    """A `/proc/self/status` memory field (`VmHWM`, `VmRSS`) in bytes, or None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _read_hwm_bytes() -> int:
    hwm = _status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _release_free_heap() -> None:
    """Collect garbage and return free heap pages to the OS (glibc `malloc_trim`; elsewhere a no-op)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Start measuring at construction; `read()` returns the peak bytes since then and
    `above_start()` that peak minus the level at construction (module docstring)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.device = device
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.start = int(torch.cuda.memory_allocated(device))
        else:
            _release_free_heap()
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")
            except OSError:
                pass  # not Linux / not allowed: the lifetime maximum is reported instead
            rss = _status_bytes("VmRSS")
            self.start = rss if rss is not None else _read_hwm_bytes()

    def read(self) -> int:
        if self.cuda:
            return int(torch.cuda.max_memory_allocated(self.device))
        return _read_hwm_bytes()

    def above_start(self) -> int:
        return max(0, self.read() - self.start)
