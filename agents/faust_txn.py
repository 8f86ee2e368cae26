"""What Faust needs so the state stage can own its transactions.

The state agent commits its changelog records and its by-user offsets in one Kafka
transaction per batch (:mod:`agents.producer`). Faust's own ``exactly_once`` mode
does the same with one long transaction per commit interval, and its users report
crashes on rebalance with it; here Faust stays at-least-once and three parts are
swapped instead:

- the consumer reads ``read_committed`` (Faust only does so in ``exactly_once``
  mode): the agent never applies an aborted batch and the table's recovery never
  replays a fenced zombie's aborted changelog records;
- the consumer commits nothing itself: the offsets of the by-user topic are
  committed by the agent's transactions, so Faust's ack-and-commit (which acks a
  ``take()`` buffer even when the agent raised) can't commit an unwritten batch;
- recovery's "highwater" is the last *committed data record* of each changelog
  partition. Faust waits until it has read the record at end offset − 1, but a
  transactional partition ends with a commit marker that no consumer ever sees.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Set
from typing import Any

from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from faust.types import TP

from agents.store_guard import GuardedTableManager, bootstrap_of
from agents.txn_offsets import start_committed_reader

log = logging.getLogger(__name__)


class ReadCommittedThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"  # noqa: SLF001 - read at start()
        return consumer


class TransactionalConsumer(Consumer):
    """Faust's consumer, reading committed records only and committing nothing."""

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        return True  # the state stage's transactions commit these offsets


class CommittedRecovery(Recovery):
    #: the consumer generation whose recovery is completing (tables compare it with
    #: the current one: a recovery of an older generation may complete after the
    #: next rebalance began, and its store is not up to date)
    completing_generation: int = -1

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.completing_generation = generation_id
        await super().on_recovery_completed(generation_id)

    async def _build_highwaters(
        self, consumer: Any, tps: Set[TP], destination: Any, title: str
    ) -> None:
        highwaters = await last_data_offsets(bootstrap_of(self.app), tps)
        log.info("recovery: last committed %s changelog records %s", title, highwaters)
        destination.clear()
        destination.update(highwaters)


class CommittedTableManager(GuardedTableManager):
    """The store check of :mod:`agents.store_guard`, and :class:`CommittedRecovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = CommittedRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


def install(app: Any) -> None:
    """Use the parts above in ``app`` (before it starts)."""
    app.transport.Consumer = TransactionalConsumer


async def last_data_offsets(bootstrap: str, tps: Set[TP]) -> dict[TP, int]:
    """Offset of the last committed record of each partition (-1: none)."""
    from aiokafka import TopicPartition

    if not tps:
        return {}
    reader = await start_committed_reader(bootstrap)
    try:
        parts = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        reader.assign(parts)
        starts = await reader.beginning_offsets(parts)
        ends = await reader.end_offsets(parts)  # the last stable offset
        found = {}
        for tp in parts:
            found[TP(tp.topic, tp.partition)] = await _last_before(reader, tp, starts[tp], ends[tp])
        return found
    finally:
        await reader.stop()


async def _last_before(reader: Any, tp: Any, start: int, end: int) -> int:
    """Read backwards in growing windows until a committed record turns up."""
    span = 16
    upper = end
    while upper > start:
        lower = max(start, upper - span)
        reader.seek(tp, lower)
        last = -1
        deadline = time.monotonic() + 60
        while await reader.position(tp) < upper:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {tp} from {lower} to {upper} took over 60s")
            batch = await reader.getmany(tp, timeout_ms=1000)
            for message in batch.get(tp, []):
                if message.offset < upper:
                    last = max(last, message.offset)
        if last >= 0:
            return last
        upper, span = lower, span * 8
    return -1
