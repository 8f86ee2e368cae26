"""Stage 1: validate raw events and regroup them by user partition.

The input topic carries one event per message, and Faust's per-message cost caps
any Faust stream at ~12k messages/s per core. This stage therefore reads the input
with a plain aiokafka consumer in bulk (``getmany``), validates each message,
routes invalid ones to the dead-letter topic, and writes the valid ones to the
internal by-user topic as *batches*: one Kafka message per (partition, poll)
carrying many events of that partition's users. The Faust agent of stage 2 then
pays its per-message cost once per batch.

Delivery is at least once: input offsets are committed only after every batch and
dead letter derived from them is acknowledged by the broker. A redelivered event
is harmless to the state (its merge is idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson

from agents.kafka_security import client_kwargs
from agents.metrics import LAG_BUCKETS, IngestStats
from agents.outage import Outage
from streams.events import InvalidEvent, Limits, parse_event
from streams.topics import partition_for_user

log = logging.getLogger(__name__)

#: Most events carried by one message of the by-user topic (keeps messages far
#: below Kafka's 1 MiB default limit: an event is ~60 bytes there).
MAX_EVENTS_PER_MESSAGE = 4000


def encode_batch(partition: int, events: list[list[Any]]) -> bytes:
    """A by-user message: ``[partition, [[ts_ms, platform, community, user_id, type], ...]]``."""
    return orjson.dumps([partition, events])


def decode_batch(raw: bytes) -> tuple[int, list[list[Any]]]:
    partition, events = orjson.loads(raw)
    return partition, events


def dlq_headers(reason: str, detail: str, topic: str, partition: int, offset: int) -> list:
    return [
        ("reason", reason.encode()),
        ("detail", detail.encode()[:500]),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
    ]


class Router:
    """Pure part of stage 1: messages in, by-user batches and dead letters out."""

    def __init__(
        self,
        partitions: int,
        limits: Limits,
        stats: IngestStats,
        pseudonymise: Callable[[str], str] | None = None,
    ) -> None:
        self.partitions = partitions
        self.limits = limits
        self.stats = stats
        #: EM_USER_ID_KEY: ids are replaced here, before anything is stored or sent
        self.pseudonymise = pseudonymise

    def route(
        self, messages: list[Any], now_ms: int
    ) -> tuple[dict[int, list[list[Any]]], list[tuple[Any, InvalidEvent]]]:
        """Valid events grouped by user partition, and the dead letters.

        Counts are tallied in locals and handed to the stats once per poll: the
        per-event cost here is most of the ingest stage's budget.
        """
        by_partition: defaultdict[int, list[list[Any]]] = defaultdict(list)
        dead: list[tuple[Any, InvalidEvent]] = []
        counts: dict[tuple[str, str, str], int] = {}
        lag_buckets = [0] * (len(LAG_BUCKETS) + 1)
        lag_sum = 0.0
        n, limits, bounds, pseudonymise = (
            self.partitions,
            self.limits,
            LAG_BUCKETS,
            self.pseudonymise,
        )
        for message in messages:
            try:
                _, ts_ms, platform, community, user_id, kind = parse_event(
                    message.value, now_ms, limits
                )
            except InvalidEvent as exc:
                self.stats.count_invalid(exc.reason)
                dead.append((message, exc))
                continue
            if pseudonymise is not None:
                user_id = pseudonymise(user_id)
            by_partition[partition_for_user(user_id, n)].append(
                [ts_ms, platform, community, user_id, kind]
            )
            key = (platform, community, kind)
            counts[key] = counts.get(key, 0) + 1
            lag = (now_ms - ts_ms) / 1000
            lag_buckets[bisect_left(bounds, lag)] += 1
            lag_sum += lag
        self.stats.add(counts, lag_buckets, lag_sum)
        return by_partition, dead


class IngestStage:
    """The I/O around :class:`Router`: consume, produce, commit."""

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        input_topic: str,
        by_user_topic: str,
        dlq_topic: str,
        router: Router,
        producer: Any,
        consumer_settings: dict[str, Any],
        offsets_gauges: Any = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.input_topic = input_topic
        self.by_user_topic = by_user_topic
        self.dlq_topic = dlq_topic
        self.router = router
        self.producer = producer
        self.consumer_settings = consumer_settings
        self.offsets_gauges = offsets_gauges
        self.consumer: Any = None
        self.committed: dict[Any, int] = {}
        self.outage = Outage("ingest: cannot deliver to Kafka", "ingest: delivering again")

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        self.consumer = AIOKafkaConsumer(
            self.input_topic,
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
            **self.consumer_settings,
            **client_kwargs(),
        )
        await self.consumer.start()
        log.info("ingest: reading %s as group %s", self.input_topic, self.group_id)
        try:
            while True:
                polled = await self.consumer.getmany(timeout_ms=200, max_records=20000)
                if polled:
                    await self._handle_or_rewind(polled)
                self._export_offsets()
        finally:
            await self.consumer.stop()

    async def _handle_or_rewind(self, polled: dict[Any, list[Any]]) -> None:
        """A broker outage must neither stop the worker nor lose a batch: if the
        batch's output cannot be delivered, read the same messages again later."""
        from aiokafka.errors import KafkaError

        try:
            await self._handle(polled)
        except KafkaError as exc:
            self.outage.failed(exc)
            assigned = self.consumer.assignment()
            for tp, batch in polled.items():
                if tp in assigned:
                    self.consumer.seek(tp, batch[0].offset)
            await asyncio.sleep(1.0)
        else:
            self.outage.ok()

    async def _handle(self, polled: dict[Any, list[Any]]) -> None:
        from aiokafka.errors import CommitFailedError

        messages = [m for batch in polled.values() for m in batch]
        now_ms = int(time.time() * 1000)
        by_partition, dead = self.router.route(messages, now_ms)
        sends = []
        for partition, events in by_partition.items():
            for start in range(0, len(events), MAX_EVENTS_PER_MESSAGE):
                chunk = events[start : start + MAX_EVENTS_PER_MESSAGE]
                sends.append(
                    await self.producer.send(
                        self.by_user_topic, encode_batch(partition, chunk), partition=partition
                    )
                )
        for message, exc in dead:
            sends.append(
                await self.producer.send(
                    self.dlq_topic,
                    message.value,
                    key=message.key,
                    headers=dlq_headers(
                        exc.reason, exc.detail, message.topic, message.partition, message.offset
                    ),
                )
            )
        if sends:
            await asyncio.gather(*sends)
        offsets = {tp: batch[-1].offset + 1 for tp, batch in polled.items()}
        try:
            await self.consumer.commit(offsets)
        except CommitFailedError as exc:
            # the group moved on (e.g. after a broker restart): whoever owns these
            # partitions now reads them again from the last commit — duplicates,
            # which the state absorbs, never a loss
            log.warning("ingest: commit failed, the batch will be read again: %s", exc)
            return
        self.committed.update(offsets)

    def _export_offsets(self) -> None:
        """Ingest lag into Faust's offset gauges, so one lag rule covers every stage."""
        if self.offsets_gauges is None or self.consumer is None:
            return
        end_gauge, committed_gauge = self.offsets_gauges
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                end_gauge.labels(tp.topic, str(tp.partition)).set(highwater)
            committed = self.committed.get(tp)
            if committed is not None:
                committed_gauge.labels(tp.topic, str(tp.partition)).set(committed)
