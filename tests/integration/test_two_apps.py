"""Two apps on one host: same data folder, both RocksDB, each its own numbers.

Before the data folder included the app id, the second worker found the first one's
RocksDB files locked (``DB for partition 1 is locked!``) forever; and without the
``app`` label, one Prometheus job summed both apps' gauges.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.workers import Worker, gauges, produce, wait_caught_up
from streams.durations import parse_windows
from streams.events import DEFAULT_ACTIVE_TYPES
from tests.eventgen import Traffic, make_traffic
from tests.oracle import event_clock, expected_active, expected_followers

pytestmark = pytest.mark.integration

WINDOWS = parse_windows("5m,1h,1d,7d,30d")


def nonzero(active: dict) -> dict:
    return {key: counts for key, counts in active.items() if any(counts.values())}


def oracle(traffic: Traffic) -> tuple[dict, dict]:
    now_ms = event_clock(traffic.valid)
    assert now_ms is not None
    active = expected_active(traffic.valid, now_ms, WINDOWS, DEFAULT_ACTIVE_TYPES)
    return nonzero(active), expected_followers(traffic.valid)


async def test_two_apps_share_a_host_and_never_each_others_numbers(stack, tmp_path: Path) -> None:
    datadir = tmp_path / "data"  # ONE EM_DATA_DIR for both apps, as on one host
    now_ms = int(time.time() * 1000) - 60_000
    apps = {
        stack.unique_name("shop"): make_traffic(seed=41, count=3000, now_ms=now_ms),
        stack.unique_name("blog"): make_traffic(seed=42, count=2000, now_ms=now_ms - 3_600_000),
    }
    workers: dict[str, Worker] = {}
    try:
        for app_id, traffic in apps.items():
            topic = f"{app_id}-interactions"
            await produce(stack.kafka_bootstrap, topic, traffic.messages)
            workers[app_id] = Worker(
                stack.kafka_bootstrap, app_id, topic, f"{topic}.dlq", datadir, store="rocksdb://"
            ).start()
        for app_id, worker in workers.items():
            worker.wait_metrics()  # Worker.scrape checks app="<app_id>" on every sample
            await wait_caught_up(stack.kafka_bootstrap, app_id, f"{app_id}-interactions", worker)
        for app_id, worker in workers.items():
            got_active, got_followers = gauges(worker.scrape())
            want_active, want_followers = oracle(apps[app_id])
            assert nonzero(got_active) == want_active, app_id
            assert got_followers == want_followers, app_id
            assert len(want_active) > 10 and len(want_followers) > 5
            tables = sorted(p.name for p in (datadir / app_id / "v1" / "tables").glob("users-*.db"))
            assert tables, f"{app_id}: no RocksDB tables under its own folder"
            assert "DB for partition" not in worker.log_tail(400)
        # the two oracles differ, so equal-to-own-oracle means not-the-other's numbers
        assert oracle(list(apps.values())[0]) != oracle(list(apps.values())[1])
    finally:
        for worker in workers.values():
            worker.stop()
