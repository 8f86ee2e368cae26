"""replay on a real broker: files at max speed and topic time ranges arrive exactly."""

from __future__ import annotations

import argparse
import asyncio
import gzip
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.kafka_out import BatchWriter
from commands.replay import Replay, Tally, add_arguments
from streams.events import Event, Limits, parse_event
from tests.eventgen import event_to_json

pytestmark = pytest.mark.integration

T0 = 1_341_100_800  # 2012-07-01T00:00:00Z


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of a topic, read from the beginning up to its end offsets."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = await consumer._client._wait_on_metadata(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        records: list[Any] = []
        remaining = {tp for tp in tps if end[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=2000)
            for tp, items in batch.items():
                records.extend(items)
                if items and items[-1].offset >= end[tp] - 1:
                    remaining.discard(tp)
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        return records
    finally:
        await consumer.stop()


def replay(stack: Any, argv: list[str], to_topic: str, dlq: str) -> Tally:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([*argv, "--to-topic", to_topic, "--quiet"])
    # the files are from 2012: judged without the maximum age
    limits = Limits(max_event_age_ms=None)
    return asyncio.run(Replay(args, stack.kafka_bootstrap, to_topic, dlq, limits).run())


def snap_file(path: Path, good: int) -> tuple[list[str], list[str]]:
    lines, bad = [], []
    for i in range(good):
        lines.append(f"{1000 + i % 977} {i % 13} {T0 + i // 10} {('RT', 'MT', 'RE')[i % 3]}")
        if i % 1000 == 500:
            bad.append(f"{i} {i} sometime RT")
            lines.append(bad[-1])
    with gzip.open(path, "wt") as out:
        out.write("\n".join(lines) + "\n")
    return lines, bad


def test_file_replay_at_max_speed_sends_exactly_the_file(stack: Any, tmp_path: Path) -> None:
    path = tmp_path / "snap.txt.gz"
    lines, bad = snap_file(path, 20_000)
    topic, dlq = stack.unique_name("replay-out"), stack.unique_name("replay-dlq")

    tally = replay(stack, ["--file", str(path), "--format", "snap", "--speed", "max"], topic, dlq)

    assert (tally.sent, tally.bad, tally.failed) == (20_000, len(bad), 0)
    records = asyncio.run(read_topic(stack.kafka_bootstrap, topic))
    assert len(records) == 20_000
    now_ms = (T0 + 10**6) * 1000
    got = Counter((parse_event(r.value, now_ms), r.timestamp) for r in records)
    expected = []
    for line_no, line in enumerate(lines, start=1):
        if line in bad:
            continue
        user, community, ts, kind = line.split()
        event = Event(
            f"snap-{line_no}",
            int(ts) * 1000,
            "twitter",
            community,
            user,
            {"RT": "share", "MT": "mention", "RE": "reply"}[kind],
        )
        expected.append((event, event.ts_ms))  # the record timestamp is the event time
    assert got == Counter(expected)
    dead = asyncio.run(read_topic(stack.kafka_bootstrap, dlq))
    assert sorted(r.value.decode() for r in dead) == sorted(bad)
    headers = [dict(r.headers) for r in dead]
    assert {h["reason"] for h in headers} == {b"bad_timestamp"}
    assert all(h["source"].startswith(str(path).encode() + b":") for h in headers)
    line_of = {line: n for n, line in enumerate(lines, start=1)}
    assert sorted(h["source"].decode() for h in headers) == sorted(
        f"{path}:{line_of[b]}" for b in bad
    )


def test_file_replay_time_range_and_shift(stack: Any, tmp_path: Path) -> None:
    path = tmp_path / "snap.txt.gz"
    snap_file(path, 1000)  # T0 .. T0+99 s, 10 events per second
    topic, dlq = stack.unique_name("replay-range"), stack.unique_name("replay-dlq")
    start, end = f"{T0 + 10}", "2012-07-01T00:00:20Z"

    tally = replay(
        stack,
        [
            "--file",
            str(path),
            "--format",
            "snap",
            "--speed",
            "max",
            "--from",
            start,
            "--to",
            end,
            "--shift-to-now",
        ],
        topic,
        dlq,
    )

    assert (tally.sent, tally.skipped, tally.bad) == (100, 900, 1)
    records = asyncio.run(read_topic(stack.kafka_bootstrap, topic))
    events = [parse_event(r.value, 2**62, Limits(max_event_age_ms=None)) for r in records]
    assert len(events) == 100
    shift = min(e.ts_ms for e in events) - (T0 + 10) * 1000
    assert shift > 0  # moved to now: the range [T0+10, T0+20) now ends at the replay's start
    assert sorted(e.ts_ms - shift for e in events) == sorted(
        (T0 + 10 + i // 10) * 1000 for i in range(100)
    )
    assert all(r.timestamp == e.ts_ms for r, e in zip(records, events, strict=True))


async def produce_events(bootstrap: str, topic: str, events: list[Event]) -> None:
    async with BatchWriter(bootstrap, topic, create_partitions=3) as writer:
        for event in events:
            await writer.send(event_to_json(event), event.user_id.encode(), event.ts_ms)


async def produce_stamped_now(bootstrap: str, topic: str, events: list[Event]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(topic, event_to_json(event), key=event.user_id.encode())
    finally:
        await producer.stop()


def test_topic_time_range_replays_exactly_the_events_in_range(stack: Any) -> None:
    source, topic, dlq = (stack.unique_name(p) for p in ("replay-src", "replay-dst", "replay-dlq"))
    base = T0 * 1000
    # 3 000 events, one every 100 ms, users spread over partitions; some out of order.
    events = [
        Event(
            f"e-{i}",
            base + i * 100 - (5_000 if i % 97 == 0 else 0),
            "twitter",
            f"c-{i % 7}",
            f"u-{i % 211}",
            "like",
        )
        for i in range(3000)
    ]
    asyncio.run(produce_events(stack.kafka_bootstrap, source, events))
    # Appended later, stamped with the produce time (now): events of the range all the
    # same, and one before it — a read that trusted record timestamps would stop early.
    late = [
        Event(f"late-{i}", base + 100_000 + i, "twitter", "c-late", f"u-{i}", "like")
        for i in range(3)
    ]
    late.append(Event("older", base - 3_600_000, "twitter", "c-late", "u-1", "like"))
    asyncio.run(produce_stamped_now(stack.kafka_bootstrap, source, late))
    events += late
    start, end = base + 60_000, base + 180_000

    tally = replay(
        stack,
        ["--from-topic", source, "--from", str(start), "--to", str(end), "--speed", "max"],
        topic,
        dlq,
    )

    expected = sorted(event_to_json(e) for e in events if start <= e.ts_ms < end)
    records = asyncio.run(read_topic(stack.kafka_bootstrap, topic))
    assert sorted(r.value for r in records) == expected
    assert tally.sent == len(expected) and tally.failed == 0
    assert all(start <= r.timestamp < end for r in records)  # stamped with the event time
    assert tally.skipped == len(events) - len(expected)
    assert {r.key for r in records} <= {f"u-{i}".encode() for i in range(211)}
    assert orjson.loads(records[0].value)["platform"] == "twitter"


def test_topic_replay_paced_takes_the_scaled_time(stack: Any) -> None:
    source, topic, dlq = (stack.unique_name(p) for p in ("pace-src", "pace-dst", "pace-dlq"))
    base = T0 * 1000
    events = [Event(f"e-{i}", base + i * 100, "twitter", "c", f"u-{i}", "like") for i in range(41)]
    asyncio.run(produce_events(stack.kafka_bootstrap, source, events))

    tally = replay(stack, ["--from-topic", source, "--speed", "4"], topic, dlq)

    assert tally.sent == 41
    assert 0.9 <= tally.seconds <= 6.0  # 4 s of events at speed 4: about 1 s plus start-up


def test_topic_replay_paced_sends_in_timestamp_order_across_partitions(stack: Any) -> None:
    source, topic, dlq = (stack.unique_name(p) for p in ("order-src", "order-dst", "order-dlq"))
    base = T0 * 1000
    # 2 s of events, 25 ms apart, keys spread over the source's 3 partitions.
    events = [Event(f"e-{i}", base + i * 25, "twitter", "c", f"u-{i}", "like") for i in range(81)]
    asyncio.run(produce_events(stack.kafka_bootstrap, source, events))
    held = asyncio.run(read_topic(stack.kafka_bootstrap, source))
    assert len({r.partition for r in held}) == 3

    tally = replay(stack, ["--from-topic", source, "--speed", "4", "--partitions", "1"], topic, dlq)

    assert tally.sent == 81 and tally.failed == 0
    records = asyncio.run(read_topic(stack.kafka_bootstrap, topic))
    # One destination partition: its offsets are the order in which the replay sent.
    assert {r.partition for r in records} == {0}
    stamps = [r.timestamp for r in sorted(records, key=lambda r: r.offset)]
    assert stamps == sorted(stamps)
    assert stamps == [e.ts_ms for e in events]


def test_file_replay_sends_what_the_worker_would_refuse_to_the_dlq(stack: Any) -> None:
    """From stdin through the CLI: lines the worker would refuse (bad, too far ahead)
    go to the DLQ, exactly those; every record sent is stamped with its event time."""
    import subprocess
    import sys
    import time

    from bench.workers import REPO
    from streams.events import format_ts

    topic, dlq = stack.unique_name("replay-rules"), stack.unique_name("replay-rules-dlq")
    now_ms = int(time.time() * 1000)

    def line(i: int, ts_ms: int, **extra: str) -> str:
        fields = {"event_id": f"e-{i}", "ts": format_ts(ts_ms), "platform": "x"}
        return orjson.dumps(
            {**fields, "community": "c", "user_id": f"u{i}", "type": "like", **extra}
        ).decode()

    good = [line(i, now_ms - i * 60_000) for i in range(200)]
    good.append(line(900, now_ms + 240_000))  # 4 minutes ahead: within the tolerance
    refused = {
        line(901, now_ms + 86_400_000): "future_timestamp",  # a day ahead
        line(902, now_ms + 600_000): "future_timestamp",  # 10 minutes ahead
        line(903, now_ms, type="poke"): "bad_type",
        line(904, now_ms, community="*"): "bad_field",
        line(905, now_ms - 401 * 86_400_000): "too_old",  # older than EM_MAX_EVENT_AGE
        line(906, now_ms)[:-1] + ',"user_id":"other"}': "duplicate_key",
        line(907, now_ms, community="a\u202eb"): "bad_field",  # a bidi override
        "{not json": "not_json",
    }
    lines = good[:100] + list(refused) + good[100:]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "commands.cli",
            "replay",
            "--file",
            "-",
            "--speed",
            "max",
            "--to-topic",
            topic,
            "--dlq-topic",
            dlq,
            "--quiet",
        ],  # fmt: skip
        input="\n".join(lines) + "\n",
        env=stack.worker_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    records = asyncio.run(read_topic(stack.kafka_bootstrap, topic))
    assert sorted(r.value.decode() for r in records) == sorted(good)
    any_age = Limits(max_event_age_ms=None)
    assert all(r.timestamp == parse_event(r.value, 2**62, any_age).ts_ms for r in records)
    dead = asyncio.run(read_topic(stack.kafka_bootstrap, dlq))
    got = {r.value.decode(): dict(r.headers)["reason"].decode() for r in dead}
    assert got == refused and len(dead) == len(refused)
    sources = sorted(dict(r.headers)["source"].decode() for r in dead)
    assert sources == sorted(f"<stdin>:{n}" for n in range(101, 101 + len(refused)))
