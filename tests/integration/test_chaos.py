"""Exact under scale-out: two workers, random SIGKILLs and SIGTERMs, a broker restart.

Partitions move between live workers all the time here; a worker that lost a
partition must not get a single write into the changelog or the by-user topic once
the new owner started (Kafka transactions fence it). Afterwards every number —
summed gauges, a fresh worker's recovery from the changelog alone, the DLQ and
the summed counters — equals the oracle exactly.

Runs on a private broker (the shared stack's broker must not be restarted).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.ingest import decode_batch
from bench.workers import Worker, produce, read_all, wait_caught_up
from streams.events import DEFAULT_ACTIVE_TYPES
from streams.topics import by_user_topic
from tests.eventgen import Traffic, make_traffic
from tests.integration.own_kafka import OwnKafka, running
from tests.integration.test_pipeline import WINDOWS, newest_in_every_partition, nonzero
from tests.integration.test_pipeline import summed_gauges as summed
from tests.oracle import event_clock, expected_active, expected_followers, fields

pytestmark = [
    pytest.mark.integration,
    # Issue 11: passed 20 runs in a row in session 7 (with the counters checked once
    # stable, see settled_counters); before that it was xfail(strict=False). A failure
    # here is a defect of the product's one promise: exact numbers.
]

SESSION = {"EM_SESSION_TIMEOUT": "6s", "EM_REBALANCE_TIMEOUT": "6s"}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[OwnKafka]:
    yield from running(tmp_path / "kafka")


def chaos_traffic(seed: int) -> Traffic:
    """Late, duplicate and out-of-order events, follow churn, a few hundred bad messages."""
    traffic = make_traffic(
        seed=seed, count=40_000, now_ms=int(time.time() * 1000) - 60_000, communities=60
    )
    rng = random.Random(seed)
    for k in range(300):
        bad = (b"{not json %d" % k, "not_json") if k % 2 else (b"[%d]" % k, "not_object")
        traffic.messages.insert(rng.randrange(len(traffic.messages)), bad[0])
        traffic.invalid.append(bad)
    newest_in_every_partition(traffic, 4)
    return traffic


def want(traffic: Traffic) -> tuple[dict, dict]:
    now_ms = event_clock(traffic.valid)
    assert now_ms is not None
    active = expected_active(traffic.valid, now_ms, WINDOWS, DEFAULT_ACTIVE_TYPES)
    return nonzero(active), expected_followers(traffic.valid)


def settle(workers: list[Worker], expected: tuple[dict, dict], timeout: float = 90) -> str | None:
    """Poll (bounded) until the summed gauges equal the oracle — a late rebalance may
    still be moving a partition when the groups have caught up; None if they do,
    else what differs (followers first)."""
    deadline = time.monotonic() + timeout
    while True:
        active, followers, _lifecycle = summed(workers)
        got = (nonzero(active), followers)
        if got == expected:
            return None
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if got[1] != expected[1]:
        return "followers:\n" + diff(got[1], expected[1])
    return "active users:\n" + diff(got[0], expected[0])


async def assert_exact(
    live: str | None, fresh: str | None, bootstrap: str, app_id: str, traffic: Traffic
) -> None:
    """Both checks reported together: whether a fresh recovery from the changelog is
    exact too says if an update was lost in Kafka or only in a live worker's mirror;
    on a failure, the by-user topic's events against the input say which stage."""
    if live is None and fresh is None:
        return
    stage = await by_user_report(bootstrap, app_id, traffic)
    raise AssertionError(
        f"live workers: {live or 'exact'}\n"
        f"fresh worker from the changelog: {fresh or 'exact'}\n{stage}"
    )


async def by_user_report(bootstrap: str, app_id: str, traffic: Traffic) -> str:
    """The committed by-user topic against the valid input: events missing (lost by
    the ingest stage) or there twice (counted twice)."""
    got: Counter[tuple] = Counter()
    for record in await read_all(bootstrap, by_user_topic(app_id)):
        _partition, events = decode_batch(record.value)
        got.update((p, c, u, ts, kind) for ts, p, c, u, kind in events)
    want_events = Counter(fields(event) for event in traffic.valid)
    missing, extra = want_events - got, got - want_events
    return (
        f"by-user topic: {got.total()} events for {want_events.total()} valid inputs; "
        f"missing {missing.total()} {sorted(missing)[:5]}; extra {extra.total()} "
        f"{sorted(extra)[:5]}"
    )


def diff(got: dict, expected: dict) -> str:
    keys = sorted(set(got) | set(expected), key=str)
    return "\n".join(
        f"{k}: got {got.get(k)} want {expected.get(k)}"
        for k in keys
        if got.get(k) != expected.get(k)
    )[:3000]


def counters(workers: list[Worker]) -> tuple[int, Counter[str]]:
    events, invalid = 0, Counter[str]()
    for worker in workers:
        samples = worker.scrape()
        events += int(sum(samples.get("engagement_events_total", {}).values()))
        for labels, value in samples.get("engagement_invalid_events_total", {}).items():
            invalid[dict(labels)["reason"]] += int(value)
    return events, invalid


def settled_counters(
    workers: list[Worker], want: tuple[int, Counter[str]], timeout: float = 90, streak: int = 3
) -> tuple[int, Counter[str]]:
    """The summed counters once ``streak`` scrapes in a row, half a second apart, have
    equalled ``want``; the last scrape if that never happens within ``timeout``.

    While a rebalance moves a partition, its old and new owner may both expose its
    counters for a moment (the old one until its revocation), or neither (the new one
    until it has loaded them). Checking one scrape and keeping another, as this test
    once did, failed twice in eight runs (session 7) on a rebalance that began between
    the two (the last worker had restarted a second before): 1.5 × and 0.5 × the
    events, while every committed output was exact."""
    deadline = time.monotonic() + timeout
    run = 0
    while True:
        got = counters(workers)
        run = run + 1 if got == want else 0
        if run >= streak or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def make_worker(broker: OwnKafka, tmp: Path, app_id: str, topic: str, name: str) -> Worker:
    return Worker(
        broker.bootstrap,
        app_id,
        topic,
        f"{topic}.dlq",
        tmp / name / "data",
        store="rocksdb://",
        EM_READ_MODEL="off",
        EM_LOG_LEVEL=os.environ.get("EM_CHAOS_LOG_LEVEL", "warn"),
        **SESSION,
    )


async def chaos(
    workers: list[Worker], broker: OwnKafka, rng: random.Random, rounds: int, feeding: asyncio.Lock
) -> None:
    """``rounds`` random kills (half SIGKILL, half SIGTERM) and one broker restart
    (between two input chunks, so the test's own producer sends each message once)."""
    for i in range(rounds):
        await asyncio.sleep(rng.uniform(2, 5))
        victim = rng.choice(workers)
        if i % 2:
            victim.kill()
        else:
            victim.stop()
        await asyncio.sleep(rng.uniform(0, 2))
        victim.start()
        if i == rounds // 2:
            async with feeding:
                broker.kill()
                await asyncio.sleep(2)
                await asyncio.to_thread(broker.start)


async def test_two_workers_with_kills_and_a_broker_restart_stay_exact(
    broker: OwnKafka, tmp_path: Path
) -> None:
    seed = random.randrange(1_000_000)
    print(f"chaos seed {seed}")
    rng = random.Random(seed)
    app_id, topic = f"chaos-{seed}", f"chaos-in-{seed}"
    traffic = chaos_traffic(seed)
    workers = [make_worker(broker, tmp_path, app_id, topic, n) for n in ("a", "b")]
    messages = traffic.messages
    await produce(broker.bootstrap, topic, messages[: len(messages) // 4])
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.wait_metrics()
        feeding = asyncio.Lock()
        rest = messages[len(messages) // 4 :]
        feed = asyncio.create_task(feed_slowly(broker.bootstrap, topic, rest, feeding))
        await chaos(workers, broker, rng, rounds=12, feeding=feeding)
        await feed
        for worker in workers:
            if not worker.alive():  # started while the broker was down: it gave up
                worker.start()
            worker.wait_metrics()
        await wait_caught_up(broker.bootstrap, app_id, topic, workers[0], timeout=180)
        expected = want(traffic)
        live = settle(workers, expected)
        want_counters = (
            len(messages) - len(traffic.invalid),
            Counter({r: n for r, n in Counter(r for _, r in traffic.invalid).items()}),
        )
        # like the gauges: a worker expelled under load exposes its partitions' counters
        # until it notices (its first write is fenced, or its rejoin revokes them)
        got_counters = settled_counters(workers, want_counters)
        dead = [dict(m.headers) for m in await read_all(broker.bootstrap, f"{topic}.dlq")]
        coordinates = [(h["source_partition"], h["source_offset"]) for h in dead]
        assert len(set(coordinates)) == len(coordinates), "a bad message dead-lettered twice"
        got = sorted((h["reason"].decode(), int(h["original_size"])) for h in dead)
        assert got == sorted((reason, len(value)) for value, reason in traffic.invalid)

        # a fresh worker with an empty data folder: the changelog alone must be exact
        for worker in workers:
            worker.stop()
        fresh = make_worker(broker, tmp_path, app_id, topic, "fresh").start()
        workers.append(fresh)
        fresh.wait_metrics()
        await assert_exact(live, settle([fresh], expected), broker.bootstrap, app_id, traffic)
        assert got_counters == want_counters
    finally:
        for worker in workers:
            worker.stop()


async def feed_slowly(
    bootstrap: str, topic: str, messages: list[bytes], feeding: asyncio.Lock
) -> None:
    """The rest of the input in chunks over ~30 s, so the kills land mid-stream."""
    chunk = max(1, len(messages) // 30)
    for start in range(0, len(messages), chunk):
        async with feeding:
            await produce(bootstrap, topic, messages[start : start + chunk])
        await asyncio.sleep(1)
