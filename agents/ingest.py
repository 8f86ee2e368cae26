"""Stage 1: validate raw events and regroup them by user partition.

The input topic carries one event per message, and Faust's per-message cost caps
any Faust stream at ~12k messages/s per core. This stage therefore reads the input
with a plain aiokafka consumer in bulk (``getmany``), validates each message,
routes invalid ones to the dead-letter topic, and writes the valid ones to the
internal by-user topic as *batches*: one Kafka message per (partition, poll)
carrying many events of that partition's users. The Faust agent of stage 2 then
pays its per-message cost once per batch.

Delivery is exactly once per input partition: each poll's by-user batches, dead
letters and input offsets of one input partition are one Kafka transaction of that
partition's fenced producer (:mod:`agents.producer`), so they are committed
together or not at all, and a worker that lost the partition cannot add to them
once the new owner has started. The new owner reads the committed offsets only
after its producers have fenced the old ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import orjson
from aiokafka.abc import ConsumerRebalanceListener

from agents import ingest_counters
from agents.codec_guard import probe, refusal, rewind
from agents.dead_letters import DeadLetter, dead_letter, deliver, record_errors
from agents.ingest_counters import PollTally
from agents.ingest_lanes import Lanes
from agents.kafka_security import client_kwargs
from agents.lag_offsets import OffsetGauges
from agents.metrics import LAG_BUCKETS, IngestStats
from agents.outage import Outage
from agents.producer import NotOwner, PartitionProducers
from streams.events import InvalidEvent, Limits, parse_event
from streams.topics import partition_for_user

log = logging.getLogger(__name__)

#: Most events carried by one message of the by-user topic (an event is ~60 bytes
#: there)...
MAX_EVENTS_PER_MESSAGE = 4000
#: ...and most bytes: names of up to 128 characters make events of up to ~2 KB,
#: and a message must stay below Kafka's default 1 MiB record limit.
MAX_BATCH_BYTES = 900 * 1024

#: What the input consumer fetches ahead (per partition, and per fetch in all): the
#: raw record sets stay in memory until every record of them is taken, and the
#: process keeps the heap they grew. 1 MiB per partition is ~6,900 events of
#: ~150 B, several polls' worth at full rate; 4 MiB and 16 MiB (before) held ~124 MiB
#: of fetch responses at 1M records, ~90 B per stored record (docs/benchmarks.md).
PARTITION_FETCH_BYTES = 1024 * 1024
FETCH_MAX_BYTES = 4 * 1024 * 1024
#: Messages judged at a time (a few ms of valid events; ~0.5 s of the costliest
#: hostile ones, JSON nested 1,000 deep, on a loaded core)...
ROUTE_SLICE = 250
#: ...and how long the stage may hold the event loop before it lets it through.
ROUTE_TURN_SECONDS = 0.02
#: Dead letters of an unreadable batch per transaction (a bomb may hold millions).
LETTERS_PER_SEND = 10_000
#: Messages of one partition that may wait while its transaction is in flight
#: before the partition is paused (two polls' worth).
WAITING_LIMIT = 40_000


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


class _Fence(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka rebalance listener: producers follow the assignment."""

    def __init__(self, stage: IngestStage) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        await self.stage.on_revoked()

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        await self.stage.on_assigned(assigned)


def _strip(letter: DeadLetter, error: str) -> DeadLetter:
    return DeadLetter(None, b"", [*letter.headers, ("send_error", error.encode())])


def _refusal(exc: BaseException) -> BaseException | None:
    """The record error behind a failed transaction, if that is what failed it."""
    for candidate in (exc, getattr(exc, "cause", None)):
        if isinstance(candidate, record_errors()):
            return candidate
    return None


class Superseded(Exception):
    """A poll read before a rebalance: the partition is owned, but starts elsewhere now."""


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
        self.internal_errors = 0

    def route(
        self, messages: list[Any], now_ms: int, tally: PollTally | None = None
    ) -> tuple[dict[int, list[list[Any]]], list[tuple[Any, InvalidEvent]]]:
        """Valid events grouped by user partition, and the dead letters.

        Counts are tallied in locals and handed to ``tally`` once per poll: the
        per-event cost here is most of the ingest stage's budget. The stage applies
        the tally to the partition's counters only once its transaction committed.
        """
        tally = tally if tally is not None else self.stats.tally()
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
                    message.value, now_ms, limits, self.transform
                )
                if pseudonymise is not None:
                    user_id = pseudonymise(user_id)
                partition = partition_for_user(user_id, n)
            except InvalidEvent as exc:
                tally.count_invalid(exc.reason)
                dead.append((message, exc))
                continue
            except Exception as exc:  # noqa: BLE001 - no message may stop the worker
                dead.append((message, self._internal_error(exc, message, tally)))
                continue
            by_partition[partition].append([ts_ms, platform, community, user_id, kind])
            key = (platform, community, kind)
            counts[key] = counts.get(key, 0) + 1
            lag = (now_ms - ts_ms) / 1000
            lag_buckets[bisect_left(bounds, lag)] += 1
            lag_sum += lag
        tally.add(counts, lag_buckets, lag_sum)
        return by_partition, dead

    def _internal_error(self, exc: Exception, message: Any, tally: PollTally) -> InvalidEvent:
        """A bug or an input the validator did not foresee: dead-letter the message
        and go on. Logged at 1, 2, 4, 8, … occurrences (in this process), so a flood
        stays readable."""
        tally.count_invalid("internal_error")
        self.internal_errors += 1
        count = self.internal_errors
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
    """The I/O around :class:`Router`: consume, then produce and commit in transactions."""

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        input_topic: str,
        by_user_topic: str,
        dlq_topic: str,
        counters_topic: str,
        router: Router,
        producers: PartitionProducers,
        consumer_settings: dict[str, Any],
        offsets: OffsetGauges | None = None,
        txn_spacing: float = 0.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.input_topic = input_topic
        self.by_user_topic = by_user_topic
        self.dlq_topic = dlq_topic
        self.counters_topic = counters_topic
        self.router = router
        self.producers = producers
        self.consumer_settings = consumer_settings
        self.offsets = offsets
        self.consumer: Any = None
        self.committed: dict[Any, int] = {}
        #: where each owned input partition's next batch must start (None: unknown)
        self.next_offset: dict[Any, int | None] = {}
        self.outage = Outage("ingest: cannot deliver to Kafka", "ingest: delivering again")
        #: each input partition's transactions, one at a time, while the next polls
        #: are read (agents/ingest_lanes.py)
        self.lanes = Lanes(
            self._handle_or_rewind,
            self._pause,
            self._resume,
            WAITING_LIMIT,
            txn_spacing,
        )
        producers.on_given_up = self._request_rejoin

    def _request_rejoin(self, partition: int) -> None:
        """A partition given up between assignments (agents.producer): rebalance, so
        that the group says who owns it and its producer is made again only then."""
        coordinator = getattr(self.consumer, "_coordinator", None)
        if coordinator is not None:
            log.info("ingest: partition %d given up; asking the group to rebalance", partition)
            coordinator.request_rejoin()

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
            fetch_max_bytes=FETCH_MAX_BYTES,
            **self.consumer_settings,
            **client_kwargs(),
        )
        await self.consumer.start()
        self.consumer.subscribe([self.input_topic], listener=_Fence(self))
        log.info("ingest: reading %s as group %s", self.input_topic, self.group_id)
        try:
            while True:
                try:
                    polled = await self.consumer.getmany(timeout_ms=200, max_records=20000)
                except Exception:  # noqa: BLE001 - a batch aiokafka cannot read
                    await self.lanes.drain()  # what was read before it, committed first
                    await self._skip_undecodable()
                    continue
                self.lanes.check()
                for tp, messages in polled.items():
                    self.lanes.submit(tp, messages)
                self._drop_unassigned()
                self._export_offsets()
        finally:
            await self.lanes.cancel()
            await self.consumer.stop()
            await self.producers.revoke_all()

    async def _skip_undecodable(self) -> None:
        """After a batch aiokafka cannot read (too large once decompressed, corrupt):
        every partition back to its last commit; the one that fails is read up to
        the bad offset, whose batch (a bomb's, whole; else that offset) is
        dead-lettered by its coordinates and passed (in transactions with its
        counters and offsets). Nothing before it is lost, nothing after it waits."""
        assigned = sorted(self.consumer.assignment())
        for tp in assigned:
            await rewind(self.consumer, tp)
        for tp in assigned:
            found = await probe(self.consumer, tp)
            if found.bad_offset is None or found.error is None:
                await rewind(self.consumer, tp)  # read again by the main loop
                continue
            if found.records and not await self._handle_or_rewind(tp, found.records):
                await rewind(self.consumer, tp)  # not handled (yet): all read again
                continue
            if not self._expects(tp, found.bad_offset):
                continue
            end = found.end or found.bad_offset + 1
            for first in range(found.bad_offset, end, LETTERS_PER_SEND):
                last = min(end, first + LETTERS_PER_SEND)
                if not await self._pass_unreadable(tp, first, last, found.error):
                    break

    async def _pass_unreadable(self, tp: Any, start: int, end: int, error: Exception) -> bool:
        """Dead letters for the offsets [start, end) of a batch that cannot be read, by
        their coordinates only, in one transaction with their counters and the
        offset. False: the partition is no longer ours."""
        stats = self.router.stats
        tally = stats.tally()
        reason = refusal(error)  # a bomb is too_large, anything else internal_error
        letters = []
        for offset in range(start, end):
            tally.count_invalid(reason.reason)
            where = SimpleNamespace(
                topic=tp.topic, partition=tp.partition, offset=offset, key=None, value=None
            )
            letters.append(dead_letter(where, reason, 0))
        counters, changed = ingest_counters.apply(tally, stats.counters(tp.partition))
        try:
            async with self.producers.transaction(tp.partition) as txn:
                self._still_next(tp, start)
                await self._send_counters(txn, tp, changed)
                await deliver(txn, self.dlq_topic, letters)
                await txn.send_offsets({tp: end}, self.group_id)
        except (NotOwner, Superseded):
            return False
        self._committed_poll(tp, counters, end)
        self.consumer.seek(tp, end)
        return True

    async def on_assigned(self, assigned: set[Any]) -> None:
        """Fence the previous owners first, then read where they stopped: their last
        transaction is by then committed (offsets visible) or aborted."""
        partitions = {tp.partition for tp in assigned}
        await self.producers.assign(partitions)
        stats = self.router.stats
        stats.partitions = await ingest_counters.load(
            self.bootstrap, self.counters_topic, partitions, len(LAG_BUCKETS) + 1
        )
        for tp in assigned:
            # what was fetched meanwhile was skipped (see _handle_or_rewind): seek
            self.lanes.forget(tp)
            committed = await self.consumer.committed(tp)
            if committed is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)
            self.next_offset[tp] = committed

    async def on_revoked(self) -> None:
        self.lanes.forget_waiting()  # read again by whoever owns them next
        self.next_offset.clear()
        self.router.stats.partitions = {}
        await self.producers.revoke_all()

    async def _handle_or_rewind(self, tp: Any, messages: list[Any]) -> bool:
        """A broker outage must neither stop the worker nor lose a batch: if the
        transaction fails, read the same messages again later. True: committed."""
        from aiokafka.errors import KafkaError

        if not self._expects(tp, messages[0].offset):
            return False
        try:
            await self._transact(tp, messages)
        except NotOwner:  # fenced: another worker owns it and exposes its counters
            self.next_offset.pop(tp, None)
            self.router.stats.partitions.pop(tp.partition, None)
            return False
        except Superseded:  # read before a rebalance that re-assigned the partition
            return False
        except KafkaError as exc:
            self.outage.failed(exc)
            self._rewind(tp, messages[0].offset)
            await asyncio.sleep(1.0)
            return False
        self.outage.ok()
        return True

    def _expects(self, tp: Any, offset: int) -> bool:
        """Whether a batch starting at ``offset`` is the next one of an owned partition.
        Not while the assignment is in progress (no ``next_offset`` yet: it will seek)
        or after the partition moved; a batch read before the seek to the committed
        offset is read again from there."""
        expected = self.next_offset.get(tp, -1)
        if expected == -1 or not self.producers.owns(tp.partition):
            return False
        if expected is not None and offset != expected:
            self._rewind(tp, expected)
            return False
        return True

    def _still_next(self, tp: Any, offset: int) -> None:
        """Inside the transaction, after the awaits of routing: raise
        :class:`Superseded` if a rebalance came between and the partition's next batch
        no longer starts at ``offset`` (its new start is the committed offset, which
        another owner may have moved on): committing this one would count its
        messages twice and move the offsets back."""
        expected = self.next_offset.get(tp, -1)
        if expected == -1 or (expected is not None and expected != offset):
            raise Superseded(tp)

    async def _transact(self, tp: Any, messages: list[Any]) -> None:
        """A dead letter the broker refuses for its own sake dooms the whole
        transaction (aiokafka aborts it); never a rewind for that: the poll goes
        again at once with its dead letters stripped of key and value."""
        try:
            await self._handle(tp, messages)
        except Exception as exc:
            refusal = _refusal(exc)
            if refusal is None:
                raise
            log.warning("dlq: %s refused a dead letter, sending them without payload", refusal)
            await self._handle(tp, messages, stripped=type(refusal).__name__)

    def _pause(self, tp: Any) -> None:
        if tp in self.consumer.assignment():
            self.consumer.pause(tp)

    def _resume(self, tp: Any) -> None:
        """A partition revoked meanwhile is not resumed: aiokafka refuses, and a new
        assignment starts unpaused."""
        if tp in self.consumer.assignment():
            self.consumer.resume(tp)

    def _rewind(self, tp: Any, offset: int) -> None:
        self.lanes.forget(tp)  # read before the seek: not what follows the new position
        if tp in self.consumer.assignment():
            self.consumer.seek(tp, offset)

    async def _handle(self, tp: Any, messages: list[Any], stripped: str | None = None) -> None:
        now_ms = int(time.time() * 1000)
        stats = self.router.stats
        tally = stats.tally()
        by_partition, letters = await self._route(messages, now_ms, tally)
        counters, changed = ingest_counters.apply(tally, stats.counters(tp.partition))
        next_offset = messages[-1].offset + 1
        async with self.producers.transaction(tp.partition) as txn:
            self._still_next(tp, messages[0].offset)
            await self._send_counters(txn, tp, changed)
            for partition, events in by_partition.items():
                for raw in encode_batches(partition, events):
                    await txn.send(self.by_user_topic, raw, partition=partition)
            if stripped is not None:
                letters = [_strip(letter, stripped) for letter in letters]
            await deliver(txn, self.dlq_topic, letters)
            await txn.send_offsets({tp: next_offset}, self.group_id)
        self._committed_poll(tp, counters, next_offset)

    async def _route(
        self, messages: list[Any], now_ms: int, tally: PollTally
    ) -> tuple[dict[int, list[list[Any]]], list[DeadLetter]]:
        """The poll's events by user partition and its dead letters, judged
        :data:`ROUTE_SLICE` messages at a time, with the event loop let through
        whenever :data:`ROUTE_TURN_SECONDS` have passed. A hostile message costs up
        to ~100 times a valid one to judge (deep nesting), so a poll of 20,000 of
        them held the loop for seconds, tens of seconds on a loaded machine: the
        ingest group's heartbeats, the state agent, the Faust consumer thread's
        wake-ups and /metrics waited, and a poll longer than the session timeout
        cost the group membership."""
        by_partition: defaultdict[int, list[list[Any]]] = defaultdict(list)
        letters: list[DeadLetter] = []
        max_bytes = self.router.limits.max_message_bytes
        turn = time.monotonic()
        for start in range(0, len(messages), ROUTE_SLICE):
            routed, dead = self.router.route(messages[start : start + ROUTE_SLICE], now_ms, tally)
            for partition, events in routed.items():
                by_partition[partition] += events
            letters += [dead_letter(message, exc, max_bytes) for message, exc in dead]
            if time.monotonic() - turn >= ROUTE_TURN_SECONDS:
                await asyncio.sleep(0)
                turn = time.monotonic()
        return by_partition, letters

    async def _send_counters(self, txn: Any, tp: Any, changed: list[Any]) -> None:
        home = tp.partition % await txn.partition_count(self.counters_topic)
        await txn.send_many(
            self.counters_topic, home, ingest_counters.encode(tp.partition, changed)
        )

    def _committed_poll(self, tp: Any, counters: Any, next_offset: int) -> None:
        if self.producers.owns(tp.partition):  # not taken away while committing
            self.router.stats.partitions[tp.partition] = counters
        self.next_offset[tp] = next_offset
        self.committed[tp] = next_offset

    def _drop_unassigned(self) -> None:
        """Expose counters only of input partitions the consumer holds now: a worker
        expelled while busy (its session expired) may learn of it only at its next
        rejoin, and meanwhile the new owner exposes the same partition's counters."""
        held = {tp.partition for tp in self.consumer.assignment()}
        partitions = self.router.stats.partitions
        for partition in [p for p in partitions if p not in held]:
            del partitions[partition]

    def _export_offsets(self) -> None:
        """Ingest lag into Faust's offset gauges, so one lag rule covers every stage."""
        if self.offsets is None or self.consumer is None:
            return
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                self.offsets.end(tp.topic, tp.partition, highwater)
            committed = self.committed.get(tp)
            if committed is not None:
                self.offsets.committed(tp.topic, tp.partition, committed)
