"""BatchWriter on a real broker: every record arrives once, where and when it should."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from agents.kafka_out import FUTURE_CLAMP_MS, BatchWriter, murmur2_partition
from tests.integration.test_replay import read_topic

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
KEYED, UNKEYED, SIDE = 5_000, 3_000, 25
BIG = b"x" * (32 * 1024)


async def write(bootstrap: str, topic: str, side: str) -> tuple[BatchWriter, int, int]:
    """Small batches (16 KiB) so the run fills, switches and drains many of them."""
    async with BatchWriter(bootstrap, topic, batch_bytes=16 * 1024, create_partitions=3) as w:
        await w.add_topic(side, create_partitions=2)
        for i in range(KEYED):
            headers = [("n", str(i).encode())] if i % 7 == 0 else None
            await w.send(b"k%d" % i, f"key-{i % 200}".encode(), T0 + i, headers)
        for i in range(UNKEYED):
            if w.append(b"u%d" % i, None, T0 + i):
                await w.drain()
        for i in range(SIDE):
            await w.send(b"s%d" % i, None, T0, topic=side)
        before = int(time.time() * 1000)
        await w.send(b"future", None, before + FUTURE_CLAMP_MS + 3_600_000)
        await w.send(BIG, None, T0)  # larger than a batch: a batch of its own
        await w.flush()
        after = int(time.time() * 1000)
    return w, before, after


def test_every_record_arrives_once_keyed_by_murmur2_in_order(stack: Any) -> None:
    topic, side = stack.unique_name("kafka-out"), stack.unique_name("kafka-out-side")
    writer, before, after = asyncio.run(write(stack.kafka_bootstrap, topic, side))

    assert (writer.sent, writer.failed, writer.clamped) == (KEYED + UNKEYED + 2 + SIDE, 0, 1)
    assert writer.sent_by_topic == Counter({topic: KEYED + UNKEYED + 2, side: SIDE})
    assert writer.errors == []

    records = asyncio.run(read_topic(stack.kafka_bootstrap, topic))
    values = Counter(r.value for r in records)
    expected = Counter([b"k%d" % i for i in range(KEYED)] + [b"u%d" % i for i in range(UNKEYED)])
    expected.update([b"future", BIG])
    assert values == expected  # nothing lost, nothing twice

    by_key: defaultdict[bytes, list[tuple[int, int]]] = defaultdict(list)
    unkeyed_partitions = set()
    for r in records:
        if r.value in (b"future", BIG):
            assert (
                before <= r.timestamp <= after if r.value == b"future" else r.timestamp == T0
            )  # the future one is clamped to the wall clock
            continue
        n = int(r.value[1:])
        if r.key is not None:
            assert r.partition == murmur2_partition(r.key, 3), r.key
            assert r.timestamp == T0 + n
            assert dict(r.headers) == ({"n": str(n).encode()} if n % 7 == 0 else {})
            by_key[r.key].append((r.offset, n))
        else:
            unkeyed_partitions.add(r.partition)
            assert r.timestamp == T0 + n
    for key, sent in by_key.items():
        assert [n for _, n in sorted(sent)] == sorted(n for _, n in sent), key  # order per key
    assert len(by_key) == 200
    assert unkeyed_partitions == {0, 1, 2}  # sticky moved on as batches filled

    side_records = asyncio.run(read_topic(stack.kafka_bootstrap, side))
    assert Counter(r.value for r in side_records) == Counter(b"s%d" % i for i in range(SIDE))
