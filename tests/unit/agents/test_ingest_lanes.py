"""agents/ingest_lanes.py: each input partition's transactions one at a time, in order,
without waiting for the other partitions'."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agents.ingest_lanes import Lanes


class Broker:
    """A handling per (partition, batch) that ends when the test says so."""

    def __init__(self) -> None:
        self.started: list[tuple[str, list[int]]] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.results: dict[str, bool] = {}
        self.paused: list[str] = []
        self.resumed: list[str] = []

    async def handle(self, tp: str, messages: list[int]) -> bool:
        self.started.append((tp, list(messages)))
        gate = self.gates.setdefault(tp, asyncio.Event())
        await gate.wait()
        gate.clear()
        return self.results.get(tp, True)

    def lanes(self, limit: int = 100, spacing: float = 0.0) -> Lanes:
        return Lanes(self.handle, self.paused.append, self.resumed.append, limit, spacing)

    async def release(self, tp: str) -> None:
        self.gates.setdefault(tp, asyncio.Event()).set()
        for _ in range(3):
            await asyncio.sleep(0)


async def turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_slow_partition_does_not_hold_the_others() -> None:
    broker = Broker()
    lanes = broker.lanes()
    lanes.submit("a", [0, 1])
    lanes.submit("b", [0])
    await turns()
    for offset in range(1, 4):  # b commits three times while a's first is in flight
        await broker.release("b")
        lanes.submit("b", [offset])
        await turns()
    assert [m for tp, m in broker.started if tp == "b"] == [[0], [1], [2], [3]]
    assert [m for tp, m in broker.started if tp == "a"] == [[0, 1]]
    await broker.release("a")
    await broker.release("b")
    await lanes.drain()
    assert not lanes.busy()


async def test_what_is_polled_meanwhile_goes_next_as_one_batch_in_order() -> None:
    broker = Broker()
    lanes = broker.lanes()
    lanes.submit("a", [0, 1, 2])
    await turns()
    lanes.submit("a", [3, 4])
    lanes.submit("a", [5, 6, 7, 8])
    assert broker.started == [("a", [0, 1, 2])]  # one transaction at a time
    await broker.release("a")
    assert broker.started == [("a", [0, 1, 2]), ("a", [3, 4, 5, 6, 7, 8])]
    await broker.release("a")
    await lanes.drain()
    assert lanes.waiting("a") == 0


async def test_a_partition_is_paused_past_the_limit_and_resumed_when_its_turn_ends() -> None:
    broker = Broker()
    lanes = broker.lanes(limit=5)
    lanes.submit("a", [0])
    await turns()
    lanes.submit("a", [1, 2, 3])
    assert broker.paused == []
    lanes.submit("a", [4, 5])
    assert broker.paused == ["a"]
    lanes.submit("a", [6])  # fetched before the pause took effect: still kept
    assert broker.paused == ["a"]
    await broker.release("a")
    assert broker.resumed == ["a"]
    assert broker.started[-1] == ("a", [1, 2, 3, 4, 5, 6])
    await broker.release("a")
    await lanes.drain()


async def test_a_refused_batch_hands_its_followers_on_and_forget_drops_them() -> None:
    """A failed handling does not drop what waits (the stage's own check refuses a
    batch that does not start where it must, and rewinds); a rewind forgets it."""
    broker = Broker()
    lanes = broker.lanes()
    broker.results["a"] = False
    lanes.submit("a", [0, 1])
    await turns()
    lanes.submit("a", [2, 3])
    await broker.release("a")
    assert broker.started == [("a", [0, 1]), ("a", [2, 3])]
    lanes.submit("a", [4])
    lanes.forget("a")  # the stage rewound the partition: [4] will be read again
    await broker.release("a")
    await lanes.drain()
    assert broker.started == [("a", [0, 1]), ("a", [2, 3])]


async def test_an_error_in_a_handling_is_raised_in_the_polling_loop() -> None:
    async def fail(tp: Any, messages: list[int]) -> bool:
        raise RuntimeError(f"bug on {tp}")

    lanes = Lanes(fail, lambda tp: None, lambda tp: None, 10)
    lanes.submit("a", [0])
    lanes.check()  # nothing yet
    await lanes.drain()
    with pytest.raises(RuntimeError, match="bug on a"):
        lanes.check()
    lanes.check()  # raised once


async def test_cancel_stops_what_is_in_flight() -> None:
    broker = Broker()
    lanes = broker.lanes()
    lanes.submit("a", [0])
    lanes.submit("b", [0])
    await turns()
    lanes.submit("a", [1])
    await lanes.cancel()
    assert not lanes.busy()
    assert broker.started == [("a", [0]), ("b", [0])]


async def test_spacing_holds_the_next_batch_and_sends_what_came_meanwhile_with_it() -> None:
    """At a steady rate, a transaction that ended early waits out the spacing (from
    its start): what is polled meanwhile joins the waiting batch, in order, and the
    partition counts as busy throughout."""
    loop = asyncio.get_running_loop()
    broker = Broker()
    lanes = broker.lanes(spacing=0.2)
    began = loop.time()
    lanes.submit("a", [0])
    await turns()
    lanes.submit("a", [1])
    await broker.release("a")  # the first ends at once; [1] is held
    assert broker.started == [("a", [0])] and lanes.busy()
    lanes.submit("a", [2, 3])
    await asyncio.sleep(0.1)
    assert broker.started == [("a", [0])]
    await asyncio.sleep(0.15)
    assert broker.started == [("a", [0]), ("a", [1, 2, 3])]
    assert loop.time() - began >= 0.2
    await broker.release("a")
    await lanes.drain()
    assert not lanes.busy()


async def test_spacing_costs_nothing_to_a_partition_that_was_idle_or_slow() -> None:
    broker = Broker()
    lanes = broker.lanes(spacing=0.05)
    lanes.submit("a", [0])
    await turns()
    await asyncio.sleep(0.06)  # a transaction longer than the spacing
    lanes.submit("a", [1])
    await broker.release("a")
    assert broker.started == [("a", [0]), ("a", [1])]  # no hold
    await broker.release("a")
    await lanes.drain()
    await asyncio.sleep(0.06)
    lanes.submit("a", [2])  # idle: goes at once
    await turns()
    assert broker.started[-1] == ("a", [2])
    await broker.release("a")
    await lanes.drain()


async def test_a_held_partition_is_drained_forgotten_and_cancelled_like_a_running_one() -> None:
    broker = Broker()
    lanes = broker.lanes(spacing=0.1)
    lanes.submit("a", [0])
    await turns()
    lanes.submit("a", [1])
    await broker.release("a")
    draining = asyncio.ensure_future(lanes.drain())  # waits through the hold
    await asyncio.sleep(0.15)
    assert broker.started == [("a", [0]), ("a", [1])] and not draining.done()
    await broker.release("a")
    await draining
    # forgotten during a hold: nothing goes when it ends
    lanes.submit("b", [0])
    await turns()
    lanes.submit("b", [1])
    await broker.release("b")
    lanes.forget("b")
    await lanes.drain()
    assert [m for tp, m in broker.started if tp == "b"] == [[0]]
    # cancelled during a hold
    lanes.submit("c", [0])
    await turns()
    lanes.submit("c", [1])
    await broker.release("c")
    assert lanes.busy()
    await lanes.cancel()
    assert not lanes.busy()
    await asyncio.sleep(0.15)
    assert [m for tp, m in broker.started if tp == "c"] == [[0]]
