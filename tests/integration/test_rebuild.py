"""rebuild on the real stack: the plan, the refusal while workers run, and a
restarted worker whose gauges equal the oracle over exactly the events >= TIME."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.kafka_out import BatchWriter
from bench.workers import REPO, Worker, gauges, read_all, wait_caught_up
from streams.durations import parse_windows
from streams.events import DEFAULT_ACTIVE_TYPES, format_ts
from streams.topics import by_user_topic, changelog_topic, ingest_group
from tests.oracle import event_clock, expected_active, expected_followers

pytestmark = pytest.mark.integration

WINDOWS = parse_windows("5m,1h,1d,7d,30d")
TYPES = ["like"] * 5 + ["comment", "share", "view", "click", "post", "follow", "follow", "unfollow"]


def make_events(seed: int, count: int, end_ms: int, span_ms: int) -> list[dict[str, Any]]:
    """Valid events in event-time order (so every partition's timestamps ascend)."""
    rng = random.Random(seed)
    events = []
    for i in range(count):
        ts_ms = end_ms - int(rng.random() ** 2 * span_ms)
        events.append(
            {
                "event_id": f"e-{seed}-{i}",
                "ts": format_ts(ts_ms),
                "ts_ms": ts_ms,
                "platform": rng.choice(["twitter", "instagram"]),
                "community": f"brand-{rng.randrange(8)}",
                "user_id": f"u-{rng.randrange(300)}",
                "type": rng.choice(TYPES),
            }
        )
    return sorted(events, key=lambda e: e["ts_ms"])


async def send(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    """Record timestamp = event time, as simulate/produce/replay send them; keyed by
    user so that every partition gets events (in ascending time)."""
    async with BatchWriter(bootstrap, topic, create_partitions=4) as writer:
        for e in events:
            value = orjson.dumps({k: v for k, v in e.items() if k != "ts_ms"})
            await writer.send(value, e["user_id"].encode(), e["ts_ms"])


def rebuild(
    stack: Any, app_id: str, topic: str, datadir: Path, time_ms: int, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "commands.cli",
            "rebuild",
            "--from",
            str(time_ms),
            "--json",
            "--app-id",
            app_id,
            "--input-topic",
            topic,
            "--datadir",
            str(datadir),
            *extra,
        ],
        env=stack.worker_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def committed(stack: Any, group: str) -> dict[Any, int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items()}
    finally:
        await admin.close()


async def wait_members(
    bootstrap: str, groups: list[str], worker: Worker, timeout: float = 60
) -> None:
    """Until the worker is a member of every group: a just-started worker may not
    have joined yet, and then there is nothing to refuse."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    from commands.rebuild import describe_groups

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            states = await describe_groups(admin, groups)
            if len(states) == len(groups) and all(g.members for g in states):
                return
            assert worker.alive(), worker.log_tail()
            assert time.monotonic() < deadline, f"not a member yet: {states}"
            await asyncio.sleep(0.3)
    finally:
        await admin.close()


def first_offsets_at(records: list[Any], time_ms: int, partitions: int) -> dict[int, int]:
    """Independently of offsets_for_times: per partition, the first offset whose
    timestamp is >= TIME, or the end offset."""
    out: dict[int, int] = {}
    for p in range(partitions):
        mine = sorted((r.offset, r.timestamp) for r in records if r.partition == p)
        end = mine[-1][0] + 1 if mine else 0
        out[p] = next((offset for offset, ts in mine if ts >= time_ms), end)
    return out


def execute_when_idle(
    stack: Any, app_id: str, topic: str, datadir: Path, time_ms: int
) -> subprocess.CompletedProcess[str]:
    """A stopped worker leaves its groups at once on SIGTERM; allow the session timeout."""
    deadline = time.monotonic() + 30
    while True:
        result = rebuild(stack, app_id, topic, datadir, time_ms, "--execute")
        if result.returncode != 3 or time.monotonic() > deadline:
            return result
        time.sleep(1)


async def test_rebuild_plan_refusal_and_recomputed_state(stack: Any, tmp_path: Path) -> None:
    bootstrap = stack.kafka_bootstrap
    app_id, topic = stack.unique_name("rebuild"), stack.unique_name("interactions")
    datadir = tmp_path / "data"
    end_ms = int(time.time() * 1000) - 60_000
    events = make_events(5, 3000, end_ms, 10 * 86_400_000)
    time_ms = events[len(events) * 2 // 3]["ts_ms"] + 1  # a cut inside the stream
    await send(bootstrap, topic, events)

    worker = Worker(bootstrap, app_id, topic, f"{topic}.dlq", datadir, store="rocksdb://")
    worker.start()
    try:
        worker.wait_metrics()
        await wait_caught_up(bootstrap, app_id, topic, worker)
    finally:
        worker.stop()

    # the dry run: targets = first offsets with timestamp >= TIME; nothing changes
    records = await read_all(bootstrap, topic)
    want = first_offsets_at(records, time_ms, 4)
    before = await committed(stack, ingest_group(app_id))
    result = rebuild(stack, app_id, topic, datadir, time_ms)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert {m["partition"]: m["target"] for m in plan["ingest_moves"]} == want
    assert {m["partition"]: m["committed"] for m in plan["ingest_moves"]} == {
        tp.partition: o for tp, o in before.items()
    }
    assert all(
        0 < want[p] < ends
        for p, ends in enumerate(
            max(r.offset for r in records if r.partition == p) + 1 for p in range(4)
        )
    )
    assert plan["changelog"] == changelog_topic(app_id) and plan["changelog_partitions"] == 4
    assert plan["by_user_topic"] == by_user_topic(app_id)
    assert plan["stores"] and all("/v1/tables/users-" in p for p in plan["stores"])
    assert await committed(stack, ingest_group(app_id)) == before
    assert all(Path(p).exists() for p in plan["stores"])

    # --execute refuses while a worker is a member; offsets stay where they were
    live = Worker(bootstrap, app_id, topic, f"{topic}.dlq", datadir, store="rocksdb://")
    live.start()
    try:
        live.wait_metrics()
        await wait_caught_up(bootstrap, app_id, topic, live)
        await wait_members(bootstrap, [ingest_group(app_id), app_id], live)
        refused = rebuild(stack, app_id, topic, datadir, time_ms, "--execute")
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert "refusing" in refused.stderr and app_id in refused.stderr
        assert await committed(stack, ingest_group(app_id)) == before
    finally:
        live.stop()

    # --execute with no worker, then a fresh worker recomputes from TIME
    done = execute_when_idle(stack, app_id, topic, datadir, time_ms)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {
        tp.partition: o for tp, o in (await committed(stack, ingest_group(app_id))).items()
    } == want
    assert not any(Path(p).exists() for p in plan["stores"])
    after = json.loads(rebuild(stack, app_id, topic, datadir, time_ms).stdout)
    assert (after["changelog_partitions"], after["changelog_records"]) == (4, 0)
    assert after["stores"] == []

    again = Worker(bootstrap, app_id, topic, f"{topic}.dlq", datadir, store="rocksdb://")
    again.start()
    try:
        again.wait_metrics()
        await wait_caught_up(bootstrap, app_id, topic, again)
        kept = [e for e in events if e["ts_ms"] >= time_ms]
        now_ms = event_clock(kept)
        assert now_ms is not None and len(kept) < len(events)
        got_active, got_followers = gauges(again.scrape())
        assert got_active == expected_active(kept, now_ms, WINDOWS, DEFAULT_ACTIVE_TYPES)
        assert got_followers == expected_followers(kept)
    finally:
        again.stop()
