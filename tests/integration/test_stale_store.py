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

And two workers, each with its own stale copy, sharing the partitions of a recreated
changelog: each discards its own stores once, and their gauges add up to the oracle.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agents.store_guard import MARKER_FILE
from bench.workers import Worker, _end_offsets, gauges, wait_caught_up
from commands.rebuild import recreate_topic
from streams.events import DEFAULT_ACTIVE_TYPES
from streams.topics import changelog_topic
from tests.integration.test_pipeline import summed_gauges
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
    for path in sorted(datadir.glob("*/v*/tables/users-*.db")):  # <datadir>/<app id>/v1/
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


@dataclass
class Case:
    """One app id, inputs A (fills the store that goes stale) and B (read after the
    changelog was recreated), and a worker factory."""

    bootstrap: str
    app_id: str
    topic_a: str
    topic_b: str
    events_a: list[dict[str, Any]]
    events_b: list[dict[str, Any]]

    def worker(self, topic: str, datadir: Path, store: str = "rocksdb://") -> Worker:
        return Worker(self.bootstrap, self.app_id, topic, f"{topic}.dlq", datadir, store=store)


async def make_case(stack: Any, seed: int, count_b: int) -> Case:
    end_ms = int(time.time() * 1000) - 60_000
    case = Case(
        stack.kafka_bootstrap,
        stack.unique_name("stale"),
        stack.unique_name("in-a"),
        stack.unique_name("in-b"),
        make_events(seed, 800, end_ms, 5 * 86_400_000),
        make_events(seed + 1, count_b, end_ms, 5 * 86_400_000),
    )
    await send(case.bootstrap, case.topic_a, case.events_a)
    await send(case.bootstrap, case.topic_b, case.events_b)
    return case


async def populated_store(case: Case, datadir: Path) -> dict[int, int]:
    """Run input A to its end, then restart so that Faust's recovery writes the
    changelog into RocksDB; return the offset each partition's store remembers."""
    await run_to_end(case.worker(case.topic_a, datadir), case.topic_a)
    run_until(case.worker(case.topic_a, datadir), oracle(case.events_a))
    stale = stored_offsets(datadir)
    assert sorted(stale) == list(range(PARTITIONS)) and min(stale.values()) > 0
    return stale


async def test_stale_rocksdb_store_is_discarded_and_recovered(stack: Any, tmp_path: Path) -> None:
    case = await make_case(stack, 11, 3000)
    bootstrap, app_id, topic_b, worker = case.bootstrap, case.app_id, case.topic_b, case.worker
    want = oracle(case.events_b)
    first, second = tmp_path / "one" / "data", tmp_path / "two" / "data"
    stale = await populated_store(case, first)
    shutil.copytree(first, second)
    for marker in first.glob(f"*/v*/tables/users-*.db/{MARKER_FILE}"):
        marker.unlink()

    # 1. changelog recreated empty; store without markers: judged by offsets
    await recreate_changelog(bootstrap, app_id)
    one = await run_to_end(worker(topic_b, first), topic_b, want)
    assert_one_warning_per_partition(one, "beyond the changelog's end (empty)")

    # 2. changelog refilled past every stale offset; store with markers: topic id
    ends = await _end_offsets(bootstrap, changelog_topic(app_id))
    assert len(ends) == PARTITIONS, ends
    assert all(ends[tp] > stale[tp.partition] + 1 for tp in ends), (ends, stale)
    two = run_until(worker(topic_b, second), want)
    assert_one_warning_per_partition(two, "changelog topic was recreated")

    # 3. memory:// against the same changelog: nothing to discard
    three = run_until(worker(topic_b, tmp_path / "three" / "data", "memory://"), want)
    assert warnings(three) == {}


async def test_two_workers_discard_their_own_stale_stores(stack: Any, tmp_path: Path) -> None:
    case = await make_case(stack, 21, 2000)
    dirs = [tmp_path / "one" / "data", tmp_path / "two" / "data"]
    await populated_store(case, dirs[0])
    shutil.copytree(dirs[0], dirs[1])
    await recreate_changelog(case.bootstrap, case.app_id)
    pair = [case.worker(case.topic_b, d).start() for d in dirs]
    try:
        for w in pair:
            w.wait_metrics()
        await wait_caught_up(case.bootstrap, case.app_id, case.topic_b, pair[0], timeout=180)
        want = oracle(case.events_b)
        deadline = time.monotonic() + 90  # a late rebalance may still move partitions
        while (got := summed_gauges(pair)[:2]) != want or not all(
            gauges(w.scrape())[1] for w in pair
        ):
            assert all(w.alive() for w in pair), [w.log_tail() for w in pair]
            assert time.monotonic() < deadline, (got, want)
            time.sleep(0.5)
    finally:
        for w in pair:
            w.stop()
    found = [warnings(w) for w in pair]
    # every partition's store was stale in both folders: whoever held it first
    # discarded its own copy, once; a worker never discards the same partition twice
    assert set(found[0]) | set(found[1]) == set(range(PARTITIONS)), found
    assert all(found) and all(len(r) == 1 for f in found for r in f.values()), found
