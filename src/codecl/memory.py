"""Peak memory of a stage, measured: CUDA allocator peak on GPU, RSS high-water mark on CPU.

On Linux the RSS high-water mark (VmHWM) is reset by writing "5" to /proc/self/clear_refs,
so each stage reports its own peak rather than the process's lifetime maximum.
"""
from __future__ import annotations

import resource
import sys

import torch


def _read_hwm_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


class PeakMemory:
    """Start measuring at construction; `read()` returns the peak bytes since then."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
            self.device = device
        else:
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")
            except OSError:
                pass  # not Linux / not allowed: the lifetime maximum is reported instead

    def read(self) -> int:
        if self.cuda:
            return int(torch.cuda.max_memory_allocated(self.device))
        return _read_hwm_bytes()
