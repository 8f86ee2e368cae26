"""agents.heap_trim: free memory in the middle of the heap goes back to the system.

The situation the worker is in after a batch: many transient buffers freed between
ones that live on, so glibc's own trim (the top of the heap) returns nothing.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from agents.heap_trim import HeapTrim

MiB = 2**20


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not HeapTrim().available, reason="not a glibc C library")
def test_freed_buffers_between_live_ones_go_back_to_the_system() -> None:
    heap = HeapTrim()
    assert heap.configure()
    # 4 KiB buffers (over pymalloc's 512 B: the C heap), every 16th kept
    buffers = [bytearray(4096) for _ in range(40_000)]
    kept = buffers[::16]
    del buffers
    gc.collect()
    before = _rss()
    took = heap.trim()
    after = _rss()
    assert before - after > 100 * MiB, (before // MiB, after // MiB)  # 150 MiB freed
    assert 0 < took < 1.0
    assert len(kept) == 2_500


def test_a_c_library_without_malloc_trim_does_nothing() -> None:
    class Musl:
        def mallopt(self, param: int, value: int) -> int:
            raise AssertionError("not to be called")

    heap = HeapTrim(libc=Musl())
    assert not heap.available
    assert heap.configure() is False
    assert heap.trim() == 0.0
