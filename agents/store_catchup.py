"""Bring the RocksDB stores of assigned changelog partitions up to their changelog
before Faust's recovery starts, with a plain ``read_committed`` consumer.

Faust's recovery hands every changelog record through its stream machinery (a
fetcher task, ``wait_first``, a future per message, the remaining-offsets table
recomputed per record): about 3,700 records/s here, so a worker taking over
500,000 records needed over two minutes before its gauges were exact again. A plain
consumer reading large batches, applying each batch in one RocksDB write batch,
moves 100,000+ records/s. Faust's recovery then starts from the offset stored here
and finds little or nothing left; it stays in charge of the end (the records written
meanwhile, the highwater check, the agents' resumption).

What is applied is what Faust's recovery would apply, read the same way: committed
records only (aborted transactions are skipped by ``read_committed``), up to the
last stable offset seen at the start, in offset order, a tombstone deleting its key;
after each batch, the offset of its last record (Faust resumes there, reading that
one record again). A catch-up cut short — a new rebalance began, the broker went
away, it took too long — leaves a store that is consistent up to its offset, and
Faust's recovery goes on from there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from faust.types import TP

from agents.store_guard import bootstrap_of
from agents.store_sync import keeps_offsets, write_committed
from agents.txn_offsets import committed_reader

log = logging.getLogger(__name__)

#: records per getmany; bounds the memory of one batch (~100 B each)
BATCH_RECORDS = 50_000
#: give up (Faust's recovery goes on) when nothing arrives for this long
STALL_S = 30.0


async def catch_up(
    bootstrap: str,
    store: Any,
    tps: Iterable[TP],
    still_current: Callable[[], bool] = lambda: True,
) -> int:
    """Apply the committed records past each partition's persisted offset to ``store``
    (a Faust RocksDB store); the number applied. Stops early, store consistent, when
    ``still_current()`` turns false."""
    from aiokafka import TopicPartition

    wanted = {TopicPartition(tp.topic, tp.partition): tp for tp in tps}
    if not wanted:
        return 0
    started = time.monotonic()
    applied = 0
    async with committed_reader(
        bootstrap, max_partition_fetch_bytes=8 << 20, fetch_max_bytes=32 << 20
    ) as reader:
        reader.assign(list(wanted))
        firsts = await reader.beginning_offsets(list(wanted))
        ends = await reader.end_offsets(list(wanted))  # the last stable offsets
        todo: dict[Any, int] = {}
        for ktp, tp in wanted.items():
            persisted = store.persisted_offset(tp)
            begin = firsts[ktp] if persisted is None else max(firsts[ktp], persisted + 1)
            if begin < ends[ktp]:
                reader.seek(ktp, begin)
                todo[ktp] = ends[ktp]
        if not todo:
            return 0
        last_progress = time.monotonic()
        while todo and still_current():
            batches = await reader.getmany(*todo, timeout_ms=1000, max_records=BATCH_RECORDS)
            for ktp, messages in batches.items():
                applied += _apply(store, wanted[ktp], [m for m in messages if m.offset < todo[ktp]])
                last_progress = time.monotonic()
            for ktp in list(todo):
                if await reader.position(ktp) >= todo[ktp]:
                    del todo[ktp]
            if todo and time.monotonic() - last_progress > STALL_S:
                log.warning(
                    "store catch-up: no records for %.0fs; Faust's recovery goes on", STALL_S
                )
                break
            await asyncio.sleep(0)  # heartbeats, timers: the loop is shared
    took = time.monotonic() - started
    log.info(
        "store catch-up: %d changelog records into the local store in %.1fs (%.0f/s)%s",
        applied,
        took,
        applied / took if took > 0 else 0.0,
        "" if still_current() else "; stopped: a new rebalance began",
    )
    return applied


async def catch_up_table(table: Any, assigned: set[TP], still_current: Callable[[], bool]) -> None:
    """:func:`catch_up` for a table's RocksDB store on its assigned changelog partitions
    (other stores: nothing); any failure is logged and left to Faust's recovery, which
    reads on from whatever offset the store holds."""
    store = table.data
    if not keeps_offsets(store):
        return
    tps = [tp for tp in sorted(assigned) if tp.topic == table.changelog_topic_name]
    try:
        await catch_up(bootstrap_of(table.app), store, tps, still_current)
    except Exception as exc:  # noqa: BLE001 - the slow path still works
        log.warning("store catch-up of %s: %r; Faust's recovery reads on", table.name, exc)


def _apply(store: Any, tp: TP, messages: list[Any]) -> int:
    """One write batch, then the offset of its last record."""
    if messages:
        write_committed(store, tp, ((m.key, m.value) for m in messages), messages[-1].offset)
    return len(messages)
