"""The state agent through Faust's ``agent.test_context()`` (no broker).

What only the agent does, beyond the pure state: it decodes by-user batches,
applies them to the partition's mirror, and writes each changed key to the
changelog once per batch, in the table's JSON encoding, so Faust's recovery can
read it back. The partitions' transactional producers are replaced by a
recorder — Faust's test context already stands in for Kafka here.

Also what a worker must never do: write anything for a partition it does not
hold. Tombstones for the dirty keys of a revoked partition were the way a live
worker deleted users from the changelog when partitions moved (issue 11).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from agents.changelog import ChangelogWriter
from agents.ingest import encode_batch
from agents.producer import NotOwner
from streams.settings import Settings
from streams.state import UserRecord, WorkerState, split_key
from streams.topics import changelog_topic
from tests.oracle import make_key

T = 1_800_000_000_000


class RecordingTransaction:
    def __init__(self, base_offset: int = 0) -> None:
        self.records: list[tuple[str, int, bytes, bytes | None]] = []
        self.offsets: list[tuple[Any, int, str]] = []
        self.futures: list[asyncio.Future] = []  # one per send_many: its first offset
        self.base_offset = base_offset

    async def send_many(
        self, topic: str, partition: int, records: list[tuple[bytes, bytes | None]]
    ) -> None:
        done = asyncio.get_running_loop().create_future()
        done.set_result(SimpleNamespace(offset=self.base_offset + len(self.records)))
        self.futures.append(done)
        self.records += [(topic, partition, key, value) for key, value in records]

    async def send_offsets(self, offsets: dict[Any, int], group_id: str) -> None:
        self.offsets += [(tp, offset, group_id) for tp, offset in offsets.items()]


class RecordingProducers:
    """Stands in for :class:`agents.producer.PartitionProducers`: records what
    committed transactions held; owns the partitions in ``mine``."""

    def __init__(self, mine: set[int]) -> None:
        self.mine = set(mine)
        self.sent: list[tuple[str, int, bytes, bytes | None]] = []
        self.offsets: list[tuple[Any, int, str]] = []

    def owns(self, partition: int) -> bool:
        return partition in self.mine

    def owned(self) -> set[int]:
        return set(self.mine)

    @asynccontextmanager
    async def transaction(self, partition: int) -> AsyncIterator[RecordingTransaction]:
        if partition not in self.mine:
            raise NotOwner(partition)
        txn = RecordingTransaction(len(self.sent))
        yield txn
        self.sent += txn.records
        self.offsets += txn.offsets


@pytest.fixture
def pipeline(tmp_path: Any) -> Any:
    from agents.app import build

    settings = Settings(
        store="memory://",
        datadir=str(tmp_path),
        app_id="unit-agent",
        clock="event",
        partitions=4,
        read_model="off",
    )
    built = build(settings)
    built.writer.producers = RecordingProducers({0, 1, 2, 3})  # type: ignore[assignment]
    return built


async def test_batches_apply_and_each_key_is_written_once_per_batch(pipeline: Any) -> None:
    agent = next(a for a in pipeline.app.agents.values() if a.name.endswith("apply-events"))
    events = [
        [T - 5_000, "tw", "acme", "u1", "like"],
        [T - 4_000, "tw", "acme", "u1", "comment"],  # same key again: one record
        [T - 9_000, "tw", "acme", "u1", "like"],  # late: last-active stays T - 4s
        [T - 3_000, "tw", "acme", "u2", "follow"],
        [T - 2_000, "tw", "acme", "u2", "view"],  # not active: no change to last-active
        [T - 1_000, "tw", "other", "u1", "share"],
    ]
    async with agent.test_context() as ctx:
        await ctx.put(encode_batch(2, events), partition=2)
        await ctx.put(encode_batch(2, [[T - 1_000, "tw", "acme", "u2", "follow"]]), partition=2)
    await pipeline.writer.drain()  # the agent stages; a task per partition writes

    sent = pipeline.writer.producers.sent
    keys_written = {key for _, _, key, _ in sent}
    assert {topic for topic, *_ in sent} == {changelog_topic("unit-agent")}
    assert {part for _, part, *_ in sent} == {2}
    want_keys = {
        orjson.dumps(make_key("tw", c, u))
        for c, u in (("acme", "u1"), ("acme", "u2"), ("other", "u1"))
    }
    assert keys_written == want_keys
    # take() may group both puts into one batch or not: a key is written at most once
    # per batch, so u2/acme (changed by both puts) appears once or twice, others once
    counts = {key: sum(1 for *_, k, _ in sent if k == key) for key in want_keys}
    assert counts[orjson.dumps(make_key("tw", "acme", "u1"))] == 1
    assert counts[orjson.dumps(make_key("tw", "other", "u1"))] == 1
    assert counts[orjson.dumps(make_key("tw", "acme", "u2"))] in (1, 2)

    # the last record written per key is what Faust's recovery will load
    latest = {
        split_key(orjson.loads(k)): UserRecord.from_wire(orjson.loads(v))
        for *_, k, v in sent
        if v is not None
    }
    # first seen is the earliest event (the late one); last active never moves back
    assert latest[("tw", "acme", "u1")] == UserRecord(T - 9_000, T - 4_000, None, False)
    assert latest[("tw", "acme", "u2")] == UserRecord(T - 3_000, T - 1_000, T - 1_000, True)

    counts_now = pipeline.state.active_counts(T, {"5s": 5_000, "1m": 60_000})
    assert counts_now[("tw", "acme")] == {"5s": 2, "1m": 2}
    assert counts_now[("tw", "*")] == {"5s": 2, "1m": 2}
    assert pipeline.state.follower_counts()[("tw", "acme")] == 1


def _state_with(partition: int, *keys: str) -> WorkerState:
    state = WorkerState(frozenset({"like"}))
    part = state.assign(partition)
    for key in keys:
        part.load(key, UserRecord(T - 9_000, T - 4_000, None, False))
    return state


async def test_no_tombstones_for_the_dirty_keys_of_a_partition_no_longer_held() -> None:
    """The bug behind issue 11: a batch's dirty keys are written after a rebalance
    took their partition away; with no mirror left, every key looked deleted and
    went out as a tombstone — deleting live users from the changelog the new owner
    recovers from."""
    key = make_key("tw", "acme", "u1")
    state = _state_with(2, key)
    producers = RecordingProducers({2})
    writer = ChangelogWriter(producers, "cl", state, "by-user", "group")  # type: ignore[arg-type]
    state.revoke(2)  # the rebalance lands between apply and write
    written = await writer.write({2: {key}}, {2: 10})
    assert written == set()
    assert producers.sent == [] and producers.offsets == []


async def test_a_fenced_partition_writes_nothing_and_commits_no_offsets() -> None:
    key = make_key("tw", "acme", "u1")
    state = _state_with(2, key)
    producers = RecordingProducers(set())  # another worker's producer fenced ours
    writer = ChangelogWriter(producers, "cl", state, "by-user", "group")  # type: ignore[arg-type]
    assert await writer.write({2: {key}}, {2: 10}) == set()
    assert producers.sent == [] and producers.offsets == []


async def test_only_committed_records_are_handed_to_the_store_with_their_offset() -> None:
    """agents.store_sync gets each committed transaction's records and the first
    offset of its last batch; a partition not (or no longer) owned hands over nothing."""
    keys = [make_key("tw", "acme", f"u{i}") for i in range(3)]
    state = _state_with(2, *keys)
    state.assign(3)
    producers = RecordingProducers({2})
    writer = ChangelogWriter(producers, "cl", state, "by-user", "group")  # type: ignore[arg-type]
    handed: list[tuple[int, list[tuple[bytes, Any]], int]] = []
    writer.on_committed = lambda p, records, offset: handed.append((p, records, offset))
    assert await writer.write({2: set(keys[:2]), 3: {keys[2]}}, {2: 5, 3: 9}) == {2}
    assert await writer.write({2: {keys[2]}}) == {2}
    assert await writer.write({2: set()}, {2: 6}) == {2}  # offsets only: no records
    assert [(p, sorted(k for k, _v in records), offset) for p, records, offset in handed] == [
        (2, sorted(orjson.dumps(k) for k in keys[:2]), 0),
        (2, [orjson.dumps(keys[2])], 2),
    ]
    assert [(k, v) for _t, _p, k, v in producers.sent] == [
        pair for _p, records, _o in handed for pair in records
    ]


async def test_records_and_offsets_go_in_one_transaction_per_partition() -> None:
    key = make_key("tw", "acme", "u1")
    state = _state_with(2, key)
    state.assign(3)
    producers = RecordingProducers({2, 3})
    writer = ChangelogWriter(producers, "cl", state, "by-user", "group")  # type: ignore[arg-type]
    assert await writer.write({2: {key}}, {2: 10, 3: 7}) == {2, 3}
    assert producers.sent == [
        (
            "cl",
            2,
            orjson.dumps(key),
            orjson.dumps(UserRecord(T - 9_000, T - 4_000, None, False).to_wire()),
        )
    ]
    assert sorted((tp.partition, off, g) for tp, off, g in producers.offsets) == [
        (2, 10, "group"),
        (3, 7, "group"),
    ]


async def test_a_malformed_by_user_message_is_skipped_and_the_batch_committed(
    pipeline: Any,
) -> None:
    """The by-user topic is internal, but a malformed message on it (or a bug applying
    one) must neither stop the agent nor hold back the rest of its batch; the batch's
    records and offsets, the bad message's included, go out together."""
    agent = next(a for a in pipeline.app.agents.values() if a.name.endswith("apply-events"))
    good = [[T - 5_000, "tw", "acme", "u1", "like"]]
    async with agent.test_context() as ctx:
        await ctx.put(b"{not json", partition=1)
        await ctx.put(encode_batch(1, [[T, "tw", None, "u9", "like"]]), partition=1)
        await ctx.put(encode_batch(1, good), partition=1)

    sent = pipeline.writer.producers.sent
    assert [split_key(orjson.loads(key)) for _, _, key, _ in sent] == [("tw", "acme", "u1")]
    assert max(off for tp, off, _ in pipeline.writer.producers.offsets if tp.partition == 1) == 3
    assert pipeline.state.follower_counts() == {}
    assert pipeline.state.active_counts(T, {"1m": 60_000})[("tw", "acme")] == {"1m": 1}


async def test_no_batch_while_a_rebalance_that_began_after_the_last_recovery_runs() -> None:
    """The zombie test's lost updates: one recovery's ``ready.set()`` wakes the agent,
    the next rebalance clears ``ready`` and takes the batch lock before the agent runs;
    ``ready.wait()`` still returns, and the batch was applied while that rebalance
    fenced and revoked — to a mirror about to be rebuilt — and its stale records
    written over another worker's newer ones. The batch must wait for the recovery."""
    writer = ChangelogWriter(RecordingProducers(set()), "cl", WorkerState(frozenset()))  # type: ignore[arg-type]
    writer.ready.clear()  # a rebalance in progress
    applied: list[bool] = []

    async def agent() -> None:
        async with writer.batch():
            applied.append(writer.ready.is_set())

    task = asyncio.create_task(agent())
    await asyncio.sleep(0)  # the agent waits for the recovery
    writer.ready.set()  # recovery N completes...
    writer.ready.clear()  # ...and rebalance N+1 begins before the agent runs
    async with writer.batch_lock:  # it fences and revokes under the lock
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)
    assert applied == []  # not during rebalance N+1
    writer.ready.set()  # recovery N+1 completes
    await asyncio.wait_for(task, 1)
    assert applied == [True]
    assert not writer.batch_lock.locked()


async def test_the_store_catch_up_runs_once_per_rebalance_within_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """UsersTable.catch_up_store (the recovery's first step, not the rebalance
    callback, during which aiokafka sends no heartbeat): the current generation's
    catch-up runs once; a stale generation's does not run; past its budget the
    catch-up is told to stop."""
    import time

    import agents.state_stage as state_stage
    from agents.state_stage import UsersTable

    calls: list[set] = []
    stops: list[bool] = []

    async def fake_catch_up(table: Any, assigned: set, still_current: Any) -> None:
        calls.append(assigned)
        stops.append(still_current())
        await asyncio.sleep(0.05)
        stops.append(still_current())

    monkeypatch.setattr(state_stage, "catch_up_table", fake_catch_up)
    app = SimpleNamespace(consumer_generation_id=7)
    table = SimpleNamespace(app=app, catch_up_due=(7, {"tp"}))
    await UsersTable.catch_up_store(table, 5.0)  # type: ignore[arg-type]
    assert calls == [{"tp"}] and stops == [True, True]
    await UsersTable.catch_up_store(table, 5.0)  # type: ignore[arg-type]
    assert len(calls) == 1  # once per rebalance

    table.catch_up_due = (6, {"tp"})  # planned by a rebalance no longer current
    await UsersTable.catch_up_store(table, 5.0)  # type: ignore[arg-type]
    assert len(calls) == 1

    table.catch_up_due = (7, {"tp"})
    started = time.monotonic()
    await UsersTable.catch_up_store(table, 0.02)  # type: ignore[arg-type]
    assert stops[-2:] == [True, False]  # past the budget: stop
    assert time.monotonic() - started < 1.0


async def test_expiry_serves_the_event_loop_and_tombstones_what_it_drops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In one piece the scan held the loop for a second every minute at 555,000 records;
    it now lets the loop through every EXPIRY_STEP records, and drops the same keys."""
    from agents import state_stage

    monkeypatch.setattr(state_stage, "EXPIRY_STEP", 500)
    state = WorkerState(frozenset({"like"}))
    part = state.assign(2)
    for i in range(5_000):  # every other user is old
        part.apply("tw", "acme", f"u{i}", T - (90 * 86_400_000 if i % 2 else 1_000), "like")
    producers = RecordingProducers({2})
    writer = ChangelogWriter(producers, "cl", state, "by-user", "group")  # type: ignore[arg-type]
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    removed = await state_stage.expire(state, writer, T, 60 * 86_400_000)
    ticking.cancel()
    assert removed == 2_500 and len(part) == 2_500
    assert turns >= 5_000 // 500 - 1
    tombstones = {split_key(orjson.loads(k))[2] for _t, _p, k, v in producers.sent if v is None}
    assert tombstones == {f"u{i}" for i in range(1, 5_000, 2)}
