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
  transactional partition ends with a commit marker that no consumer ever sees;
- no by-user record is handed on while a recovery completes (:class:`SeekGate`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Set
from typing import Any

from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from faust.types import TP
from mode.utils.times import want_seconds

from agents.store_guard import GuardedTableManager, bootstrap_of
from agents.txn_offsets import start_committed_reader

log = logging.getLogger(__name__)


#: Longest a fetch of the worker's consumer waits at the broker for records. Faust
#: sets 1,500 ms; reading committed records, a by-user batch then reached the state
#: agent 0.7–1 s after its transaction committed (the gauges' latency, session 9).
FETCH_MAX_WAIT_MS = 50


class ReadCommittedThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"  # noqa: SLF001 - read at start()
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # noqa: SLF001 - read at start()
        return consumer


class SeekGate:
    """Keeps stream records from the agent while a recovery completes, then has the
    consumer seek to the committed offsets once more, with no batch in flight.

    Faust completes a recovery by resuming the stream partitions, seeking them to
    their committed offsets (``perform_seek``) and resuming flow control, which
    *clears the stream queues*. The consumer's drain loop runs meanwhile: records it
    fetched before the seek are still handed on after it, and each moves Faust's
    per-partition read offset on. Seen in the zombie test: by-user records 17–21 of
    a partition were queued during the seek and cleared, records 24–58 of the same
    fetch went on and were applied, and the copies of 17–21 fetched again from the
    committed offset were dropped as already read — the offsets committed past
    them, their events lost. Here those records are never handed on: the state
    agent only ever sees a partition's records in order from its committed offset.
    Changelog records (standby replicas) go on as before: they have no committed
    offset to seek back to.
    """

    def __init__(self) -> None:
        self.held = False
        self.reseek = False

    def hold(self) -> None:
        self.held = True

    def release(self) -> None:
        self.held = False
        self.reseek = True

    def passes(self, is_changelog: bool) -> bool:
        """Whether a fetched record goes on; a stream record held back is fetched
        again after the seek :meth:`take_reseek` asks for."""
        if is_changelog:
            return True
        if self.held or self.reseek:
            self.reseek = True
            return False
        return True

    def take_reseek(self) -> bool:
        """True once, before the first fetch after a release (or a held-back record)."""
        if self.reseek and not self.held:
            self.reseek = False
            return True
        return False


_REJOIN_REQUESTS: set[asyncio.Future[Any]] = set()


def _rejoin_requested(task: asyncio.Future[Any]) -> None:
    _REJOIN_REQUESTS.discard(task)
    if not task.cancelled() and task.exception() is not None:
        # the partition stays given up until a rebalance comes some other way
        log.warning("stream: could not ask the group to rebalance: %r", task.exception())


class TransactionalConsumer(Consumer):
    """Faust's consumer, reading committed records only, committing nothing, and
    handing stream records on only in order from their committed offsets."""

    gate: SeekGate

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        return True  # the state stage's transactions commit these offsets

    async def perform_seek(self) -> None:
        """Faust's seek to the committed offsets, and to the start for each stream
        partition with none committed yet: aiokafka's ``seek_to_committed`` leaves
        such a partition where its fetch is, so after a rebalance that came before the
        partition's first commit, the events already applied to the mirror it then
        rebuilt (from a store without them) were not read again — recovery_bench at
        1M records lost the first ~5,000 events of each partition the first worker
        kept when the second joined."""
        await super().perform_seek()
        changelogs = self.app.tables.changelog_topics
        for tp in sorted(self.assignment()):
            if tp.topic not in changelogs and not self._committed_offset.get(tp):
                log.info("stream: %s[%d] has no committed offset: from its start", *tp)
                await self.seek(tp, 0)

    def request_rejoin(self) -> None:
        """Ask the group for a rebalance (a partition's producer was given up between
        assignments, agents.producer): aiokafka's consumer lives in Faust's consumer
        thread, so the request is handed to that thread's loop."""
        thread = self._thread

        async def ask() -> None:
            thread._ensure_consumer()._coordinator.request_rejoin()  # noqa: SLF001

        task = asyncio.ensure_future(thread.call_thread(ask))
        _REJOIN_REQUESTS.add(task)  # held until done: a bare task may be collected
        task.add_done_callback(_rejoin_requested)

    def seek_gate(self) -> SeekGate:
        gate = getattr(self, "gate", None)
        if gate is None:
            gate = self.gate = SeekGate()
        return gate

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        gate = self.seek_gate()
        if gate.take_reseek() and self.assignment():
            await self._reseek(gate)
        changelogs = self.app.tables.changelog_topics
        async for tp, message in super().getmany(timeout):
            if gate.passes(tp.topic in changelogs):
                yield tp, message

    async def _reseek(self, gate: SeekGate) -> None:
        try:
            await self.perform_seek()
        except Exception as exc:  # noqa: BLE001 - a rebalance began: stream records wait
            log.info("stream: seek to the committed offsets failed (%r); again", exc)
            gate.reseek = True
            await asyncio.sleep(0.2)
        else:
            log.info("stream: sought the committed offsets again, no batch in flight")


class CommittedRecovery(Recovery):
    #: the consumer generation whose recovery is completing (tables compare it with
    #: the current one: a recovery of an older generation may complete after the
    #: next rebalance began, and its store is not up to date)
    completing_generation: int = -1

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.completing_generation = generation_id
        consumer = self.app.consumer
        gate = consumer.seek_gate() if isinstance(consumer, TransactionalConsumer) else None
        if gate is not None:
            gate.hold()
        try:
            await super().on_recovery_completed(generation_id)
        finally:
            if gate is not None:
                gate.release()

    async def _build_highwaters(
        self, consumer: Any, tps: Set[TP], destination: Any, title: str
    ) -> None:
        if title == "active":  # the recovery's first step: before it reads any offset
            # within half of the limit Faust sets this step (past it, Faust's wait
            # reports the service stopped and the recovery loop ends)
            budget = want_seconds(self.app.conf.broker_request_timeout) / 2
            for table in list(self.tables.values()):
                catch_up_store = getattr(table, "catch_up_store", None)
                if catch_up_store is not None:
                    await catch_up_store(budget)
            self._offsets_after_catch_up(tps)
        highwaters = await last_data_offsets(bootstrap_of(self.app), tps)
        log.info("recovery: last committed %s changelog records %s", title, highwaters)
        destination.clear()
        destination.update(highwaters)

    def _offsets_after_catch_up(self, tps: Set[TP]) -> None:
        """Faust took each store's offset when the rebalance began (``add_active``,
        before the catch-up): read them again, or its recovery replays from the old
        ones what the catch-up has already applied (at 1M records: 500,000 records
        through its per-message path, 2.5 min)."""
        for tp in tps:
            table = self.tp_to_table.get(tp)
            if table is None:
                continue
            persisted = table.persisted_offset(tp)
            known = self.active_offsets.get(tp)
            if persisted is not None and (known is None or persisted > known):
                self.active_offsets[tp] = persisted


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
