"""Late events: applied with a time behind the worker's event clock.

Every count is evaluated at the worker's clock t, so an event older than the newest
one already applied changes numbers that may already have been shown (scraped,
snapshotted). Counting them, and how far behind they were, lets a user see when
late data is rewriting the recent past. Pure: the state stage feeds each batch,
in application order, with the event clock as it stood before the batch.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

#: Histogram bounds of the delay, in seconds: 1 ms to a week.
DELAY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.01,
    0.1,
    1,
    10,
    60,
    600,
    3600,
    86400,
    604800,
)


class LateEvents:
    """Per platform: how many events arrived behind the clock; one delay histogram.

    An event is late when its time is strictly before the event clock at the moment
    it is applied: the newest event time the worker had applied (or loaded) before
    it. Its delay is clock - ts. An event at the clock's millisecond is not late.
    """

    __slots__ = ("counts", "buckets", "delay_sum_s", "_high")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.buckets = [0] * (len(DELAY_BUCKETS) + 1)  # not cumulative; last = +Inf
        self.delay_sum_s = 0.0
        self._high: int | None = None

    def observe(self, events: Iterable[Sequence[Any]], clock_ms: int | None) -> None:
        """One batch of ``[ts_ms, platform, ...]`` rows, in the order they are applied;
        ``clock_ms``: the worker's event clock before the batch (None: no event yet)."""
        high = self._high
        if clock_ms is not None and (high is None or clock_ms > high):
            high = clock_ms
        counts = self.counts
        for row in events:
            ts_ms = row[0]
            if high is None or ts_ms >= high:
                high = ts_ms
                continue
            platform = row[1]
            counts[platform] = counts.get(platform, 0) + 1
            delay_s = (high - ts_ms) / 1000
            self.buckets[bisect_left(DELAY_BUCKETS, delay_s)] += 1
            self.delay_sum_s += delay_s
        self._high = high
