"""The time at which windows end.

``wall``: now. Counts fall when events stop arriving, which is exactly what a
drop alert needs to see. ``event``: the newest event time the worker has applied,
across the partitions it holds — deterministic, so replays, back-fills and tests
give the same numbers however fast the events are read. The event clock never
goes backwards, even when a rebalance takes away the partition that moved it.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Clock:
    def __init__(self, mode: str, watermark: Callable[[], int | None]) -> None:
        if mode not in ("wall", "event"):
            raise ValueError(f"clock must be 'wall' or 'event', not {mode!r}")
        self.mode = mode
        self._watermark = watermark
        self._high: int | None = None

    def watermark_ms(self) -> int | None:
        """Newest event time applied so far (monotonic)."""
        current = self._watermark()
        if current is not None and (self._high is None or current > self._high):
            self._high = current
        return self._high

    def now_ms(self) -> int | None:
        """End of every window now; None before the event clock has seen an event."""
        if self.mode == "wall":
            return int(time.time() * 1000)
        return self.watermark_ms()
