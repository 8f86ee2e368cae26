"""The stepwise rebuild of the mirrors after a recovery: the same mirrors as the
one-piece rebuild, the event loop served between steps, the held mirrors shown
until the new ones are complete, and nothing changed when a rebalance began."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from agents.state_stage import rebuild, rebuild_stepwise
from streams.events import DEFAULT_ACTIVE_TYPES
from streams.state import UserRecord, WorkerState
from streams.topics import partition_for_user
from tests.oracle import make_key

T = 1_800_000_000_000
WINDOWS = {"1h": 3_600_000, "30d": 30 * 86_400_000}


def table_items(n: int) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for i in range(n):
        record = UserRecord(
            T - i * 1_000, T - i * 500 if i % 3 else None, T if i % 4 == 0 else None, i % 8 == 0
        )
        items.append((make_key("tw", f"c{i % 7}", f"u{i}"), record.to_wire()))
    items.append((make_key("tw", "c0", "gone"), None))  # a tombstone read back
    return items


def counts(state: WorkerState) -> tuple[Any, Any, Any, dict[int, int]]:
    return (
        state.active_counts(T, WINDOWS),
        state.lifecycle_counts(T, WINDOWS),
        state.follower_counts(),
        {p: len(part) for p, part in state.partitions.items()},
    )


async def test_stepwise_equals_the_one_piece_rebuild_and_serves_the_loop() -> None:
    items = table_items(2_500)
    whole = WorkerState(DEFAULT_ACTIVE_TYPES)
    rebuild(whole, {0, 2, 3}, items, 4)

    state = WorkerState(DEFAULT_ACTIVE_TYPES)
    held = state.assign(2)  # a mirror held before the rebalance, shown meanwhile
    held.apply("tw", "old", "u-old", T, "like")
    seen_meanwhile: list[set[int]] = []
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    def watched() -> Iterator[tuple[str, Any]]:
        for i, item in enumerate(items):
            if i % 500 == 0:
                seen_meanwhile.append(set(state.partitions))
            yield item

    task = asyncio.create_task(ticker())
    try:
        done = await rebuild_stepwise(state, {0, 2, 3}, watched(), 4, lambda: True, step=200)
    finally:
        task.cancel()
    assert done
    assert counts(state) == counts(whole)
    assert seen_meanwhile and all(parts == {2} for parts in seen_meanwhile)
    assert state.partitions[2] is not held
    assert ticks >= 2_500 // 200  # the loop ran between the steps


async def test_a_rebalance_during_the_rebuild_changes_nothing() -> None:
    items = table_items(1_000)
    state = WorkerState(DEFAULT_ACTIVE_TYPES)
    held = state.assign(1)
    current = iter([True, True, False])
    done = await rebuild_stepwise(state, {0, 1}, items, 4, lambda: next(current, False), step=100)
    assert not done and state.partitions == {1: held}


async def test_a_store_closed_by_the_next_rebalance_is_not_an_error() -> None:
    def closed() -> Iterator[tuple[str, Any]]:
        yield from table_items(10)
        raise RuntimeError("the store was closed")

    state = WorkerState(DEFAULT_ACTIVE_TYPES)
    assert not await rebuild_stepwise(state, {0}, closed(), 4, lambda: False)
    assert state.partitions == {}
    with pytest.raises(RuntimeError):  # while the generation is current: a real error
        await rebuild_stepwise(state, {0}, closed(), 4, lambda: True)
    assert state.partitions == {}


def test_the_items_cover_every_partition() -> None:
    parts = {partition_for_user(f"u{i}", 4) for i in range(2_500)}
    assert parts == {0, 1, 2, 3}
