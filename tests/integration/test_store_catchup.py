"""The store catch-up (agents.store_catchup) against a real broker and a real RocksDB
store: what it applies is what Faust's recovery would — committed records only, in
offset order, a tombstone deleting its key — and it resumes from the store's offset.

The oracle is the last committed value per key, computed here from what was sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from faust.types import TP

from agents.store_catchup import catch_up
from streams.settings import Settings
from streams.topics import changelog_topic

pytestmark = pytest.mark.integration


async def _send(bootstrap: str, topic: str, txn_id: str, batches: list[tuple[list, bool]]) -> None:
    """Each (records, commit) as one transaction to partition 1: committed or aborted."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=txn_id)
    await producer.start()
    try:
        for records, commit in batches:
            await producer.begin_transaction()
            for key, value in records:
                await producer.send(topic, value, key=key, partition=1)
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
    finally:
        await producer.stop()


def _stored(store: Any, partition: int) -> dict[bytes, bytes]:
    db = store._db_for_partition(partition)
    return {k: v for k, v in db.items() if not k.startswith(b"__faust")}


async def test_catch_up_applies_committed_records_only_and_resumes_from_the_stored_offset(
    stack: Any, tmp_path: Path
) -> None:
    from agents.app import build, prepare_topics

    app_id = stack.unique_name("catchup")
    settings = Settings(
        kafka_bootstrap_servers=stack.kafka_bootstrap,
        store="rocksdb://",
        datadir=str(tmp_path),
        app_id=app_id,
        read_model="off",
    )
    await prepare_topics(settings)
    topic = changelog_topic(app_id)
    store = build(settings).table.data
    tp = TP(topic, 1)

    first = [(f'"k{i}"'.encode(), f"[{i}]".encode()) for i in range(3000)]
    overwrites = [(b'"k1"', b"[100]"), (b'"k2"', None), (b'"k3"', b"[300]")]
    aborted = [(b'"k4"', b"[999]"), (b'"zombie"', b"[1]")]
    await _send(stack.kafka_bootstrap, topic, f"{app_id}-t", [(first, True), (aborted, False)])
    await _send(stack.kafka_bootstrap, topic, f"{app_id}-t", [(overwrites, True)])

    expected = dict(first)
    for key, value in overwrites:
        if value is None:
            expected.pop(key)
        else:
            expected[key] = value
    assert await catch_up(stack.kafka_bootstrap, store, [tp, TP(topic, 0)]) == 3003
    assert _stored(store, 1) == expected
    assert _stored(store, 0) == {}
    offset = store.persisted_offset(tp)
    assert offset == 3006  # 3000 records, a marker, 2 aborted + marker, 3 records
    assert store.persisted_offset(TP(topic, 0)) is None  # nothing there

    # from the stored offset on: only the one record after it, then nothing
    await _send(stack.kafka_bootstrap, topic, f"{app_id}-t", [([(b'"late5"', b"[5]")], True)])
    assert await catch_up(stack.kafka_bootstrap, store, [tp]) == 1
    assert _stored(store, 1) == {**expected, b'"late5"': b"[5]"}
    assert await catch_up(stack.kafka_bootstrap, store, [tp]) == 0

    # a catch-up whose rebalance is no longer current applies nothing
    await _send(stack.kafka_bootstrap, topic, f"{app_id}-t", [([(b'"late6"', b"[6]")], True)])
    assert await catch_up(stack.kafka_bootstrap, store, [tp], lambda: False) == 0
    assert b'"late6"' not in _stored(store, 1)
