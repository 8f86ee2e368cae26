"""A worker whose RocksDB store is ahead of (or foreign to) its changelog rebuilds
itself instead of crashing (issue 18), and its gauges equal the oracle of the new
input.

One populated store is made (a worker runs input A, then restarts so that Faust's
recovery writes the changelog into RocksDB) and copied. Then the changelog is
deleted and recreated empty:

1. copy 1, markers removed (a store from before markers existed): every stored
   offset is beyond the new, empty changelog's end — the case that made Faust stop
   with ``ConsistencyError`` at every start. The worker reads input B.
2. copy 2, markers kept, started after the changelog has been refilled by (1) with
   B's records beyond every stale offset: only the topic id tells the store is
   foreign; offsets alone would let Faust resume on top of A's records.
3. ``memory://`` against the same changelog: nothing to discard, no warning.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from agents.store_guard import MARKER_FILE
from bench.workers import Worker, _end_offsets, gauges, wait_caught_up
from commands.rebuild import recreate_topic
from streams.events import DEFAULT_ACTIVE_TYPES
from streams.topics import changelog_topic
from tests.integration.test_rebuild import WINDOWS, make_events, send
from tests.oracle import event_clock, expected_active, expected_followers

pytestmark = pytest.mark.integration

WARNING = re.compile(r"store check: table users partition (\d+): (.*); discarded the local store")
PARTITIONS = 4


def oracle(events: list[dict[str, Any]]) -> tuple[dict, dict]:
    now_ms = event_clock(events)
    assert now_ms is not None
    return (
        expected_active(events, now_ms, WINDOWS, DEFAULT_ACTIVE_TYPES),
        expected_followers(events),
    )


def wait_gauges(worker: Worker, want: tuple[dict, dict], timeout: float = 60) -> None:
    """Until the scraped gauges equal ``want`` (recovery ends some time after start)."""
    deadline = time.monotonic() + timeout
    while True:
        got = gauges(worker.scrape())
        if got == want:
            return
        assert worker.alive(), worker.log_tail()
        assert time.monotonic() < deadline, f"gauges {got} != oracle {want}"
        time.sleep(0.3)


def warnings(worker: Worker) -> dict[int, list[str]]:
    """{partition: [reason, ...]} of the store check's warning lines in the log."""
    found: dict[int, list[str]] = {}
    for line in worker.log_path.read_text(errors="replace").splitlines():
        match = WARNING.search(line)
        if match:
            found.setdefault(int(match.group(1)), []).append(match.group(2))
    return found


def stored_offsets(datadir: Path) -> dict[int, int]:
    """The offset each partition's RocksDB store remembers (Faust's offset key)."""
    from rocksdict import AccessType, Options, Rdict

    out = {}
    for path in sorted(datadir.glob("v*/tables/users-*.db")):
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            raw = db.get(b"__faust\x00offset__")
        finally:
            db.close()
        if raw is not None:
            out[int(path.name[len("users-") : -len(".db")])] = int(raw)
    return out


def run_until(worker: Worker, want: tuple[dict, dict]) -> Worker:
    """Start, wait until the gauges equal ``want``, stop."""
    worker.start()
    try:
        worker.wait_metrics()
        wait_gauges(worker, want)
    finally:
        worker.stop()
    return worker


async def run_to_end(worker: Worker, topic: str, want: tuple[dict, dict] | None = None) -> Worker:
    """Start, wait until both stages committed the ends of their topics, compare, stop."""
    worker.start()
    try:
        worker.wait_metrics()
        await wait_caught_up(worker.env["KAFKA_BOOTSTRAP_SERVERS"], worker.app_id, topic, worker)
        if want is not None:
            assert gauges(worker.scrape()) == want
    finally:
        worker.stop()
    return worker


def assert_one_warning_per_partition(worker: Worker, reason: str) -> None:
    found = warnings(worker)
    assert {p: len(reasons) for p, reasons in found.items()} == dict.fromkeys(
        range(PARTITIONS), 1
    ), worker.log_tail()
    assert all(reason in reasons[0] for reasons in found.values()), found


async def recreate_changelog(bootstrap: str, app_id: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await recreate_topic(admin, changelog_topic(app_id), PARTITIONS)
    finally:
        await admin.close()


async def test_stale_rocksdb_store_is_discarded_and_recovered(stack: Any, tmp_path: Path) -> None:
    bootstrap, app_id = stack.kafka_bootstrap, stack.unique_name("stale")
    topic_a, topic_b = stack.unique_name("in-a"), stack.unique_name("in-b")
    end_ms = int(time.time() * 1000) - 60_000
    events_a = make_events(11, 800, end_ms, 5 * 86_400_000)
    events_b = make_events(12, 3000, end_ms, 5 * 86_400_000)
    await send(bootstrap, topic_a, events_a)
    await send(bootstrap, topic_b, events_b)

    def worker(topic: str, datadir: Path, store: str = "rocksdb://") -> Worker:
        return Worker(bootstrap, app_id, topic, f"{topic}.dlq", datadir, store=store)

    # a populated store: run A, then restart (recovery fills RocksDB from the changelog)
    first, second = tmp_path / "one" / "data", tmp_path / "two" / "data"
    await run_to_end(worker(topic_a, first), topic_a)
    run_until(worker(topic_a, first), oracle(events_a))
    stale = stored_offsets(first)
    assert sorted(stale) == list(range(PARTITIONS)) and min(stale.values()) > 0
    shutil.copytree(first, second)
    for marker in first.glob(f"v*/tables/users-*.db/{MARKER_FILE}"):
        marker.unlink()

    # 1. changelog recreated empty; store without markers: judged by offsets
    await recreate_changelog(bootstrap, app_id)
    one = await run_to_end(worker(topic_b, first), topic_b, oracle(events_b))
    assert_one_warning_per_partition(one, "beyond the changelog's end (empty)")

    # 2. changelog refilled past every stale offset; store with markers: topic id
    ends = await _end_offsets(bootstrap, changelog_topic(app_id))
    assert len(ends) == PARTITIONS, ends
    assert all(ends[tp] > stale[tp.partition] + 1 for tp in ends), (ends, stale)
    two = run_until(worker(topic_b, second), oracle(events_b))
    assert_one_warning_per_partition(two, "changelog topic was recreated")

    # 3. memory:// against the same changelog: nothing to discard
    three = run_until(worker(topic_b, tmp_path / "three" / "data", "memory://"), oracle(events_b))
    assert warnings(three) == {}
