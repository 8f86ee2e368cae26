"""The consumer-lag gauges when the offsets are committed by transactions.

Lag is ``end offset − committed offset`` per partition (Faust's two offset gauges,
which the dashboards and rules subtract). On a topic written in transactions that
never reaches 0: each transaction leaves a commit marker after its last record, an
offset that takes a place in the log but is never returned to a reader, and a
transactional offset commit points just after the last *record* (KAFKA-6607).
Kafka Streams commits its consumer's position instead; here each batch's offsets
go out in that batch's own transaction, which cannot know whether a marker follows.

So the committed gauge is set from the transactions, and a small gap between it
and the end is checked with a ``read_committed`` reader: when it holds no record
(only markers, or aborted records), the partition is shown as caught up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.sensors.monitor import Monitor
from faust.sensors.prometheus import PrometheusMonitor

from agents.txn_offsets import records_behind, start_committed_reader

log = logging.getLogger(__name__)

#: Larger gaps are real lag (or at least mostly): they are shown as they are.
MAX_PROBED_GAP = 64


class OffsetGauges:
    """End and committed offsets per (topic, partition), and the marker check."""

    def __init__(self, end_gauge: Any, committed_gauge: Any, bootstrap: str) -> None:
        self.end_gauge = end_gauge
        self.committed_gauge = committed_gauge
        self.bootstrap = bootstrap
        self.ends: dict[tuple[str, int], int] = {}
        self.commits: dict[tuple[str, int], int] = {}
        self._reader: Any = None

    def end(self, topic: str, partition: int, offset: int) -> None:
        if self.ends.get((topic, partition)) != offset:
            self.ends[(topic, partition)] = offset
            self.end_gauge.labels(topic, str(partition)).set(offset)

    def committed(self, topic: str, partition: int, offset: int) -> None:
        """Only a new value is set: a gap the probe found empty stays shown as 0."""
        if self.commits.get((topic, partition)) != offset:
            self.commits[(topic, partition)] = offset
            self.committed_gauge.labels(topic, str(partition)).set(offset)

    def small_gaps(self) -> dict[tuple[str, int], tuple[int, int]]:
        gaps = {}
        for key, committed in self.commits.items():
            end = self.ends.get(key)
            if end is not None and 0 < end - committed <= MAX_PROBED_GAP:
                gaps[key] = (committed, end)
        return gaps

    async def probe(self) -> None:
        """Show every small gap that holds no committed record as caught up."""
        from aiokafka import TopicPartition

        gaps = self.small_gaps()
        if not gaps:
            return
        reader = await self._started_reader()
        wanted = {TopicPartition(t, p): span for (t, p), span in gaps.items()}
        behind = await records_behind(reader, wanted, timeout_s=2.0)
        for tp, (_, end) in wanted.items():
            if tp not in behind and self.commits.get((tp.topic, tp.partition), end) < end:
                self.committed_gauge.labels(tp.topic, str(tp.partition)).set(end)

    async def _started_reader(self) -> Any:
        if self._reader is None:
            self._reader = await start_committed_reader(self.bootstrap)
        return self._reader

    async def stop(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await asyncio.wait_for(reader.stop(), 10)


class TransactionMonitor(PrometheusMonitor):
    """Faust's Prometheus sensor, with the offsets going through :class:`OffsetGauges`.

    Faust's own commit is a no-op here (:mod:`agents.faust_txn`): the offsets it
    would report as committed are only acknowledged ones, so they are not shown."""

    offsets: OffsetGauges

    def on_tp_commit(self, tp_offsets: Any) -> None:
        Monitor.on_tp_commit(self, tp_offsets)

    def track_tp_end_offset(self, tp: Any, offset: int) -> None:
        Monitor.track_tp_end_offset(self, tp, offset)
        self.offsets.end(tp.topic, tp.partition, offset)
