"""A fast batched Kafka producer for the simulator, ``produce`` and ``replay``.

Why not ``AIOKafkaProducer.send()`` per event: each call is a coroutine, a future
and a partitioner lookup — about 60k msg/s here at best. :class:`BatchWriter` fills
aiokafka ``BatchBuilder``\\ s itself (a C extension appends a record in about a
microsecond) and hands a full batch to ``send_batch``; nothing is awaited unless a
batch is full, so a tight loop can call :meth:`BatchWriter.append` and only await
:meth:`BatchWriter.drain` when it returns True.

Partitioning follows Kafka's Java client: murmur2 of the key when there is one (so
a key lands where any Kafka producer would put it), otherwise "sticky": fill one
partition's batch, then move to the next (Kafka's default since 2.4; batches stay
large at low rates, partitions even out over batches).

Delivery: ``acks=1`` by default — the leader has the records. On this project's
one-broker stacks ``all`` is the same thing, and ``acks=0`` would hide errors that
the ``failed`` counter must show. Pass ``acks="all"`` for multi-broker clusters.
Record timestamps are the event times, so ``offsets_for_times`` on a topic finds
event-time ranges (what ``replay --from-topic`` relies on).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from agents.kafka_admin import ensure_topics
from agents.kafka_security import client_kwargs

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]

DEFAULT_LINGER_MS = 20
DEFAULT_BATCH_BYTES = 512 * 1024
_KEY_CACHE_LIMIT = 200_000
#: Kafka 4 brokers refuse a batch holding a record timestamp more than
#: ``log.message.timestamp.after.max.ms`` (default 1 h) ahead of their clock — the
#: whole batch, not the record. Event times further ahead than this (bad input the
#: worker will dead-letter as future_timestamp) are sent with the current time as
#: the record timestamp instead; the value keeps its own ``ts``.
FUTURE_CLAMP_MS = 30 * 60 * 1000


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key``."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


class BatchWriter:
    """Batched sends to one or more topics; ``sent``/``failed``/``bytes`` count records.

    Use as ``async with BatchWriter(bootstrap, topic) as w: await w.send(value, …)``;
    leaving the block flushes. Record order is kept per partition: batches are
    submitted one at a time, in the order they were filled.
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
        self.sent = 0
        self.failed = 0
        self.bytes = 0
        self.sent_by_topic: Counter[str] = Counter()
        self.errors: list[str] = []
        self._producer: Any = None
        self._partitions: dict[str, list[int]] = {}
        self._sticky: dict[str, int] = {}
        self._open: dict[tuple[str, int], Any] = {}
        self._opened_at: dict[tuple[str, int], float] = {}
        self._full: list[tuple[str, int, Any]] = []
        self._pending: set[asyncio.Future[Any]] = set()
        self._lock = asyncio.Lock()
        self._key_cache: dict[tuple[str, bytes], int] = {}
        self._linger_task: asyncio.Task[None] | None = None
        self._latest_ok_ms = 0  # record timestamps above this are clamped; see FUTURE_CLAMP_MS
        self.clamped = 0

    # lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        if self.create_partitions:
            await ensure_topics(self.bootstrap, {self.topic: self.create_partitions})
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            acks=self.acks,
            linger_ms=self.linger_ms,
            max_batch_size=self.batch_bytes,
            max_request_size=max(1024 * 1024, 2 * self.batch_bytes),
            compression_type=self.compression,
            request_timeout_ms=30_000,
            **client_kwargs(),
        )
        await self._producer.start()
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
            await self.flush()
        finally:
            if self._linger_task is not None:
                self._linger_task.cancel()
                try:
                    await self._linger_task
                except asyncio.CancelledError:
                    pass
            if self._producer is not None:
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
        topic = topic or self.topic
        partition = self.partition_for(topic, key)
        tp = (topic, partition)
        builder = self._open.get(tp)
        if builder is None:
            builder = self._new_builder(tp)
        if timestamp_ms is None or timestamp_ms > self._latest_ok_ms:
            now_ms = int(time.time() * 1000)
            self._latest_ok_ms = now_ms + FUTURE_CLAMP_MS
            if timestamp_ms is not None and timestamp_ms > self._latest_ok_ms:
                self.clamped += 1
                timestamp_ms = now_ms
            elif timestamp_ms is None:
                timestamp_ms = now_ms
        meta = builder.append(timestamp=timestamp_ms, key=key, value=value, headers=headers or [])
        if meta is None:
            self._close(tp, builder, switch=key is None)
            if key is None:  # sticky moved on: the record goes to the next partition
                partition = self.partition_for(topic, None)
                tp = (topic, partition)
            builder = self._open.get(tp) or self._new_builder(tp)
            meta = builder.append(
                timestamp=timestamp_ms, key=key, value=value, headers=headers or []
            )
            if meta is None:
                self.failed += 1
                self.errors.append(f"record of {len(value)} bytes is larger than a batch")
                return bool(self._full)
        self.bytes += len(value)
        return bool(self._full)

    async def send(
        self,
        value: bytes,
        key: bytes | None = None,
        timestamp_ms: int | None = None,
        headers: Headers | None = None,
        topic: str | None = None,
    ) -> None:
        """Add a record; awaits only when a batch is full and must be handed over."""
        if self.append(value, key, timestamp_ms, headers, topic):
            await self.drain()

    async def drain(self) -> None:
        """Hand the full batches to aiokafka (waits while a partition's previous batch
        is still queued — that is the back-pressure)."""
        async with self._lock:
            while self._full:
                topic, partition, builder = self._full.pop(0)
                await self._submit(topic, partition, builder)

    async def flush(self) -> None:
        """Send everything appended so far and wait for the broker's answers."""
        for tp, builder in list(self._open.items()):
            if builder.record_count():
                self._close(tp, builder, switch=True)
        await self.drain()
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # internals ---------------------------------------------------------------

    def _new_builder(self, tp: tuple[str, int]) -> Any:
        builder = self._producer.create_batch()
        self._open[tp] = builder
        self._opened_at[tp] = time.monotonic()
        return builder

    def _close(self, tp: tuple[str, int], builder: Any, switch: bool) -> None:
        del self._open[tp]
        self._opened_at.pop(tp, None)
        self._full.append((tp[0], tp[1], builder))
        if switch:
            self._sticky[tp[0]] += 1

    async def _submit(self, topic: str, partition: int, builder: Any) -> None:
        count = builder.record_count()
        if not count:
            return
        try:
            future = await self._producer.send_batch(builder, topic, partition=partition)
        except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
            self._failed(count, exc)
            return
        self._pending.add(future)
        future.add_done_callback(lambda f, n=count, t=topic: self._delivered(f, n, t))

    def _delivered(self, future: asyncio.Future[Any], count: int, topic: str) -> None:
        self._pending.discard(future)
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
            deadline = time.monotonic() - interval
            aged = [tp for tp, opened in self._opened_at.items() if opened <= deadline]
            for tp in aged:
                builder = self._open.get(tp)
                if builder is not None and builder.record_count():
                    self._close(tp, builder, switch=True)
            if self._full:
                await self.drain()
