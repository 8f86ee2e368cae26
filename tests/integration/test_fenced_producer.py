"""A fenced transactional producer leaves no failed future unretrieved.

When another worker's producer of the same transactional id initialises, the old
producer's next transaction request fails with ProducerFenced, aiokafka's sender
task dies, and it fails the transaction's end waiter and every batch still queued
(their delivery and drain futures) — futures nobody awaits once the transaction is
given up. asyncio logs each one as "Future exception was never retrieved" with a
traceback when it is collected: error lines in a worker log for what is the normal
end of a zombie. Real broker, two :class:`PartitionProducers` of one prefix.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest

from agents.kafka_admin import ensure_topics
from agents.producer import NotOwner, PartitionProducers
from bench.workers import read_all

pytestmark = pytest.mark.integration

RECORDS = [(b"k%d" % i, b"v%d" % i) for i in range(200)]


async def zombie_transaction(
    old: PartitionProducers, new: PartitionProducers, topic: str, when: str
) -> None:
    """A transaction of ``old`` that ``new`` fences: before it starts (the sender dies
    in AddPartitionsToTxn) or after its sends (in AddOffsetsToTxn)."""
    from aiokafka import TopicPartition

    with pytest.raises(NotOwner):
        async with old.transaction(0) as txn:
            await txn.send(topic, b"zombie-send", partition=0)
            await txn.send_many(topic, 0, RECORDS)
            if when == "after sends":
                await new.assign([0])
            await txn.send_many(topic, 0, RECORDS)
            await txn.send_offsets({TopicPartition(topic, 0): 1}, f"{topic}-group")
    assert not old.owns(0)


async def scenario(bootstrap: str, topic: str, when: str, seen: list[dict[str, Any]]) -> None:
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: seen.append(context))
    await ensure_topics(bootstrap, {topic: 1})
    old, new = PartitionProducers(bootstrap, topic), PartitionProducers(bootstrap, topic)
    await old.assign([0])
    if when == "before the transaction":
        await new.assign([0])
    await zombie_transaction(old, new, topic, when)
    async with new.transaction(0) as txn:
        await txn.send(topic, b"owner", partition=0)
    await old.revoke_all()
    await new.revoke_all()
    del old, new
    for _ in range(3):  # a future's exception is reported when it is collected
        gc.collect()
        await asyncio.sleep(0.05)


def unretrieved(seen: list[dict[str, Any]]) -> list[str]:
    gc.collect()  # whatever the finished loop still held
    return [f"{c.get('message')}: {c.get('exception')!r}" for c in seen]


def test_the_check_sees_an_unretrieved_future() -> None:
    """The capture below works: one failed future dropped unread is reported."""
    seen: list[dict[str, Any]] = []

    async def drop_one() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, c: seen.append(c))
        asyncio.get_running_loop().create_future().set_exception(RuntimeError("dropped"))

    asyncio.run(drop_one())
    assert unretrieved(seen) == ["Future exception was never retrieved: RuntimeError('dropped')"]


@pytest.mark.parametrize("when", ["before the transaction", "after sends"])
def test_fenced_producer_leaves_no_future_unretrieved(
    stack: Any, when: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pytest keeps every log record, and the "fenced" warning's arguments hold the
    # exception, whose traceback holds the producer: it would never be collected here
    monkeypatch.setattr(logging.getLogger("agents.producer"), "propagate", False)
    topic = stack.unique_name("fenced")
    seen: list[dict[str, Any]] = []
    asyncio.run(scenario(stack.kafka_bootstrap, topic, when, seen))
    assert unretrieved(seen) == []
    # and the fence held: only the new owner's record was committed
    values = [r.value for r in asyncio.run(read_all(stack.kafka_bootstrap, topic))]
    assert values == [b"owner"]
