"""The store check on a real RocksDB store (no broker): a stale partition's store is
closed, deleted and reopened empty, the marker records the changelog, a current
store is kept; and the worker's Faust app really uses the guarded table manager."""

from __future__ import annotations

import logging
import uuid
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP

from agents.store_guard import (
    MARKER_FILE,
    GuardedTableManager,
    check_partition,
    crash_advice,
    guard_stores,
    read_marker,
)
from agents.topic_ids import MetadataRequest_v12, MetadataResponse_v12, topic_ids_from
from streams.settings import Settings
from streams.store_check import ChangelogPartition, Marker
from streams.topics import changelog_topic

APP = "unit-guard"
TOPIC = changelog_topic(APP)
ID = "5e2be011-6742-42d8-8489-e0f792749d62"


@pytest.fixture
def table(tmp_path: Path) -> Any:
    from agents.app import build

    settings = Settings(store="rocksdb://", datadir=str(tmp_path), app_id=APP, read_model="off")
    return build(settings).table


def fill(table: Any, partition: int, offset: int) -> None:
    """A store that has applied changelog records up to ``offset``."""
    store = table.data
    store._db_for_partition(partition).put(b'"k"', b"[1, 2, null, false]")
    store.set_persisted_offset(TP(TOPIC, partition), offset)


def test_the_worker_app_uses_the_guarded_table_manager(table: Any) -> None:
    assert isinstance(table.app.tables, GuardedTableManager)


def test_a_discarded_store_drops_the_live_mirror_of_that_partition_only(table: Any) -> None:
    """Recovery then rebuilds the mirror from the store it refilled (the changelog is
    the truth), instead of keeping records the new changelog doesn't have."""
    state = table.worker_state
    for partition in (1, 2):
        state.assign(partition)
    table.on_store_discarded({2, 3})
    assert set(state.partitions) == {1}


def test_a_store_beyond_the_changelog_is_discarded_once_with_one_warning(
    table: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fill(table, 1, 1263)
    store, tp = table.data, TP(TOPIC, 1)
    empty = ChangelogPartition(TOPIC, 1, 0, 0, ID)
    with caplog.at_level(logging.WARNING, "agents.store_guard"):
        assert check_partition("users", store, tp, empty) is True
        assert check_partition("users", store, tp, empty) is False  # now it fits
    assert store.persisted_offset(tp) is None
    assert list(store._visible_items(store._db_for_partition(1))) == []
    assert read_marker(store.partition_path(1)) == Marker(TOPIC, ID)
    assert [r.getMessage() for r in caplog.records] == [
        f"store check: table users partition 1: the store's offset 1263 is beyond the "
        f"changelog's end (empty); discarded the local store {store.partition_path(1)}, "
        f"recovering the partition from {TOPIC}"
    ]


def test_a_current_store_is_kept_and_adopts_the_marker(table: Any) -> None:
    fill(table, 2, 9)
    store, tp = table.data, TP(TOPIC, 2)
    assert not (store.partition_path(2) / MARKER_FILE).exists()
    assert check_partition("users", store, tp, ChangelogPartition(TOPIC, 2, 0, 10, ID)) is False
    assert store.persisted_offset(tp) == 9
    assert read_marker(store.partition_path(2)) == Marker(TOPIC, ID)
    # the same offsets under a new topic id: stale
    other = ChangelogPartition(TOPIC, 2, 0, 10, str(uuid.uuid4()))
    assert check_partition("users", store, tp, other) is True
    assert store.persisted_offset(tp) is None


async def test_an_unreachable_broker_leaves_the_stores_alone(table: Any) -> None:
    fill(table, 0, 5)
    dropped: list[set[int]] = []
    table.on_store_discarded = dropped.append
    # an unreachable broker: nothing is judged, nothing discarded, the worker goes on
    assert await guard_stores("127.0.0.1:1", [table], {TP(TOPIC, 0)}) == []
    assert table.data.persisted_offset(TP(TOPIC, 0)) == 5 and dropped == []


def test_metadata_v12_round_trip() -> None:
    request = MetadataRequest_v12([(bytes(16), TOPIC, {})], False, False, {})
    assert MetadataRequest_v12.decode(BytesIO(request.encode())).topics[0][1] == TOPIC
    raw = uuid.UUID(ID).bytes
    partition: tuple[Any, ...] = (0, 0, 1, 0, [1], [1], [], {})
    response = MetadataResponse_v12(
        0,
        [(1, "127.0.0.1", 9092, None, {})],
        "cluster",
        1,
        [(0, TOPIC, raw, False, [partition], 0, {}), (3, "missing", bytes(16), False, [], 0, {})],
        {},
    )
    decoded = MetadataResponse_v12.decode(BytesIO(response.encode()))
    assert topic_ids_from(decoded) == {TOPIC: ID}


def test_crash_advice_says_what_to_do_in_one_line() -> None:
    from faust.exceptions import ConsistencyError

    error = ConsistencyError(
        "The persisted offset for changelog topic partition TP(topic='t', partition=1) is "
        "higher\nthan the last offset in that topic (highwater) (1263 > -1).\n\nMost likely "
        "you have removed data from the topics without\nremoving the RocksDB database file."
    )
    advice = crash_advice(error, "/data/w")
    assert advice == (
        "worker stopped: The persisted offset for changelog topic partition "
        "TP(topic='t', partition=1) is higher than the last offset in that topic (highwater) "
        "(1263 > -1). Start the worker again: the store check before recovery discards such "
        "a store (if it stops again, delete the table stores under /data/w/v1/tables)."
    )
    locked = Exception("IO error: While lock file: /data/w/v1/tables/users-0.db/LOCK: busy")
    assert crash_advice(locked, "/data/w") == (
        "worker stopped: a table store under /data/w is locked by another process; give "
        "every worker on this host its own data folder (--datadir / EM_DATA_DIR) or stop "
        "the other worker."
    )
    assert crash_advice(None, "/data/w") is None
    assert crash_advice(RuntimeError("boom"), "/data/w") is None
