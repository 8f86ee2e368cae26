"""Hand the C heap's free pages back to the system, every second.

Why: glibc keeps what the worker frees. A batch's transient buffers (fetched
record sets, decoded events, changelog bytes) are freed between the long-lived
state's allocations, so the free space sits in the middle of the heap, where
glibc's automatic trim (the top of the heap only) never reaches; and after each
freed large buffer glibc raises its mmap threshold, so the next large buffers come
from that heap too. Measured at 1.1M records (docs/benchmarks.md, "Memory,
session 10"): the worker's resident memory per stored record 421 → 387 B at the
peak and 420 → 333 B after the run, for ~4 ms of ``malloc_trim`` per call.

Nothing here changes what is counted; on a C library without these calls (musl,
macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

#: glibc's mallopt parameter; allocations at least this large are mmapped, and
#: returned to the system when freed. 128 KiB is glibc's own starting value; set
#: explicitly, glibc no longer raises it after each freed large buffer.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024

#: seconds between two trims (each ~4 ms at 1M records; the event loop waits)
TRIM_INTERVAL_S = 1.0


class HeapTrim:
    """``mallopt``/``malloc_trim`` of the C library, or nothing where it has none."""

    def __init__(self, libc: Any = None) -> None:
        self._libc = _glibc() if libc is None else libc
        self.available = all(hasattr(self._libc, name) for name in ("mallopt", "malloc_trim"))

    def configure(self) -> bool:
        """Fix the mmap threshold (once, at start); False where not available."""
        if not self.available:
            log.info("heap trim: not a glibc C library; freed memory stays with the allocator")
            return False
        return bool(self._libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))

    def trim(self) -> float:
        """Return the free pages of every heap; the seconds it took (0 if unavailable)."""
        if not self.available:
            return 0.0
        started = time.perf_counter()
        self._libc.malloc_trim(0)
        return time.perf_counter() - started


def _glibc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
