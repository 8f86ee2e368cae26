"""Stage 1 without Kafka: no message stops the router, dead letters always fit, and a
record the broker refuses for its own sake never rewinds the poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

import agents.ingest as ingest
from agents.dead_letters import MAX_KEY_BYTES, DeadLetter, dead_letter, deliver
from agents.ingest import (
    MAX_BATCH_BYTES,
    IngestStage,
    Router,
    decode_batch,
    encode_batches,
)
from agents.labels import CommunityLabels
from agents.metrics import IngestStats
from streams.events import InvalidEvent, Limits, format_ts

NOW = int(time.time() * 1000)


@dataclass
class Msg:
    value: bytes | None
    offset: int = 0
    key: bytes | None = None
    topic: str = "in"
    partition: int = 0


def event(user: str = "u-1", **changes: Any) -> bytes:
    obj = {
        "event_id": "e",
        "ts": format_ts(NOW - 1000),
        "platform": "tw",
        "community": "acme",
        "user_id": user,
        "type": "like",
    }
    return orjson.dumps({**obj, **changes})


def router() -> Router:
    return Router(4, Limits(), IngestStats(CommunityLabels(1000)))


def test_unexpected_exception_is_an_internal_error_dead_letter(monkeypatch: Any) -> None:
    """Regression: only InvalidEvent was caught; any other exception stopped the
    worker, and it died again on the same message after every restart."""
    real = ingest.parse_event

    def flaky(raw: bytes | None, now_ms: int, limits: Limits, transform: Any = None) -> Any:
        if raw == b"boom":
            raise ZeroDivisionError("surprise")
        return real(raw, now_ms, limits, transform)

    monkeypatch.setattr(ingest, "parse_event", flaky)
    r = router()
    messages = [Msg(event("u-1"), 0), Msg(b"boom", 1), Msg(event("u-2"), 2)]
    tally = r.stats.tally()
    by_partition, dead = r.route(messages, NOW, tally)  # type: ignore[arg-type]
    assert sum(len(v) for v in by_partition.values()) == 2
    assert [(m.offset, e.reason, e.exception) for m, e in dead] == [
        (1, "internal_error", "ZeroDivisionError")
    ]
    assert tally.invalid == {"internal_error": 1}
    headers = dict(dead_letter(dead[0][0], dead[0][1], 4096).headers)
    assert headers["exception"] == b"ZeroDivisionError"
    assert headers["reason"] == b"internal_error"


def test_deeply_nested_type_is_a_dead_letter() -> None:
    """Regression: a 2 KB event with ``type`` nested 1,000 deep crashed the worker."""
    nested = event().replace(b'"like"', b"[" * 1000 + b"]" * 1000)
    by_partition, dead = router().route([Msg(nested), Msg(event())], NOW)  # type: ignore[arg-type]
    assert [e.reason for _, e in dead] == ["bad_type"]
    assert sum(len(v) for v in by_partition.values()) == 1


def test_too_large_dead_letter_is_truncated_with_its_original_size() -> None:
    """Regression: a too_large record went whole to the DLQ (up to the fetch size),
    over the producer's and the broker's limits."""
    big = Msg(b"x" * 3_000_000, 7, key=b"k" * 5000)
    _, dead = router().route([big], NOW)  # type: ignore[arg-type]
    letter = dead_letter(dead[0][0], dead[0][1], 4096)
    headers = dict(letter.headers)
    assert letter.value == b"x" * 4096
    assert letter.key == b"k" * MAX_KEY_BYTES
    assert headers["reason"] == b"too_large"
    assert headers["original_size"] == b"3000000"
    assert headers["original_key_size"] == b"5000"
    assert headers["source_offset"] == b"7"
    assert sum(len(k) + len(v) for k, v in letter.headers) < 2000


def test_by_user_batches_stay_below_the_record_limit() -> None:
    """Regression: 4,000 events with 128-character names made a 1.3 MB message,
    which the broker refuses (1 MiB), and the poll was retried forever."""
    events = [[NOW, "p" * 32, "c" * 128, f"{i:0>128}", "like"] for i in range(9000)]
    batches = encode_batches(3, events)
    assert all(len(b) <= MAX_BATCH_BYTES for b in batches)
    assert [e for b in batches for e in decode_batch(b)[1]] == events
    assert {decode_batch(b)[0] for b in batches} == {3}


@dataclass
class FakeProducer:
    """Refuses values over ``limit`` (at enqueue or at delivery, like aiokafka and
    the broker), or fails every send while ``down``."""

    limit: int = 1000
    at_enqueue: bool = True
    down: bool = False
    sent: list[tuple[str, bytes | None, dict[str, bytes]]] = field(default_factory=list)

    async def send(self, topic: str, value: bytes | None, **kwargs: Any) -> Any:
        assert value is not None or kwargs.get("key") is not None, "aiokafka: key or value"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        size = len(value or b"")
        if self.down:
            future.set_exception(KafkaConnectionError("broker away"))
        elif size > self.limit and self.at_enqueue:
            raise MessageSizeTooLargeError("too big for max_request_size")
        elif size > self.limit:
            future.set_exception(MessageSizeTooLargeError("broker says too big"))
        else:
            self.sent.append((topic, value, dict(kwargs.get("headers") or [])))
            future.set_result(None)
        return future


@pytest.mark.parametrize("at_enqueue", [True, False])
async def test_refused_dead_letter_goes_out_stripped(at_enqueue: bool) -> None:
    producer = FakeProducer(limit=100, at_enqueue=at_enqueue)
    letters = [
        DeadLetter(None, b"y" * 500, [("reason", b"too_large")]),
        DeadLetter(None, b"ok", []),
    ]
    assert await deliver(producer, "dlq", letters) == 1
    assert sorted(v or b"" for _, v, _ in producer.sent) == [b"", b"ok"]
    stripped = next(h for _, v, h in producer.sent if v == b"")
    assert stripped == {"reason": b"too_large", "send_error": b"MessageSizeTooLargeError"}


async def test_broker_outage_is_raised_for_a_rewind() -> None:
    with pytest.raises(KafkaConnectionError):
        await deliver(FakeProducer(down=True), "dlq", [DeadLetter(None, b"v", [])])


class FakeConsumer:
    def __init__(self, tp: Any) -> None:
        self.tp = tp
        self.seeks: list[tuple[Any, int]] = []

    def assignment(self) -> set[Any]:
        return {self.tp}

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))


class FakeTransaction:
    def __init__(self, producer: FakeProducer) -> None:
        self.producer = producer
        self.futures: list[Any] = []
        self.offsets: list[dict[Any, int]] = []

    async def send(self, topic: str, value: bytes | None, **kwargs: Any) -> Any:
        future = await self.producer.send(topic, value, **kwargs)
        self.futures.append(future)
        return future

    async def send_many(self, topic: str, partition: int, records: list[Any]) -> None:
        for _key, value in records:
            await self.send(topic, value)

    async def partition_count(self, topic: str) -> int:
        return 1

    async def send_offsets(self, offsets: dict[Any, int], group_id: str) -> None:
        self.offsets.append(offsets)


class FakeProducers:
    """Transactions over a :class:`FakeProducer`, with aiokafka's rule: a record the
    broker refused fails the whole transaction (its records are then aborted)."""

    def __init__(self, producer: FakeProducer) -> None:
        self.producer = producer
        self.committed_offsets: list[dict[Any, int]] = []

    def owns(self, partition: int) -> bool:
        return True

    @asynccontextmanager
    async def transaction(self, partition: int) -> AsyncIterator[FakeTransaction]:
        txn = FakeTransaction(self.producer)
        mark = len(self.producer.sent)
        try:
            yield txn
            for result in await asyncio.gather(*txn.futures, return_exceptions=True):
                if isinstance(result, BaseException):
                    raise result
        except BaseException:
            del self.producer.sent[mark:]  # aborted: read_committed readers never see it
            raise
        self.committed_offsets += txn.offsets


def stage_with(producers: FakeProducers, router: Router) -> tuple[IngestStage, Any]:
    """An ingest stage over fakes (topics in, by-user, dlq, counters) owning ``in``/0."""
    stage = IngestStage(
        bootstrap="",
        group_id="g",
        input_topic="in",
        by_user_topic="by-user",
        dlq_topic="dlq",
        counters_topic="counters",
        router=router,
        producers=producers,  # type: ignore[arg-type]
        consumer_settings={},
    )
    tp = TopicPartition("in", 0)
    stage.consumer = FakeConsumer(tp)
    stage.next_offset[tp] = None
    return stage, tp


@pytest.mark.parametrize("at_enqueue", [True, False])
async def test_a_refused_record_never_rewinds_the_poll(at_enqueue: bool) -> None:
    """Regression: MessageSizeTooLargeError is a KafkaError, so the stage rewound the
    poll and retried it every second forever, counting its valid events each time.
    In a transaction, a record the broker refuses aborts the whole poll: it goes
    again at once with the dead letters stripped, and is counted once."""
    producer = FakeProducer(limit=10_000, at_enqueue=at_enqueue)
    producers = FakeProducers(producer)
    stage, tp = stage_with(
        producers, Router(4, Limits(max_message_bytes=20_000), IngestStats(CommunityLabels(10)))
    )
    polled = [Msg(event(), 0), Msg(b"z" * 15_000, 1), Msg(event("u-2"), 2), Msg(None, 3)]
    await stage._handle_or_rewind(tp, polled)
    assert stage.consumer.seeks == []
    assert producers.committed_offsets == [{tp: 4}]
    letters = [(v, h) for t, v, h in producer.sent if t == "dlq"]
    # a null value with no key: the dead letter has an empty value (aiokafka needs one)
    null = [(v, h["source_offset"]) for v, h in letters if h["original_size"] == b"-1"]
    assert null == [(b"", b"3")]
    dlq = [(v, h) for v, h in letters if h["original_size"] != b"-1"]
    assert [(v, h["reason"], h["send_error"]) for v, h in dlq] == [
        (b"", b"not_json", b"MessageSizeTooLargeError")
    ]
    by_user = [decode_batch(v or b"")[1] for t, v, _ in producer.sent if t == "by-user"]
    assert sorted(e[3] for batch in by_user for e in batch) == ["u-1", "u-2"]
    counters = stage.router.stats.partitions[0]
    assert sum(counters.events.values()) == 2
    assert counters.invalid["not_json"] == 2  # the oversized value and the null one


def test_internal_error_keeps_reason_closed() -> None:
    error = InvalidEvent.internal(RecursionError("deep"))
    assert (error.reason, error.exception) == ("internal_error", "RecursionError")


async def test_a_large_poll_lets_the_event_loop_through_while_it_is_judged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: a poll of 20,000 hostile messages was judged in one go, holding the
    event loop for seconds (tens on a loaded machine): heartbeats, the state agent and
    /metrics waited. Now other tasks run between slices of the poll (here every slice
    takes its turn's time), and the poll's outcome is the same, its valid events
    counted once, in one transaction."""
    monkeypatch.setattr(ingest, "ROUTE_TURN_SECONDS", 0.0)
    producer = FakeProducer(limit=10**6)
    producers = FakeProducers(producer)
    stage, tp = stage_with(producers, router())
    size = 4 * ingest.ROUTE_SLICE
    polled = [Msg(event(f"u-{i}") if i % 2 else b"junk", i) for i in range(size)]
    sent_at_turn: list[int] = []  # what had been sent when another task got a turn

    async def watch() -> None:
        while True:
            sent_at_turn.append(len(producer.sent))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    before = len(sent_at_turn)
    await stage._handle_or_rewind(tp, polled)
    watcher.cancel()
    # turns while the poll was judged (nothing sent yet): one after every slice
    assert sent_at_turn[before:].count(0) >= 3, sent_at_turn
    counters = stage.router.stats.partitions[0]
    assert sum(counters.events.values()) == size // 2
    assert counters.invalid["not_json"] == size // 2
    letters = [h["source_offset"] for t, _, h in producer.sent if t == "dlq"]
    assert letters == [str(i).encode() for i in range(0, size, 2)]
    by_user = [decode_batch(v or b"")[1] for t, v, _ in producer.sent if t == "by-user"]
    users = sorted(e[3] for batch in by_user for e in batch)
    assert users == sorted(f"u-{i}" for i in range(1, size, 2))
    assert producers.committed_offsets == [{tp: size}]


async def test_a_poll_read_before_a_rebalance_that_moved_the_start_commits_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The partition went to another worker and came back while this poll was being
    judged; the other worker committed further meanwhile. Committing the poll would
    count its messages a second time and move the committed offset back."""
    monkeypatch.setattr(ingest, "ROUTE_TURN_SECONDS", 0.0)
    producer = FakeProducer(limit=10**6)
    producers = FakeProducers(producer)
    stage, tp = stage_with(producers, router())
    stage.next_offset[tp] = 0
    polled = [Msg(event(f"u-{i}"), i) for i in range(2 * ingest.ROUTE_SLICE)]

    async def rebalance() -> None:
        await asyncio.sleep(0)  # while the poll is judged
        stage.next_offset[tp] = 400  # re-assigned: the committed offset moved on

    moved = asyncio.create_task(rebalance())
    assert not await stage._handle_or_rewind(tp, polled)
    await moved
    assert producers.committed_offsets == [] and producer.sent == []
    assert stage.next_offset[tp] == 400


async def test_a_rewind_drops_what_was_polled_behind_the_batch() -> None:
    """Polls go on while a partition's transaction is in flight (agents/ingest_lanes.py);
    when the batch turns out not to start where the partition's next one must, the
    partition is rewound, and what was polled behind it is dropped with it (read
    again from the rewound position), not handled as if it followed on."""
    producer = FakeProducer(limit=10**6)
    producers = FakeProducers(producer)
    stage, tp = stage_with(producers, router())
    stage.next_offset[tp] = 0
    stage.lanes.submit(tp, [Msg(event("u-5"), 5), Msg(event("u-6"), 6)])
    stage.lanes.submit(tp, [Msg(event("u-7"), 7)])  # waits for the first
    assert stage.lanes.waiting(tp) == 1
    await stage.lanes.drain()
    assert stage.consumer.seeks == [(tp, 0)]  # once: the second batch never ran
    assert producer.sent == []
    assert producers.committed_offsets == []
