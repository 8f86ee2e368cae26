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
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson

from agents.codec_guard import probe, refusal, rewind
from agents.dead_letters import DeadLetter, dead_letter, deliver
from agents.kafka_security import client_kwargs
from agents.metrics import LAG_BUCKETS, IngestStats
from agents.outage import Outage
from streams.events import InvalidEvent, Limits, parse_event
from streams.topics import partition_for_user

log = logging.getLogger(__name__)

#: Most events carried by one message of the by-user topic (an event is ~60 bytes
#: there)...
MAX_EVENTS_PER_MESSAGE = 4000
#: ...and most bytes: names of up to 128 characters make events of up to ~2 KB,
#: and a message must stay below Kafka's default 1 MiB record limit.
MAX_BATCH_BYTES = 900 * 1024
#: Messages judged at a time (a few ms of valid events; ~0.5 s of the costliest
#: hostile ones, JSON nested 1,000 deep, on a loaded core)...
ROUTE_SLICE = 250
#: ...and how long the stage may hold the event loop before it lets it through.
ROUTE_TURN_SECONDS = 0.02


def encode_batch(partition: int, events: list[list[Any]]) -> bytes:
    """A by-user message: ``[partition, [[ts_ms, platform, community, user_id, type], ...]]``."""
    return orjson.dumps([partition, events])


def encode_batches(partition: int, events: list[list[Any]]) -> list[bytes]:
    """By-user messages for a partition's events: at most
    :data:`MAX_EVENTS_PER_MESSAGE` events and :data:`MAX_BATCH_BYTES` bytes each
    (a chunk too large is halved until it fits)."""
    out: list[bytes] = []
    pending = [
        events[start : start + MAX_EVENTS_PER_MESSAGE]
        for start in range(0, len(events), MAX_EVENTS_PER_MESSAGE)
    ]
    while pending:
        chunk = pending.pop(0)
        raw = encode_batch(partition, chunk)
        if len(raw) > MAX_BATCH_BYTES and len(chunk) > 1:
            half = len(chunk) // 2
            pending[:0] = [chunk[:half], chunk[half:]]
        else:
            out.append(raw)
    return out


def decode_batch(raw: bytes) -> tuple[int, list[list[Any]]]:
    partition, events = orjson.loads(raw)
    return partition, events


@dataclass
class Tally:
    """Counts of one poll's valid events, handed to the stats once: the stats look
    the label caps up per (platform, community, type), so per slice of a poll would
    cost a quarter of the routing itself."""

    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    lag_buckets: list[int] = field(default_factory=lambda: [0] * (len(LAG_BUCKETS) + 1))
    lag_sum: float = 0.0


class Router:
    """Pure part of stage 1: messages in, by-user batches and dead letters out."""

    def __init__(
        self,
        partitions: int,
        limits: Limits,
        stats: IngestStats,
        pseudonymise: Callable[[str], str] | None = None,
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.partitions = partitions
        #: EM_INPUT_MAPPING: reshapes each decoded message before validation
        self.transform = transform
        self.limits = limits
        self.stats = stats
        #: EM_USER_ID_KEY: ids are replaced here, before anything is stored or sent
        self.pseudonymise = pseudonymise

    def route(
        self, messages: list[Any], now_ms: int, tally: Tally | None = None
    ) -> tuple[dict[int, list[list[Any]]], list[tuple[Any, InvalidEvent]]]:
        """Valid events grouped by user partition, and the dead letters.

        Counts are tallied in locals and handed to the stats once per poll (into
        ``tally`` when given, for the caller to hand over): the per-event cost here
        is most of the ingest stage's budget.
        """
        by_partition: defaultdict[int, list[list[Any]]] = defaultdict(list)
        dead: list[tuple[Any, InvalidEvent]] = []
        poll = Tally() if tally is None else tally
        counts, lag_buckets, lag_sum = poll.counts, poll.lag_buckets, 0.0
        n, limits, bounds, pseudonymise = (
            self.partitions,
            self.limits,
            LAG_BUCKETS,
            self.pseudonymise,
        )
        for message in messages:
            try:
                _, ts_ms, platform, community, user_id, kind = parse_event(
                    message.value, now_ms, limits, self.transform
                )
                if pseudonymise is not None:
                    user_id = pseudonymise(user_id)
                partition = partition_for_user(user_id, n)
            except InvalidEvent as exc:
                self.stats.count_invalid(exc.reason)
                dead.append((message, exc))
                continue
            except Exception as exc:  # noqa: BLE001 - no message may stop the worker
                dead.append((message, self._internal_error(exc, message)))
                continue
            by_partition[partition].append([ts_ms, platform, community, user_id, kind])
            key = (platform, community, kind)
            counts[key] = counts.get(key, 0) + 1
            lag = (now_ms - ts_ms) / 1000
            lag_buckets[bisect_left(bounds, lag)] += 1
            lag_sum += lag
        poll.lag_sum += lag_sum
        if tally is None:
            self.count(poll)
        return by_partition, dead

    def count(self, tally: Tally) -> None:
        self.stats.add(tally.counts, tally.lag_buckets, tally.lag_sum)

    def _internal_error(self, exc: Exception, message: Any) -> InvalidEvent:
        """A bug or an input the validator did not foresee: dead-letter the message
        and go on. Logged at 1, 2, 4, 8, … occurrences, so a flood stays readable."""
        self.stats.count_invalid("internal_error")
        count = self.stats.invalid["internal_error"]
        if count & (count - 1) == 0:
            log.warning(
                "ingest: unexpected %s on %s[%d]@%d (occurrence %d), sent to the DLQ",
                type(exc).__name__,
                message.topic,
                message.partition,
                message.offset,
                count,
            )
        return InvalidEvent.internal(exc)


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
                try:
                    polled = await self.consumer.getmany(timeout_ms=200, max_records=20000)
                except Exception:  # noqa: BLE001 - a batch aiokafka cannot read
                    await self._skip_undecodable()
                    continue
                if polled:
                    await self._handle_or_rewind(polled)
                self._export_offsets()
        finally:
            await self.consumer.stop()

    async def _skip_undecodable(self) -> None:
        """After a batch aiokafka cannot read (too large once decompressed, corrupt):
        every partition back to its last commit; the one that fails is read record
        by record up to the bad offset, which is dead-lettered by its coordinates
        and passed. Nothing before it is lost, nothing after it waits."""
        assigned = sorted(self.consumer.assignment())
        for tp in assigned:
            await rewind(self.consumer, tp)
        for tp in assigned:
            found = await probe(self.consumer, tp)
            if found.bad_offset is None or found.error is None:
                await rewind(self.consumer, tp)  # read again by the main loop
                continue
            if found.records:
                await self._handle({tp: found.records})
            error = refusal(found.error)
            self.router.stats.count_invalid(error.reason)
            offset = found.bad_offset
            where = SimpleNamespace(
                topic=tp.topic,
                partition=tp.partition,
                offset=found.bad_offset,
                key=None,
                value=None,
            )
            letter = dead_letter(where, error, 0)
            await deliver(self.producer, self.dlq_topic, [letter])
            await self.consumer.commit({tp: offset + 1})
            self.consumer.seek(tp, offset + 1)

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
        by_partition, letters = await self._route(messages, int(time.time() * 1000))
        sends = []
        for partition, events in by_partition.items():
            for raw in encode_batches(partition, events):
                sends.append(await self.producer.send(self.by_user_topic, raw, partition=partition))
        await deliver(self.producer, self.dlq_topic, letters)
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

    async def _route(
        self, messages: list[Any], now_ms: int
    ) -> tuple[dict[int, list[list[Any]]], list[DeadLetter]]:
        """The poll's events by user partition and its dead letters, judged
        :data:`ROUTE_SLICE` messages at a time, with the event loop let through
        whenever :data:`ROUTE_TURN_SECONDS` have passed. A hostile message costs up
        to ~100 times a valid one to judge (deep nesting), so a poll of 20,000 of
        them held the loop for seconds, tens of seconds on a loaded machine: the
        ingest group's heartbeats, the state agent, the Faust consumer thread's
        wake-ups and /metrics waited, and a poll longer than the session timeout
        cost the group membership (the poll was then read again and counted twice)."""
        by_partition: defaultdict[int, list[list[Any]]] = defaultdict(list)
        letters: list[DeadLetter] = []
        max_bytes = self.router.limits.max_message_bytes
        tally, turn = Tally(), time.monotonic()
        for start in range(0, len(messages), ROUTE_SLICE):
            routed, dead = self.router.route(messages[start : start + ROUTE_SLICE], now_ms, tally)
            for partition, events in routed.items():
                by_partition[partition] += events
            letters += [dead_letter(message, exc, max_bytes) for message, exc in dead]
            if time.monotonic() - turn >= ROUTE_TURN_SECONDS:
                await asyncio.sleep(0)
                turn = time.monotonic()
        self.router.count(tally)
        return by_partition, letters

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
