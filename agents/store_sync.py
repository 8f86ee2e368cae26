"""Committed changelog records into this worker's own RocksDB table store, with their offset.

The state stage writes the users changelog itself (:mod:`agents.changelog`), not
through Faust's table, so Faust's store never saw the records of the partitions
this worker processes, and their persisted offset stayed where the last recovery
left it (none, on a new worker). Every rebalance then replayed every assigned
partition from its start through Faust's recovery, at about 3,700 records/s here:
``bench/recovery_bench.py --records 300000`` — the survivor of a SIGTERM replayed all
four partitions (300,000 records, two of them its own) and was exact after 102 s.
Kafka Streams keeps its stores current and checkpoints their offsets; this does the
same after each committed transaction, so a partition kept across a rebalance
replays only what was written after its last commit here.

Only committed records reach the store: they are written after the transaction's
commit returned, in one write batch, and the offset after them. A crash between
the two leaves the store ahead of its offset, and the replay from the older offset
writes the same records again, in order. The offset stored is the first offset of
the transaction's last producer batch (aiokafka reports one per batch), at or
before its last record: Faust's recovery starts there and reads a few records
again, never misses one. A store that can't be written is logged once and left to
the replay, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from faust.types import TP

log = logging.getLogger(__name__)

Record = tuple[bytes, bytes | None]


def last_batch_offset(results: Iterable[Any]) -> int | None:
    """The highest base offset among a transaction's batch results (RecordMetadata);
    None if none carries one."""
    offsets = [r.offset for r in results if r is not None and r.offset is not None]
    return max(offsets) if offsets else None


def keeps_offsets(store: Any) -> bool:
    """A Faust RocksDB store (rocksdict), whose offsets recovery resumes from; the
    memory store keeps none, and its recovery replays everything anyway."""
    return bool(getattr(store, "use_rocksdict", False))


def write_committed(store: Any, tp: TP, records: Iterable[Record], offset: int) -> None:
    """Committed (key, value) records of ``tp`` into the store in one write batch (None:
    a tombstone, deletes the key), then ``offset`` as the store's persisted offset."""
    from rocksdict import WriteBatch

    batch = WriteBatch(raw_mode=True)
    for key, value in records:
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    store._db_for_partition(tp.partition).write(batch)  # noqa: SLF001 - as Faust's own
    store.set_persisted_offset(tp, offset)


class StoreSync:
    """Writes committed records of one changelog topic into the table's RocksDB store."""

    def __init__(self, table: Any, changelog_topic: str) -> None:
        self.table = table
        self.topic = changelog_topic
        self.records = 0  # written into the store since the start
        self._failed = False

    def committed(self, partition: int, records: Sequence[Record], offset: int) -> None:
        """These records were committed to ``partition``; ``offset``: see the module."""
        store = self.table.data
        if not keeps_offsets(store):
            return
        try:
            write_committed(store, TP(self.topic, partition), records, offset)
        except Exception as exc:  # noqa: BLE001 - the replay covers what is not here
            if not self._failed:
                self._failed = True
                log.warning(
                    "store sync: could not write committed records into the local store "
                    "(%r); a rebalance will replay them from the changelog",
                    exc,
                )
            return
        self.records += len(records)
