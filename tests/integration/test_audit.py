"""Back-fill and audit against real event-clock workers, on a topic whose record
timestamps say nothing reliable about event time: half stamped with the event time,
half with the produce time, one stamped 30 days ahead, one event two days in the
future and one a minute ahead (the worker refuses both: its future tolerance is 2s),
one follow older than everything, produced last.

The back-fill at the worker's clock equals the worker's gauges and the oracle; the
audit finds 0 differences with one worker and, once the minute-ahead event is in the
past, with two (it knows from the DLQ that the workers refused it); it names exactly
the series a tombstone in the changelog broke."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.workers import REPO, Worker, gauges, lifecycle_gauges, wait_caught_up
from streams.durations import parse_windows
from streams.events import DEFAULT_ACTIVE_TYPES, format_ts
from streams.topics import changelog_topic, partition_for_user
from tests.integration.test_backfill import parse_output
from tests.oracle import expected_active, expected_followers, expected_lifecycle, make_key

pytestmark = pytest.mark.integration

WINDOWS = parse_windows("5m,1h,1d,7d,30d")
HOUR, DAY = 3_600_000, 86_400_000
TYPES = ["like", "comment", "view", "follow", "unfollow", "post", "share"]
ANCIENT = {"platform": "twitter", "community": "c-old", "user_id": "u-ancient", "type": "follow"}
SOON = {"platform": "twitter", "community": "c-soon", "user_id": "u-soon", "type": "like"}
TOLERANCE = "2s"  # the workers', the back-fill's and the audit's future tolerance


def mixed_records(now_ms: int) -> tuple[list[tuple[bytes, int | None]], list[dict[str, Any]]]:
    """([(value, record timestamp or None = produce time)], the valid events)."""
    rng = random.Random(14)
    events: list[dict[str, Any]] = []
    for i in range(3000):
        ts_ms = now_ms - HOUR - int(rng.random() ** 2 * 3 * DAY)
        events.append(
            {
                "event_id": f"e-{i}",
                "ts_ms": ts_ms,
                "platform": rng.choice(["twitter", "instagram"]),
                "community": f"c-{rng.randrange(5)}",
                "user_id": f"u-{rng.randrange(400)}",
                "type": rng.choice(TYPES),
            }
        )
    rng.shuffle(events)  # out of event-time order in every partition
    records: list[tuple[bytes, int | None]] = [
        (value_of(e), e["ts_ms"] if i % 2 else None) for i, e in enumerate(events)
    ]
    records.insert(700, (value_of({**events[0], "event_id": "f30"}), now_ms + 30 * DAY))
    future = {**events[1], "event_id": "two-days-ahead", "ts_ms": now_ms + 2 * DAY}
    records.insert(900, (value_of(future), None))
    records.insert(1100, (b"{not json", None))
    records.insert(1300, (value_of({**SOON, "event_id": "soon", "ts_ms": now_ms + 60_000}), None))
    # older than every window, younger than EM_MAX_EVENT_AGE (400d: too_old)
    ancient = {**ANCIENT, "event_id": "ancient", "ts_ms": now_ms - 300 * DAY}
    records.append((value_of(ancient), None))
    valid = [*events, {**events[0], "event_id": "f30"}, ancient]
    return records, valid


def value_of(event: dict[str, Any]) -> bytes:
    fields = {k: v for k, v in event.items() if k != "ts_ms"}
    return orjson.dumps({**fields, "ts": format_ts(event["ts_ms"])})


async def produce_mixed(
    bootstrap: str, topic: str, records: list[tuple[bytes, int | None]]
) -> None:
    """4 partitions, round-robin; the topic accepts record timestamps far ahead."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"message.timestamp.after.max.ms": str(2**62)}
        await admin.create_topics([NewTopic(topic, 4, 1, topic_configs=config)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, partition=i % 4, timestamp_ms=stamp)
            for i, (value, stamp) in enumerate(records)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def tombstone(bootstrap: str, app_id: str, key: str) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        partition = partition_for_user(key.split("\x1f")[2], 4)
        await producer.send_and_wait(
            changelog_topic(app_id), None, key=orjson.dumps(key), partition=partition
        )
    finally:
        await producer.stop()


def cli(stack: Any, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "commands.cli", *argv, "--quiet", "--future-tolerance", TOLERANCE],
        env=stack.worker_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def audit(stack: Any, app_id: str, topic: str, workers: list[Worker], settle: str) -> Any:
    urls = [arg for w in workers for arg in ("--metrics", w.metrics_url)]
    result = cli(
        stack,
        "audit",
        "--app-id",
        app_id,
        "--input-topic",
        topic,
        "--dlq-topic",
        workers[0].env["EM_DLQ_TOPIC"],
        "--clock",
        "event",
        "--json",
        "--settle",
        settle,
        *urls,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def series_count(valid: list[dict[str, Any]], now_ms: int) -> int:
    active = expected_active(valid, now_ms, WINDOWS, DEFAULT_ACTIVE_TYPES)
    lifecycle = expected_lifecycle(valid, now_ms, WINDOWS, DEFAULT_ACTIVE_TYPES)
    per_group = len(WINDOWS) * 4  # active followers, new, returning, dormant
    return len(active) * len(WINDOWS) + len(lifecycle) * per_group + len(expected_followers(valid))


def wait_for(condition: Any, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def test_backfill_and_audit_agree_with_the_workers_whatever_the_record_timestamps(
    stack: Any, tmp_path: Path
) -> None:
    topic, app = stack.unique_name("audit-in"), stack.unique_name("audit-app")
    dlq = stack.unique_name("audit-dlq")
    now_ms = int(time.time() * 1000)
    records, valid = mixed_records(now_ms)
    asyncio.run(produce_mixed(stack.kafka_bootstrap, topic, records))
    clock = max(e["ts_ms"] for e in valid)  # what the event-clock worker ends at
    want = (
        expected_active(valid, clock, WINDOWS, DEFAULT_ACTIVE_TYPES),
        expected_followers(valid),
        expected_lifecycle(valid, clock, WINDOWS, DEFAULT_ACTIVE_TYPES),
    )

    def start_worker(name: str) -> Worker:
        return Worker(
            stack.kafka_bootstrap, app, topic, dlq, tmp_path / name, EM_FUTURE_TOLERANCE=TOLERANCE
        ).start()

    workers = [start_worker("w1")]
    try:
        workers[0].wait_metrics()
        asyncio.run(wait_caught_up(stack.kafka_bootstrap, app, topic, workers[0]))
        samples = workers[0].scrape()
        live = (*gauges(samples), lifecycle_gauges(samples))
        assert live == want

        out = tmp_path / "backfill.om"
        result = cli(stack, "backfill", "--from", str(clock), "--to", str(clock),
                     "--input-topic", topic, "-o", str(out))  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert parse_output(out.read_text())[clock] == live
        assert result.stderr.startswith(
            "backfill: 3005 records read: 3002 events in the range, 0 outside it (0 before, "
            "0 after), 3 refused by the worker's rules (future_timestamp 2, not_json 1)"
        )

        code, doc = audit(stack, app, topic, workers, "20s")
        assert code == 0 and doc["equal"], doc
        assert [s["series"] for s in doc["sources"]] == [series_count(valid, clock)] * 2

        workers.append(start_worker("w2"))
        workers[1].wait_metrics()
        wait_for(lambda: all(gauges(w.scrape())[1] for w in workers), "both workers to hold state")
        soon_ms = now_ms + 60_000  # refused by the workers; no longer ahead of the clock:
        wait_for(lambda: time.time() * 1000 > soon_ms + 3_000, "the refused event to be past")
        code, doc = audit(stack, app, topic, workers, "30s")
        assert code == 0 and doc["equal"], doc
        assert doc["read"].endswith(
            "3 refused by the worker's rules (future_timestamp 2, not_json 1)"
        )
        assert [s["series"] for s in doc["sources"]] == [series_count(valid, clock)] * 2
    finally:
        for worker in workers:
            worker.stop()

    key = make_key(ANCIENT["platform"], ANCIENT["community"], ANCIENT["user_id"])
    asyncio.run(tombstone(stack.kafka_bootstrap, app, key))
    fresh = start_worker("w3")
    try:
        fresh.wait_metrics()
        wait_for(lambda: gauges(fresh.scrape())[1], "the fresh worker to recover")
        code, doc = audit(stack, app, topic, [fresh], "6s")
    finally:
        fresh.stop()
    followers = want[1][("twitter", "*")]
    broken = [
        {"series": 'engagement_followers{platform="twitter",community="*"}',
         "live": followers - 1, "expected": followers},
        {"series": 'engagement_followers{platform="twitter",community="c-old"}',
         "live": 0, "expected": 1},
    ]  # fmt: skip
    assert code == 1 and not doc["equal"]
    assert [s["differences"] for s in doc["sources"]] == [broken, broken], doc


def test_audit_of_a_wall_clock_worker_at_a_chosen_time(stack: Any, tmp_path: Path) -> None:
    """Events spread over the last ten minutes leave the 5m window several times a
    second, so only the clock each number was computed at (the snapshot's, the
    scrape's) gives 0 differences — in one look (--settle 0s): the state is settled,
    so an exact audit needs no second one."""
    topic, app = stack.unique_name("audit-wall-in"), stack.unique_name("audit-wall")
    dlq = stack.unique_name("audit-wall-dlq")
    now_ms = int(time.time() * 1000)
    rng = random.Random(15)
    events = [
        {
            "event_id": f"w-{i}",
            "ts_ms": now_ms - rng.randrange(600_000),
            "platform": "twitter",
            "community": f"c-{rng.randrange(3)}",
            "user_id": f"u-{rng.randrange(1000)}",
            "type": rng.choice(["like", "follow", "comment"]),
        }
        for i in range(3000)
    ]
    asyncio.run(produce_mixed(stack.kafka_bootstrap, topic, [(value_of(e), None) for e in events]))
    worker = Worker(stack.kafka_bootstrap, app, topic, dlq, tmp_path / "w", EM_CLOCK="wall")
    worker.start()
    try:
        worker.wait_metrics()
        asyncio.run(wait_caught_up(stack.kafka_bootstrap, app, topic, worker))
        at = format_ts(int(time.time() * 1000) + 3_000)
        result = cli(stack, "audit", "--app-id", app, "--input-topic", topic, "--dlq-topic", dlq,
                     "--clock", "wall", "--at", at, "--json", "--settle", "0s",
                     "--metrics", worker.metrics_url)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        doc = json.loads(result.stdout)
        assert doc["equal"] and doc["clock"] == "wall"
        count = series_count(events, now_ms)
        assert [s["series"] for s in doc["sources"]] == [count, count]
    finally:
        worker.stop()
