"""Per-stage peak memory: the absolute peak and the peak above the stage's start (SPEC)."""
import sys

import pytest
import torch

from codecl.memory import PeakMemory

MB = 1 << 20
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM / VmRSS / malloc_trim are Linux's")


def test_above_start_counts_what_the_stage_allocates():
    peak = PeakMemory(torch.device("cpu"))
    block = torch.ones(64 * MB // 4)  # 64 MiB of float32, touched
    above = peak.above_start()
    del block
    assert 60 * MB <= above <= 100 * MB, above / MB
    assert peak.read() >= peak.start + above - MB


def test_heap_freed_by_an_earlier_phase_does_not_hide_the_stage():
    # An earlier phase fills the heap with 4 KiB blocks (below glibc's mmap threshold) and frees them:
    # glibc keeps those pages mapped, and a stage that reuses them would not raise the resident set.
    # A block allocated after them pins the heap's top, so free() alone cannot give the pages back.
    earlier = [bytearray(4096) for _ in range(24 * 1024)]  # 96 MiB
    pin = bytearray(4096)
    del earlier
    peak = PeakMemory(torch.device("cpu"))  # returns the freed heap to the OS first (measured without it: ~0 above start)
    stage = [bytearray(4096) for _ in range(24 * 1024)]
    above = peak.above_start()
    del stage, pin
    assert above >= 64 * MB, above / MB
