"""Kafka writes through aiokafka's batch builders: the one batch producer.

Why not ``AIOKafkaProducer.send()`` per record: each call is a coroutine, a future
and a partitioner lookup — about 60k msg/s here at best. :class:`Batches` fills
aiokafka ``BatchBuilder``\\ s itself (a C extension appends a record in about a
microsecond) and hands a full batch to ``send_batch``. Everything that writes in
batches goes through it:

* the worker (:class:`agents.producer.Transaction`): by-user batches, dead
  letters and changelog writes; :func:`send_to_partition` fills one partition's
  batches, and the caller awaits the delivery futures;
* the commands (:class:`BatchWriter`: simulator, ``produce``, ``replay``): nothing is
  awaited unless a batch is full, so a tight loop can call :meth:`BatchWriter.append`
  and only await :meth:`BatchWriter.drain` when it returns True; deliveries are
  counted, not awaited one by one.

:func:`start_producer` is the one place both build their client.

BatchWriter's partitioning follows Kafka's Java client: murmur2 of the key when there
is one (so a key lands where any Kafka producer would put it), otherwise "sticky":
fill one partition's batch, then move to the next (Kafka's default since 2.4; batches
stay large at low rates, partitions even out over batches).

BatchWriter's delivery: ``acks=1`` by default — the leader has the records. On this
project's one-broker stacks ``all`` is the same thing, and ``acks=0`` would hide
errors that the ``failed`` counter must show. Pass ``acks="all"`` for multi-broker
clusters. Record timestamps are the event times, so ``offsets_for_times`` on a topic
finds event-time ranges (what ``replay --from-topic`` relies on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from agents.kafka_admin import ensure_topics
from agents.kafka_security import client_kwargs

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]
TopicPartition = tuple[str, int]

DEFAULT_LINGER_MS = 20
DEFAULT_BATCH_BYTES = 512 * 1024
_KEY_CACHE_LIMIT = 200_000
#: Kafka 4 brokers refuse a batch holding a record timestamp more than
#: ``log.message.timestamp.after.max.ms`` (default 1 h) ahead of their clock — the
#: whole batch, not the record. Event times further ahead than this (bad input the
#: worker will dead-letter as future_timestamp) are sent with the current time as
#: the record timestamp instead; the value keeps its own ``ts``.
FUTURE_CLAMP_MS = 30 * 60 * 1000
#: Once a writer has given up on the broker (:meth:`BatchWriter.abandon`), how long
#: stopping its producer may take: aiokafka's stop waits for every queued batch,
#: which against an unreachable broker means its whole request timeout.
ABANDONED_STOP_S = 1.0
_NO_HEADERS: list[tuple[str, bytes]] = []  # aiokafka's builder wants a list; never written


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key``."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def start_producer(bootstrap: str, **options: Any) -> Any:
    """A started ``AIOKafkaProducer`` with the security settings every client takes.

    A producer that fails to start is stopped again, so no half-open client is left."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **options, **client_kwargs())
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer


class Handed(NamedTuple):
    """A batch aiokafka accepted: where it goes, how many records, its delivery future."""

    topic: str
    records: int
    future: Any


class Batches:
    """Open batch builders, one per (topic, partition), and the full ones in the order
    they filled.

    Handing the full ones over one at a time, oldest first, keeps record order per
    partition; waiting while aiokafka still holds a partition's previous batch is the
    back-pressure.
    """

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.open: dict[TopicPartition, Any] = {}
        self.opened_at: dict[TopicPartition, float] = {}
        self.full: list[tuple[TopicPartition, Any]] = []

    def append(
        self,
        tp: TopicPartition,
        value: bytes | None,
        key: bytes | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
    ) -> bool:
        """Add a record to ``tp``'s open batch (opening one). False: that batch is full
        and the record is not in it — :meth:`close` the batch and append again."""
        builder = self.open.get(tp) or self._open(tp)
        meta = builder.append(
            timestamp=timestamp_ms, key=key, value=value, headers=headers or _NO_HEADERS
        )
        return meta is not None

    def fill(self, tp: TopicPartition, records: Iterator[tuple[bytes, bytes | None]]) -> bool:
        """Append (key, value) records, stamped now, to ``tp``'s open batch until the
        records run out (False) or the batch is full (True: it is closed, the record
        that did not fit starts the next one; hand over, then fill again).

        The bulk path: one local loop, no call per record — about twice the records
        per CPU second of :meth:`append` one by one (changelog records, measured here)."""
        builder = self.open.get(tp) or self._open(tp)
        append = builder.append
        for key, value in records:
            if append(timestamp=None, key=key, value=value, headers=_NO_HEADERS) is None:
                self.close(tp)
                self._open(tp).append(timestamp=None, key=key, value=value, headers=_NO_HEADERS)
                return True
        return False

    def close(self, tp: TopicPartition) -> None:
        """Queue ``tp``'s open batch for hand-over; the next append opens a new one."""
        self.opened_at.pop(tp, None)
        self.full.append((tp, self.open.pop(tp)))

    def close_all(self, opened_before: float | None = None) -> list[TopicPartition]:
        """Close every open batch holding records (only those opened at or before
        ``opened_before``, a ``time.monotonic()``, if given); returns their partitions."""
        closing = [
            tp
            for tp, builder in self.open.items()
            if builder.record_count()
            and (opened_before is None or self.opened_at[tp] <= opened_before)
        ]
        for tp in closing:
            self.close(tp)
        return closing

    def _open(self, tp: TopicPartition) -> Any:
        builder = self.open[tp] = self.producer.create_batch()
        self.opened_at[tp] = time.monotonic()
        return builder

    async def hand_over(
        self, refused: Callable[[int, Exception], None] | None = None
    ) -> list[Handed]:
        """Hand the full batches to aiokafka, oldest first.

        A batch aiokafka refuses raises — or, given ``refused``, is reported there
        (records, error) and the others still go."""
        handed = []
        while self.full:
            (topic, partition), builder = self.full.pop(0)
            count = builder.record_count()
            if not count:
                continue
            try:
                future = await self.producer.send_batch(builder, topic, partition=partition)
            except Exception as exc:
                if refused is None:
                    raise
                refused(count, exc)
                continue
            handed.append(Handed(topic, count, future))
        return handed


async def send_to_partition(
    producer: Any, topic: str, partition: int, records: Iterable[tuple[bytes, bytes | None]]
) -> list[Any]:
    """Send (key, value) records to one partition in as few batches as fit; returns the
    batches' delivery futures. Each batch is handed over as soon as it is full.

    Skips the per-record future, partitioner and accumulator work of ``send()`` — the
    bulk of the cost of a changelog write.
    """
    batches = Batches(producer)
    tp = (topic, partition)
    pending = iter(records)
    futures: list[Any] = []
    try:
        while batches.fill(tp, pending):
            futures += [handed.future for handed in await batches.hand_over()]
        batches.close_all()
        futures += [handed.future for handed in await batches.hand_over()]
    except BaseException:
        consume_outcomes(futures)  # the caller never gets these
        raise
    return futures


def consume_outcomes(futures: Iterable[Any]) -> None:
    """Retrieve the outcome of futures nobody will await (a given-up transaction's
    sends): asyncio would log "Future exception was never retrieved" for each one
    that failed."""
    for future in futures:
        future.add_done_callback(lambda f: f.cancelled() or f.exception())


class BatchWriter:
    """Batched sends to one or more topics; ``sent``/``failed``/``bytes`` count records.

    Use as ``async with BatchWriter(bootstrap, topic) as w: await w.send(value, …)``;
    leaving the block flushes. Record order is kept per partition (see :class:`Batches`).
    Every record appended ends up counted once: ``sent`` (the broker confirmed it),
    ``failed`` (refused or never deliverable) or ``unconfirmed`` (given up by
    :meth:`settle` before the broker answered: it may or may not be in the topic).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        linger_ms: int = DEFAULT_LINGER_MS,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        compression: str | None = None,
        acks: int | str = 1,
        create_partitions: int | None = 4,
        client_id: str = "engagement-monitor-writer",
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.linger_ms = linger_ms
        self.batch_bytes = batch_bytes
        self.compression = compression
        self.acks = acks
        self.create_partitions = create_partitions
        self.client_id = client_id
        self.appended = 0
        self.sent = 0
        self.failed = 0
        self.unconfirmed = 0
        self._abandoned = False
        self.bytes = 0
        self.sent_by_topic: Counter[str] = Counter()
        self.errors: list[str] = []
        self._producer: Any = None
        self._batches = Batches(None)  # given the producer at start
        self._partitions: dict[str, list[int]] = {}
        self._sticky: dict[str, int] = {}
        self._pending: set[asyncio.Future[Any]] = set()
        self._lock = asyncio.Lock()
        self._key_cache: dict[tuple[str, bytes], int] = {}
        self._linger_task: asyncio.Task[None] | None = None
        self._latest_ok_ms = 0  # record timestamps above this are clamped; see FUTURE_CLAMP_MS
        self.clamped = 0

    # lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        if self.create_partitions:
            await ensure_topics(self.bootstrap, {self.topic: self.create_partitions})
        self._producer = await start_producer(
            self.bootstrap,
            client_id=self.client_id,
            acks=self.acks,
            linger_ms=self.linger_ms,
            max_batch_size=self.batch_bytes,
            max_request_size=max(1024 * 1024, 2 * self.batch_bytes),
            compression_type=self.compression,
            request_timeout_ms=30_000,
        )
        self._batches = Batches(self._producer)
        await self.add_topic(self.topic)
        self._linger_task = asyncio.create_task(self._linger(), name="batch-writer-linger")

    async def add_topic(self, topic: str, create_partitions: int | None = None) -> None:
        """Look up (and optionally create) another destination, e.g. the DLQ."""
        if create_partitions:
            await ensure_topics(self.bootstrap, {topic: create_partitions})
        partitions = sorted(await self._producer.partitions_for(topic))
        if not partitions:
            raise RuntimeError(f"topic {topic!r} has no partitions")
        self._partitions[topic] = partitions
        self._sticky.setdefault(topic, 0)

    async def stop(self) -> None:
        try:
            if not self._abandoned:
                await self.flush()
        finally:
            if self._linger_task is not None:
                self._linger_task.cancel()
                try:
                    await self._linger_task
                except asyncio.CancelledError:
                    pass
            if self._producer is not None:
                await self._stop_producer()

    async def _stop_producer(self) -> None:
        if not self._abandoned:
            await self._producer.stop()
            return
        # aiokafka's stop waits for its queued batches unless its sender task has
        # ended: end it (no public call does; a cancel ends its in-flight requests)
        sender = getattr(getattr(self._producer, "_sender", None), "sender_task", None)
        if sender is not None:
            sender.cancel()
        with contextlib.suppress(TimeoutError):  # what it waited for was given up
            async with asyncio.timeout(ABANDONED_STOP_S):
                await self._producer.stop()

    async def __aenter__(self) -> BatchWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # sending -----------------------------------------------------------------

    def partition_for(self, topic: str, key: bytes | None) -> int:
        partitions = self._partitions[topic]
        if key is None:
            return partitions[self._sticky[topic] % len(partitions)]
        cached = self._key_cache.get((topic, key))
        if cached is None:
            cached = partitions[murmur2_partition(key, len(partitions))]
            if len(self._key_cache) >= _KEY_CACHE_LIMIT:
                self._key_cache.clear()
            self._key_cache[(topic, key)] = cached
        return cached

    def append(
        self,
        value: bytes,
        key: bytes | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
        topic: str | None = None,
    ) -> bool:
        """Add a record without awaiting; True means batches are full: ``await drain()``.

        ``timestamp_ms`` None means now (Kafka's own default)."""
        self.appended += 1
        topic = topic or self.topic
        tp = (topic, self.partition_for(topic, key))
        if timestamp_ms is None or timestamp_ms > self._latest_ok_ms:
            timestamp_ms = self._record_time(timestamp_ms)
        if not self._batches.append(tp, value, key, timestamp_ms, headers):
            self._close(tp, switch=key is None)
            if key is None:  # sticky moved on: the record goes to the next partition
                tp = (topic, self.partition_for(topic, None))
            if not self._batches.append(tp, value, key, timestamp_ms, headers):
                self.failed += 1
                self.errors.append(f"record of {len(value)} bytes is larger than a batch")
                return bool(self._batches.full)
        self.bytes += len(value)
        return bool(self._batches.full)

    async def send(self, value: bytes, *record: Any, **fields: Any) -> None:
        """:meth:`append` (same arguments); awaits only when a batch is full and must
        be handed over."""
        if self.append(value, *record, **fields):
            await self.drain()

    async def drain(self) -> None:
        """Hand the full batches to aiokafka (waits while a partition's previous batch
        is still queued — that is the back-pressure)."""
        async with self._lock:
            for handed in await self._batches.hand_over(refused=self._failed):
                self._pending.add(handed.future)
                handed.future.add_done_callback(
                    lambda f, n=handed.records, t=handed.topic: self._delivered(f, n, t)
                )

    async def flush(self) -> None:
        """Send everything appended so far and wait for the broker's answers."""
        for tp in self._batches.close_all():
            self._sticky[tp[0]] += 1
        await self.drain()
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def settle(self, timeout: float | None) -> None:
        """:meth:`flush`, for at most ``timeout`` seconds (None: as long as aiokafka
        waits, its request timeout); then :meth:`abandon` what is still unconfirmed."""
        try:
            async with asyncio.timeout(timeout):
                for tp in self._batches.close_all():
                    self._sticky[tp[0]] += 1
                await self.drain()
                if self._pending:  # asyncio.wait: a timeout leaves the futures alone
                    await asyncio.wait(list(self._pending))
        except TimeoutError:
            self.abandon()

    def abandon(self) -> None:
        """Stop waiting for the broker: every record not confirmed yet is counted in
        ``unconfirmed`` (not ``failed``: it may have arrived, its answer did not) and
        the counts are final; stopping the producer is then bounded
        (``ABANDONED_STOP_S``). Records in no list (a drain cancelled between taking
        a batch and handing it over) are counted too: the count is whatever is
        neither sent nor failed."""
        self._abandoned = True
        self._batches.open.clear()
        self._batches.full.clear()
        self.unconfirmed = self.appended - self.sent - self.failed

    # internals ---------------------------------------------------------------

    def _record_time(self, timestamp_ms: int | None) -> int:
        """The record timestamp when ``timestamp_ms`` is None or past the last bound:
        now for None, and now for one too far ahead (counted)."""
        now_ms = int(time.time() * 1000)
        self._latest_ok_ms = now_ms + FUTURE_CLAMP_MS
        if timestamp_ms is None:
            return now_ms
        if timestamp_ms > self._latest_ok_ms:
            self.clamped += 1
            return now_ms
        return timestamp_ms

    def _close(self, tp: TopicPartition, switch: bool) -> None:
        self._batches.close(tp)
        if switch:
            self._sticky[tp[0]] += 1

    def _delivered(self, future: asyncio.Future[Any], count: int, topic: str) -> None:
        self._pending.discard(future)
        if self._abandoned:
            return  # counted in ``unconfirmed`` by abandon()
        if future.cancelled():
            self._failed(count, RuntimeError("cancelled"))
        elif future.exception() is not None:
            self._failed(count, future.exception())  # type: ignore[arg-type]
        else:
            self.sent += count
            self.sent_by_topic[topic] += count

    def _failed(self, count: int, exc: BaseException) -> None:
        self.failed += count
        if len(self.errors) < 20:
            self.errors.append(f"{type(exc).__name__}: {exc}")
        log.warning("a batch of %d records failed: %s", count, exc)

    async def _linger(self) -> None:
        """Send batches that have waited ``linger_ms`` (slow producers, paced replays)."""
        interval = max(self.linger_ms, 1) / 1000
        while True:
            await asyncio.sleep(interval)
            for tp in self._batches.close_all(opened_before=time.monotonic() - interval):
                self._sticky[tp[0]] += 1
            if self._batches.full:
                await self.drain()
