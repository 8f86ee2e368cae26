"""The core pipeline on the real stack: every gauge equals an independent oracle.

The worker runs as a subprocess with the event clock, so the expected numbers are
a pure function of the events sent (``now`` = the newest valid event time).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.workers import (
    Worker,
    gauges,
    lifecycle_gauges,
    produce,
    read_all,
    wait_caught_up,
)
from streams.durations import parse_windows
from streams.events import DEFAULT_ACTIVE_TYPES, REASONS
from tests.eventgen import Traffic, make_traffic
from tests.oracle import event_clock, expected_active, expected_followers, expected_lifecycle

pytestmark = pytest.mark.integration

WINDOWS = parse_windows("5m,1h,1d,7d,30d")


def assert_gauges_match(worker: Worker, traffic: Traffic) -> None:
    now_ms = event_clock(traffic.valid)
    assert now_ms is not None
    want_active = expected_active(traffic.valid, now_ms, WINDOWS, DEFAULT_ACTIVE_TYPES)
    want_followers = expected_followers(traffic.valid)
    samples = worker.scrape()
    got_active, got_followers = gauges(samples)
    assert nonzero(got_active) == nonzero(want_active)
    assert got_followers == want_followers
    want_lifecycle = expected_lifecycle(traffic.valid, now_ms, WINDOWS, DEFAULT_ACTIVE_TYPES)
    assert lifecycle_gauges(samples) == want_lifecycle
    assert all(any(n[i] for c in want_lifecycle.values() for n in c.values()) for i in range(4))
    assert samples["engagement_watermark_seconds"][()] == now_ms / 1000
    # the oracle is not trivially empty: every window and many communities are covered
    assert len(want_active) > 20 and len(want_followers) > 10
    assert {w for counts in want_active.values() for w in counts} == set(WINDOWS)


def nonzero(active: dict) -> dict:
    """Communities whose every window is 0 may have no series: expiry (every 2s in
    these tests) deletes records older than the longest window, and a community
    with only such records disappears."""
    return {key: counts for key, counts in active.items() if any(counts.values())}


def start_worker(stack, tmp_path: Path, app_id: str, topic: str, store: str) -> Worker:
    worker = Worker(
        stack.kafka_bootstrap, app_id, topic, f"{topic}.dlq", tmp_path / "data", store=store
    ).start()
    worker.wait_metrics()
    return worker


async def test_gauges_and_dlq_equal_the_oracle(stack, tmp_path: Path) -> None:
    app_id, topic = stack.unique_name("pipe"), stack.unique_name("interactions")
    traffic = make_traffic(seed=7, count=4000, now_ms=int(time.time() * 1000) - 60_000)
    await produce(stack.kafka_bootstrap, topic, traffic.messages)
    worker = start_worker(stack, tmp_path, app_id, topic, "memory://")
    try:
        await wait_caught_up(stack.kafka_bootstrap, app_id, topic, worker)
        assert_gauges_match(worker, traffic)

        samples = worker.scrape()
        want_invalid = {reason: 0 for reason in REASONS}
        for _, reason in traffic.invalid:
            want_invalid[reason] += 1
        got_invalid = dict.fromkeys(REASONS, 0)
        for k, v in samples["engagement_invalid_events_total"].items():
            got_invalid[dict(k)["reason"]] += int(v)
        assert got_invalid == want_invalid
        valid_messages = len(traffic.messages) - len(traffic.invalid)
        assert sum(samples["engagement_events_total"].values()) == valid_messages
        assert sum(samples["engagement_event_lag_seconds_count"].values()) == valid_messages

        dead = await read_all(stack.kafka_bootstrap, f"{topic}.dlq")
        got = sorted(
            (m.value, dict(m.headers)["reason"].decode(), int(dict(m.headers)["original_size"]))
            for m in dead
        )
        # a dead letter keeps at most EM_MAX_MESSAGE_BYTES (4096) of the original
        assert got == sorted((v[:4096], reason, len(v)) for v, reason in traffic.invalid)
        for message in dead:
            headers = dict(message.headers)
            assert headers["source_topic"].decode() == topic
            assert int(headers["source_offset"]) >= 0
    finally:
        worker.stop()


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_sigkill_mid_stream_recovers_exact_counts(stack, tmp_path: Path, store: str) -> None:
    app_id, topic = stack.unique_name("kill"), stack.unique_name("interactions")
    traffic = make_traffic(seed=11, count=6000, now_ms=int(time.time() * 1000) - 60_000)
    third = len(traffic.messages) // 3
    await produce(stack.kafka_bootstrap, topic, traffic.messages[:third])
    worker = start_worker(stack, tmp_path, app_id, topic, store)
    try:
        await wait_caught_up(stack.kafka_bootstrap, app_id, topic, worker)
        # the second third arrives while the worker works on it; kill it mid-stream
        await produce(stack.kafka_bootstrap, topic, traffic.messages[third : 2 * third])
        worker.kill()
        await produce(stack.kafka_bootstrap, topic, traffic.messages[2 * third :])
        worker = start_worker(stack, tmp_path, app_id, topic, store)
        await wait_caught_up(stack.kafka_bootstrap, app_id, topic, worker, timeout=180)
        assert_gauges_match(worker, traffic)
    finally:
        worker.stop()


def newest_in_every_partition(traffic: Traffic, partitions: int) -> None:
    """Give every partition an event at the newest time, so every worker's event
    clock reaches the same ``now`` whichever partitions it holds."""
    import orjson

    from streams.events import format_ts
    from streams.topics import partition_for_user

    now_ms = event_clock(traffic.valid)
    assert now_ms is not None
    covered: set[int] = set()
    k = 0
    while len(covered) < partitions:
        user = f"u-newest-{k}"
        k += 1
        if partition_for_user(user, partitions) in covered:
            continue
        covered.add(partition_for_user(user, partitions))
        event = {
            "event_id": f"newest-{k}",
            "ts": format_ts(now_ms),
            "platform": "twitter",
            "community": "brand-00",
            "user_id": user,
            "type": "view",
        }
        traffic.messages.append(orjson.dumps(event))
        traffic.valid.append({**event, "ts_ms": now_ms})


async def test_two_workers_add_up_exactly(stack, tmp_path: Path) -> None:
    """Users are partitioned, so the sum of two workers' gauges is the exact total —
    also after the second worker joins and takes over partitions (rebuilt from the
    changelog)."""
    app_id, topic = stack.unique_name("pair"), stack.unique_name("interactions")
    traffic = make_traffic(seed=23, count=4000, now_ms=int(time.time() * 1000) - 60_000)
    newest_in_every_partition(traffic, 4)
    half = len(traffic.messages) // 2
    await produce(stack.kafka_bootstrap, topic, traffic.messages[:half])
    first = start_worker(stack, tmp_path / "a", app_id, topic, "memory://")
    second = None
    try:
        await wait_caught_up(stack.kafka_bootstrap, app_id, topic, first)
        second = start_worker(stack, tmp_path / "b", app_id, topic, "memory://")
        # the group rebalances; the second worker rebuilds the partitions it takes over
        # from the changelog (bounded wait until it reports state of its own)
        deadline = time.monotonic() + 90
        while not gauges(second.scrape())[1]:
            assert time.monotonic() < deadline, f"no partitions:\n{second.log_tail()}"
            time.sleep(0.5)
        await produce(stack.kafka_bootstrap, topic, traffic.messages[half:])
        await wait_caught_up(stack.kafka_bootstrap, app_id, topic, second, timeout=180)
        # a late rebalance may still move partitions: wait (bounded) for the sums
        now_ms = event_clock(traffic.valid)
        assert now_ms is not None
        want = (
            expected_active(traffic.valid, now_ms, WINDOWS, DEFAULT_ACTIVE_TYPES),
            expected_followers(traffic.valid),
            expected_lifecycle(traffic.valid, now_ms, WINDOWS, DEFAULT_ACTIVE_TYPES),
        )
        want = (nonzero(want[0]), want[1], want[2])
        deadline = time.monotonic() + 60
        while True:
            got = summed_gauges([first, second])
            got = (nonzero(got[0]), got[1], got[2])
            if got == want or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert got == want
        held = [bool(gauges(w.scrape())[1]) for w in (first, second)]
        assert held == [True, True], "both workers should hold partitions"
    finally:
        first.stop()
        if second is not None:
            second.stop()


def summed_gauges(workers: list[Worker]) -> tuple[dict, dict, dict]:
    active: dict = {}
    followers: dict = {}
    lifecycle: dict = {}
    for worker in workers:
        samples = worker.scrape()
        got_active, got_followers = gauges(samples)
        for key, counts in lifecycle_gauges(samples).items():
            total = lifecycle.setdefault(key, {})
            for window, n in counts.items():
                before = total.get(window, (0, 0, 0, 0))
                total[window] = tuple(a + b for a, b in zip(before, n, strict=True))
        for key, counts in got_active.items():
            total = active.setdefault(key, dict.fromkeys(counts, 0))
            for window, n in counts.items():
                total[window] = total.get(window, 0) + n
        for key, n in got_followers.items():
            followers[key] = followers.get(key, 0) + n
    # a worker that holds no user of a community reports no series for it; the
    # oracle lists communities with zero counts, so compare on the oracle's keys
    return active, followers, lifecycle
