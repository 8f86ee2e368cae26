"""The core pipeline on the real stack: every gauge equals an independent oracle.

The worker runs as a subprocess with the event clock, so the expected numbers are
a pure function of the events sent (``now`` = the newest valid event time).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streams.durations import parse_windows
from streams.events import DEFAULT_ACTIVE_TYPES, REASONS
from tests.integration.eventgen import Traffic, make_traffic
from tests.integration.pipeline import (
    Worker,
    gauges,
    produce,
    read_all,
    wait_caught_up,
)
from tests.unit.oracle import event_clock, expected_active, expected_followers

pytestmark = pytest.mark.integration

WINDOWS = parse_windows("5m,1h,1d,7d,30d")


def assert_gauges_match(worker: Worker, traffic: Traffic) -> None:
    now_ms = event_clock(traffic.valid)
    assert now_ms is not None
    want_active = expected_active(traffic.valid, now_ms, WINDOWS, DEFAULT_ACTIVE_TYPES)
    want_followers = expected_followers(traffic.valid)
    samples = worker.scrape()
    got_active, got_followers = gauges(samples)
    assert got_active == want_active
    assert got_followers == want_followers
    assert samples["engagement_watermark_seconds"][()] == now_ms / 1000
    # the oracle is not trivially empty: every window and many communities are covered
    assert len(want_active) > 20 and len(want_followers) > 10
    assert {w for counts in want_active.values() for w in counts} == set(WINDOWS)


def start_worker(stack, tmp_path: Path, app_id: str, topic: str, store: str) -> Worker:
    worker = Worker(stack.kafka_bootstrap, app_id, topic, f"{topic}.dlq",
                    tmp_path / "data", store=store).start()
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
        got_invalid = {dict(k)["reason"]: int(v)
                       for k, v in samples["engagement_invalid_events_total"].items()}
        assert got_invalid == want_invalid
        valid_messages = len(traffic.messages) - len(traffic.invalid)
        assert sum(samples["engagement_events_total"].values()) == valid_messages
        assert samples["engagement_event_lag_seconds_count"][()] == valid_messages

        dead = await read_all(stack.kafka_bootstrap, f"{topic}.dlq")
        got = sorted((m.value, dict(m.headers)["reason"].decode()) for m in dead)
        assert got == sorted(traffic.invalid)
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
