"""Discard a local table store that is no longer a copy of its changelog.

Faust's recovery resumes each RocksDB table partition from the offset the store
remembers. When the changelog behind it was deleted and created again, comes from
a new cluster, or lost records to retention, that offset points into another log:
Faust either stops with a ``ConsistencyError`` at every start (offset beyond the
new end) or — worse — resumes silently on top of stale records (the new topic has
grown past the old offset). Kafka Streams wipes such a task's state directory and
restores it; this module does the same for every table of the worker.

:class:`GuardedTableManager` runs the check at each rebalance, after the assignment
is known and before Faust's tables open their stores and its recovery reads their
offsets. Per assigned changelog partition of each RocksDB-backed table it compares
the store's offset and marker (:data:`MARKER_FILE`: the changelog topic's name and
Kafka topic id, written into the store's folder) with the changelog's start and end
offsets and topic id (:func:`streams.store_check.stale_reason`). A stale store is
closed and deleted, one warning line says what was found and done, and Faust's
recovery then rebuilds the partition from the changelog. A store that can't be
opened for another reason than a lock held by another worker is treated the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from faust.stores.rocksdb import Store as RocksDBStore
from faust.tables import TableManager
from faust.types import TP

from agents.kafka_security import client_kwargs
from agents.topic_ids import topic_ids
from streams.store_check import ChangelogPartition, Marker, stale_reason

log = logging.getLogger(__name__)

#: The marker file inside a partition's RocksDB folder (RocksDB ignores files it
#: did not name; deleting the folder deletes the marker with it).
MARKER_FILE = "EM-CHANGELOG.json"
#: How long the check may wait for the broker before it gives up (and logs it).
KAFKA_TIMEOUT_S = 20.0


class GuardedTableManager(TableManager):
    """Faust's table manager with the store check before every recovery
    (``faust.App(..., TableManager=GuardedTableManager)``)."""

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        if generation_id == self.app.consumer_generation_id:  # else Faust skips recovery
            bootstrap = bootstrap_of(self.app)
            for tp in await guard_stores(bootstrap, list(self.values()), assigned):
                self.recovery.revoke(tp)  # forget the offsets it had for the old store
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)


def bootstrap_of(app: Any) -> str:
    """host:port,... from Faust's broker URLs (``kafka://host:port``)."""
    return ",".join(f"{url.host}:{url.port or 9092}" for url in app.conf.broker)


async def guard_stores(bootstrap: str, tables: Iterable[Any], assigned: set[TP]) -> list[TP]:
    """Check the RocksDB store of every assigned changelog partition of ``tables``;
    discard the stale ones; return their partitions. A table may define
    ``on_store_discarded(partitions)`` to drop what it derived from those stores."""
    checks = [
        (table, tp)
        for table in tables
        if isinstance(table.data, RocksDBStore)
        for tp in sorted(assigned)
        if tp.topic == table.changelog_topic_name
    ]
    if not checks:
        return []
    try:
        logs = await asyncio.wait_for(
            read_changelogs(bootstrap, [tp for _, tp in checks]), KAFKA_TIMEOUT_S
        )
    except Exception as exc:  # noqa: BLE001 - any broker trouble: recovery will report it
        log.warning(
            "store check: could not read the changelog offsets (%r); local stores are "
            "not checked in this rebalance",
            exc,
        )
        return []
    discarded: list[TP] = []
    for table, tp in checks:
        if check_partition(table.name, table.data, tp, logs[tp]):
            discarded.append(tp)
            notify = getattr(table, "on_store_discarded", None)
            if notify is not None:
                notify({tp.partition})
    return discarded


async def read_changelogs(bootstrap: str, tps: list[TP]) -> dict[TP, ChangelogPartition]:
    """Start and end offsets and topic ids of the changelog partitions, now."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **client_kwargs()
    )
    await consumer.start()
    try:
        wanted = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        starts = await consumer.beginning_offsets(wanted)
        ends = await consumer.end_offsets(wanted)
        ids = await topic_ids(consumer._client, sorted({tp.topic for tp in tps}))  # noqa: SLF001
    finally:
        await consumer.stop()
    return {
        tp: ChangelogPartition(tp.topic, tp.partition, starts[tp], ends[tp], ids.get(tp.topic))
        for tp in wanted
    }


def check_partition(table: str, store: RocksDBStore, tp: TP, changelog: ChangelogPartition) -> bool:
    """Judge one partition's store; discard it if stale; keep its marker current.
    True when the store was discarded."""
    path = store.partition_path(tp.partition)
    try:
        stored = store.persisted_offset(tp)
    except Exception as exc:  # noqa: BLE001 - whatever RocksDB raises on open
        if "lock" in repr(exc).lower():
            return False  # another worker's: Faust waits for the lock, then stops
        reason: str | None = f"the store can't be opened ({exc})"
    else:
        reason = stale_reason(stored, read_marker(path), changelog)
    if reason is not None:
        discard(store, tp.partition)
        log.warning(
            "store check: table %s partition %d: %s; discarded the local store %s, "
            "recovering the partition from %s",
            table,
            tp.partition,
            reason,
            path,
            changelog.topic,
        )
    write_marker(path, Marker(changelog.topic, changelog.topic_id))
    return reason is not None


def discard(store: RocksDBStore, partition: int) -> None:
    """Close the partition's database, delete its folder and open it again, empty.
    Closing first matters: a database dropped while open may still flush files into
    the folder the new one lives in."""
    db = store._dbs.pop(partition, None)  # noqa: SLF001 - the store's own handle cache
    close = getattr(db, "close", None)
    if close is not None:
        close()
    store._key_index.clear()  # noqa: SLF001 - it may point keys at the old database
    shutil.rmtree(store.partition_path(partition), ignore_errors=True)
    store._db_for_partition(partition)  # noqa: SLF001 - recreates the folder


def read_marker(path: Path) -> Marker | None:
    try:
        data = json.loads((path / MARKER_FILE).read_text())
        return Marker(str(data["topic"]), data.get("topic_id"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_marker(path: Path, marker: Marker) -> None:
    if read_marker(path) == marker or not path.is_dir():
        return
    tmp = path / f"{MARKER_FILE}.tmp"
    tmp.write_text(json.dumps({"topic": marker.topic, "topic_id": marker.topic_id}))
    tmp.replace(path / MARKER_FILE)


def crash_advice(reason: BaseException | None, datadir: str) -> str | None:
    """The one line to print when recovery stopped the worker, saying what to do;
    None for any other end. Faust's own report is a multi-line traceback that names
    neither the data folder nor the way out."""
    from faust.exceptions import ConsistencyError

    if isinstance(reason, ConsistencyError):
        found = " ".join(str(reason).split()).split(". ")[0]
        return (
            f"worker stopped: {found}. Start the worker again: the store check before "
            f"recovery discards such a store (if it stops again, delete the table stores "
            f"under {datadir}/v1/tables)."
        )
    if reason is not None and "while lock file" in str(reason).lower():  # RocksDB's words
        return (
            f"worker stopped: a table store under {datadir} is locked by another process; "
            "give every worker on this host its own data folder (--datadir / EM_DATA_DIR) "
            "or stop the other worker."
        )
    return None
