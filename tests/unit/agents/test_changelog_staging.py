"""The state agent's staged changelog writes (ChangelogWriter.stage): the agent goes on
applying while a task per partition commits what was staged.

Exactness is the point: whenever a transaction commits the by-user offset O, the
changelog as of that commit plus the events from O on must rebuild exactly the
state of all events — the recovery a new owner does after a crash at that moment.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest

from agents import changelog
from agents.changelog import ChangelogWriter
from agents.producer import NotOwner
from streams.state import UserRecord, WorkerState, fold, split_key
from tests.oracle import make_key
from tests.unit.agents.test_state_stage import RecordingProducers, RecordingTransaction

T = 1_800_000_000_000
ACTIVE = frozenset({"like", "comment"})


class GatedProducers(RecordingProducers):
    """Records committed transactions as (partition, {key: wire value}, offset); each
    transaction waits for ``gate`` once it holds the partition's lock, like a slow
    broker; ``fail`` raises that many transactions an error the writer does not retry."""

    def __init__(self, mine: set[int]) -> None:
        super().__init__(mine)
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = 0
        self.commits: list[tuple[int, dict[str, Any], int | None]] = []
        self._locks: dict[int, asyncio.Lock] = {}

    @asynccontextmanager
    async def transaction(self, partition: int) -> AsyncIterator[RecordingTransaction]:
        async with self._locks.setdefault(partition, asyncio.Lock()):
            if partition not in self.mine:
                raise NotOwner(partition)
            txn = RecordingTransaction()
            yield txn
            await self.gate.wait()  # the round trips of the commit
            if self.fail:
                self.fail -= 1
                raise RuntimeError("broker said no")
            records = {
                orjson.loads(k): None if v is None else orjson.loads(v)
                for _t, _p, k, v in txn.records
            }
            offset = max((o for _tp, o, _g in txn.offsets), default=None)
            self.commits.append((partition, records, offset))


def _writer(producers: GatedProducers, state: WorkerState) -> ChangelogWriter:
    return ChangelogWriter(producers, "cl", state, "by-user", "group")  # type: ignore[arg-type]


def _apply(state: WorkerState, partition: int, event: tuple[int, str, str]) -> str:
    """Apply an event that changes its record; its key."""
    ts, user, kind = event
    key = state.partitions[partition].apply("tw", "acme", user, ts, kind)
    assert key is not None
    return key


async def test_the_agent_goes_on_while_a_transaction_waits_and_its_stages_coalesce() -> None:
    state = WorkerState(ACTIVE)
    state.assign(2)
    producers = GatedProducers({2})
    writer = _writer(producers, state)
    producers.gate.clear()  # the broker is slow
    k1 = _apply(state, 2, (T - 9_000, "u1", "like"))
    writer.stage({2: {k1}}, {2: 5})
    await asyncio.sleep(0)  # the flusher takes u1 and waits in its transaction
    k1b = _apply(state, 2, (T - 1_000, "u1", "comment"))
    k2 = _apply(state, 2, (T - 2_000, "u2", "like"))
    writer.stage({2: {k1b, k2}}, {2: 9})
    writer.stage({}, {2: 12})  # a batch that changed nothing still moves the offset
    await writer.room()  # nothing much staged: the agent does not wait
    assert producers.commits == []
    producers.gate.set()
    await writer.drain()
    u1, u2 = make_key("tw", "acme", "u1"), make_key("tw", "acme", "u2")
    first, second = producers.commits
    assert first[2] == 5 and set(first[1]) == {u1}
    # the second transaction: both later batches, one record per key, the last offset
    assert second == (
        2,
        {
            u1: UserRecord(T - 9_000, T - 1_000, None, False).to_wire(),
            u2: UserRecord(T - 2_000, T - 2_000, None, False).to_wire(),
        },
        12,
    )
    assert writer.staged_keys == 0


async def test_a_failed_transaction_restages_its_keys_and_stops_the_agent() -> None:
    state = WorkerState(ACTIVE)
    state.assign(2)
    producers = GatedProducers({2})
    writer = _writer(producers, state)
    producers.fail = 1
    key = _apply(state, 2, (T - 9_000, "u1", "like"))
    writer.stage({2: {key}}, {2: 5})
    with pytest.raises(RuntimeError, match="broker said no"):
        await writer.drain()
    assert producers.commits == [] and writer.staged_keys == 1
    # the agent's next batch is not staged on top of a lost write: it stops instead
    writer._failed = RuntimeError("again")  # noqa: SLF001
    with pytest.raises(RuntimeError, match="again"):
        writer.stage({}, {2: 6})
    # once the broker takes it, nothing staged before the failure is missing
    writer.stage({}, {2: 7})
    await writer.drain()
    assert producers.commits == [
        (2, {key: UserRecord(T - 9_000, T - 9_000, None, False).to_wire()}, 7)
    ]


async def test_a_partition_no_longer_owned_drops_what_it_staged() -> None:
    state = WorkerState(ACTIVE)
    state.assign(2)
    state.assign(3)
    producers = GatedProducers({3})  # another worker fenced our producer of 2
    writer = _writer(producers, state)
    k2, k3 = _apply(state, 2, (T, "u1", "like")), _apply(state, 3, (T, "u9", "like"))
    writer.stage({2: {k2}, 3: {k3}}, {2: 5, 3: 8})
    await writer.drain()
    assert [(p, offset) for p, _records, offset in producers.commits] == [(3, 8)]
    assert writer.staged_keys == 0


async def test_room_waits_for_the_writes_when_too_much_is_staged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(changelog, "MAX_STAGED_KEYS", 2)
    state = WorkerState(ACTIVE)
    state.assign(2)
    producers = GatedProducers({2})
    writer = _writer(producers, state)
    producers.gate.clear()
    first = _apply(state, 2, (T, "u0", "like"))
    writer.stage({2: {first}}, {2: 1})
    await asyncio.sleep(0)  # in flight
    keys = {_apply(state, 2, (T, f"u{i}", "like")) for i in range(1, 4)}
    writer.stage({2: keys}, {2: 4})
    waiting = asyncio.create_task(writer.room())
    await asyncio.sleep(0.01)
    assert not waiting.done()  # 3 staged > 2: the agent waits
    producers.gate.set()
    await asyncio.wait_for(waiting, 5)
    assert writer.staged_keys == 0 and producers.commits[-1][2] == 4


def _rebuild(changelog_records: dict[str, Any], events: list[tuple[int, str, str]]) -> dict:
    """A new owner's recovery: the changelog's records, then the events from the
    committed offset on, folded with the rules of streams.state."""
    records = {
        key: UserRecord.from_wire(value)
        for key, value in changelog_records.items()
        if value is not None
    }
    for ts, user, kind in events:
        key = make_key("tw", "acme", user)
        record = records.get(key)
        if record is None:
            records[key] = record = UserRecord(ts, None, None, False)
        fold(record, ts, kind, ACTIVE)
    return {split_key(k): r for k, r in records.items()}


@pytest.mark.parametrize("seed", range(40))
async def test_a_crash_after_any_commit_recovers_the_exact_state(seed: int) -> None:
    """Random batches, staged while earlier transactions are slow: after every commit,
    the changelog so far + the events from its offset on = the state of all events."""
    rng = random.Random(seed)
    kinds = ["like", "comment", "view", "follow", "unfollow"]
    events = [
        (T - rng.randrange(50_000), f"u{rng.randrange(12)}", rng.choice(kinds)) for _ in range(300)
    ]
    state = WorkerState(ACTIVE)
    state.assign(2)
    producers = GatedProducers({2})
    writer = _writer(producers, state)

    async def broker() -> None:  # commits take a random while
        while True:
            producers.gate.clear()
            await asyncio.sleep(rng.random() * 0.002)
            producers.gate.set()
            await asyncio.sleep(0)

    slow = asyncio.create_task(broker())
    offset = 0
    while offset < len(events):
        batch = events[offset : offset + rng.randrange(1, 25)]
        changed = (state.partitions[2].apply("tw", "acme", u, ts, kind) for ts, u, kind in batch)
        dirty = {key for key in changed if key is not None}
        offset += len(batch)
        writer.stage({2: dirty}, {2: offset})
        if rng.random() < 0.5:
            await asyncio.sleep(rng.random() * 0.002)
    slow.cancel()
    producers.gate.set()
    await writer.drain()

    everything = _rebuild({}, events)
    assert {split_key(k): r for k, r in state.partitions[2].records.items()} == everything
    written: dict[str, Any] = {}
    assert producers.commits[-1][2] == len(events)
    for _partition, records, committed in producers.commits:
        written.update(records)
        if committed is not None:
            assert _rebuild(written, events[committed:]) == everything
