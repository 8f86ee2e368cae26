"""Stage 2: the Faust agent that applies by-user batches to the users table.

The changelog-backed Faust table ``users`` is the truth (per platform, community
and user: first seen, last active, follow state). The agent keeps a live mirror
of the partitions it holds in :class:`streams.state.WorkerState`, with the derived
window indexes, and writes changed records straight to the changelog (see
:mod:`agents.changelog`). Faust's recovery replays that changelog into the table's
store at every rebalance; a partition this worker did not hold before is then
rebuilt from the store. Partitions held across a rebalance keep their live mirror,
which is at least as new as the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

import faust
import orjson
from faust.types import TP

from agents.changelog import ChangelogWriter
from agents.ingest import decode_batch
from agents.store_catchup import catch_up_table
from agents.store_sync import keeps_offsets
from streams.state import SEP, PartitionState, WorkerState
from streams.topics import partition_for_user

log = logging.getLogger(__name__)


class UsersTable(faust.Table):
    """A Faust table that tells the worker state when partitions come and go, and
    fences the previous owners of its partitions before their recovery starts."""

    worker_state: WorkerState
    partitions_total: int
    source_topics: frozenset[str]
    writer: ChangelogWriter
    #: (generation, assigned) of the last rebalance, until its store catch-up ran
    catch_up_due: tuple[int, set[TP]] | None = None

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        # No batch from here until the mirrors are rebuilt (on_recovery_completed),
        # and the batches applied so far finish their writes first: a write committed after
        # recovery took its highwaters would be in the offsets but not in the store
        # the mirrors are rebuilt from — its state change lost on this worker.
        self.writer.ready.clear()
        async with self.writer.batch_lock:
            await self.writer.drain()  # staged writes commit (or are dropped) first
            for tp in revoked:
                if tp.topic in self.source_topics and tp.partition in self.worker_state.partitions:
                    self.worker_state.revoke(tp.partition)
                    log.info("state: partition %d revoked", tp.partition)
            mine = {tp.partition for tp in assigned if tp.topic in self.source_topics}
            producers = self.writer.producers
            await producers.revoke(producers.owned() - mine)
            # every rebalance, also for partitions held before: a worker that was out of
            # the group (paused) may get a partition back that another worker wrote to
            await producers.assign(mine)
        # after the fencing: no earlier owner commits more, so the catch-up reads to the
        # end. It runs at the start of the recovery (catch_up_store), not here: aiokafka
        # sends no heartbeat while this callback runs, and a catch-up of 500,000 records
        # (9 s on a busy machine) got the worker expelled from the group (10 s session),
        # which rebalanced again and threw away the rebuild that had begun
        self.catch_up_due = (generation_id, set(assigned))
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    async def catch_up_store(self, budget_s: float) -> None:
        """The store catch-up of the last rebalance (:mod:`agents.store_catchup`),
        called by the recovery (agents.faust_txn.CommittedRecovery) before it reads the
        store's offsets, so that it finds nothing left. A generation no longer current
        skips it (its recovery is abandoned; the next rebalance plans its own). After
        ``budget_s`` it stops, the store consistent, and Faust's recovery reads on from
        there: Faust gives that recovery step a time limit past which the whole
        recovery stops."""
        due, self.catch_up_due = self.catch_up_due, None
        if due is None:
            return
        generation_id, assigned = due
        deadline = time.monotonic() + budget_s

        def still_current() -> bool:
            return generation_id == self.app.consumer_generation_id and time.monotonic() < deadline

        if still_current():
            await catch_up_table(self, assigned, still_current)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        """Rebuild every held partition from the store, which recovery has just brought
        up to the changelog's last committed record: a mirror kept across the
        rebalance could miss what another owner wrote while this worker was out."""
        await super().on_recovery_completed(active_tps, standby_tps)
        recovery = getattr(self.app.tables, "recovery", None)
        completing = getattr(recovery, "completing_generation", None)
        if completing is not None and completing != self.app.consumer_generation_id:
            log.info("state: recovery of generation %s is stale; waiting for the next", completing)
            return  # still paused: the current generation's recovery rebuilds
        changelog = self.changelog_topic_name
        active = {tp.partition for tp in active_tps if tp.topic == changelog}
        for partition in sorted(set(self.worker_state.partitions) - active):
            self.worker_state.revoke(partition)
        if active:
            generation = self.app.consumer_generation_id
            rebuilt = await rebuild_stepwise(
                self.worker_state,
                active,
                store_items(self.data, active),
                self.partitions_total,
                lambda: self.app.consumer_generation_id == generation,
            )
            if not rebuilt:
                log.info("state: a rebalance began during the rebuild; its recovery rebuilds")
                return  # still paused: the next generation's recovery sets ready
        self.writer.ready.set()

    def on_store_discarded(self, partitions: set[int]) -> None:
        """The store check (agents/store_guard) wiped these partitions' stores: drop
        their mirrors too, so recovery rebuilds them from the changelog."""
        for partition in partitions & set(self.worker_state.partitions):
            self.worker_state.revoke(partition)

    def ensure_partition(self, partition: int) -> PartitionState | None:
        """The partition's mirror; None if this worker does not own the partition."""
        if not self.writer.producers.owns(partition):
            return None
        part = self.worker_state.partitions.get(partition)
        if part is None:  # a batch arrived before recovery told us; build it now
            rebuild(self.worker_state, {partition}, self.data.items(), self.partitions_total)
            part = self.worker_state.partitions[partition]
        return part


def store_items(store: Any, partitions: set[int]) -> Iterable[tuple[Any, Any]]:
    """The (key, wire value) items of these partitions of a table store. A RocksDB store
    is read raw, partition by partition, and decoded with orjson: Faust's own
    ``items()`` (its serializer registry per item) made the rebuild cost ~30 µs per
    record — 32 s for the 1M records of recovery_bench's survivor."""
    if not keeps_offsets(store):
        return store.items()  # type: ignore[no-any-return]
    return _raw_items(store, partitions)


def _raw_items(store: Any, partitions: set[int]) -> Iterator[tuple[Any, Any]]:
    loads, skip = orjson.loads, store.offset_key
    for partition in sorted(partitions):
        for key, value in store._db_for_partition(partition).items():  # noqa: SLF001
            if key != skip:
                yield loads(key), None if value is None else loads(value)


#: records read between two yields to the event loop in :func:`rebuild_stepwise`
REBUILD_STEP = 20_000


async def rebuild_stepwise(
    state: WorkerState,
    partitions: set[int],
    items: Iterable[tuple[Any, Any]],
    partitions_total: int,
    still_current: Callable[[], bool],
    step: int = REBUILD_STEP,
) -> bool:
    """:func:`rebuild`, yielding to the event loop every ``step`` records loaded and
    again between steps of indexing them (:meth:`PartitionState.flush_steps`); the new
    mirrors replace the held ones only once all are complete, and only if
    ``still_current()`` (else nothing changed: False).

    In one piece, the rebuild and first flush of 500,000 records held the event loop
    for 15 s and 12 s (recovery_bench at 1M records): /metrics went unanswered, and the
    ingest group expelled the worker (10 s session), which rebalanced and rebuilt
    again. Meanwhile the scrapes show the mirrors held before (no batch changes them:
    the stage waits for ``ready``), and none of a partition still being built."""
    parts = {p: PartitionState(state.active_types) for p in partitions}
    loaded = 0
    try:
        for chunk in _chunks(items, step):
            loaded += _load_chunk(parts, chunk, partitions_total)
            await asyncio.sleep(0)
            if not still_current():
                return False
        # indexed once everything is loaded, group by group: one sort per list
        for part in parts.values():
            for _ in part.flush_steps(step):
                await asyncio.sleep(0)
                if not still_current():
                    return False
    except Exception:
        if not still_current():  # the next rebalance closed or discarded the store
            return False
        raise
    for part in parts.values():
        part.flush()
    if not still_current():
        return False
    state.partitions.update(parts)
    log.info("state: rebuilt partitions %s from the table (%d records)", sorted(parts), loaded)
    return True


def rebuild(
    state: WorkerState,
    partitions: set[int],
    items: Iterable[tuple[Any, Any]],
    partitions_total: int,
) -> None:
    """Rebuild the mirrors of ``partitions`` from the table's (recovered) store."""
    parts = {p: state.assign(p) for p in partitions}
    loaded = sum(_load_chunk(parts, chunk, partitions_total) for chunk in _chunks(items))
    log.info("state: rebuilt partitions %s from the table (%d records)", sorted(parts), loaded)


def _chunks(items: Iterable[Any], size: int = REBUILD_STEP) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _load_chunk(
    parts: dict[int, PartitionState], items: list[tuple[Any, Any]], partitions_total: int
) -> int:
    """Load table items into the mirrors of their partitions among ``parts`` (others and
    tombstones load nothing); how many were loaded."""
    by_part: dict[int, list[tuple[Any, Any]]] = {}
    for key, value in items:
        if value is not None:
            p = partition_for_user(key.rpartition(SEP)[2], partitions_total)
            if p in parts:
                by_part.setdefault(p, []).append((key, value))
    return sum(parts[p].load_wire(part_items) for p, part_items in by_part.items())


BatchObserver = Callable[[int, list[list[Any]]], None]


def make_apply_agent(
    app: faust.App,
    topic: Any,
    table: UsersTable,
    writer: ChangelogWriter,
    observers: list[BatchObserver] | None = None,
    before: BatchObserver | None = None,
) -> Any:
    """The agent; each ``observer(partition, events)`` also sees every decoded batch
    (e.g. the Redis read model's top-users tally) — kept off the state's own path;
    ``before`` sees each batch before it is applied (the late-event tally, which
    compares with the event clock as it stood)."""
    watchers = observers if observers is not None else []

    @app.agent(topic, name="apply-events")
    async def apply_events(stream: Any) -> None:
        async for batch in stream.take_events(64, within=0.05):
            async with writer.batch():  # not while a rebalance rebuilds the mirrors
                dirty, offsets = apply_batch(table, batch, watchers, before)
                writer.stage(dirty, offsets)  # written while the next batches apply
            await writer.room()

    return apply_events


def apply_batch(
    table: UsersTable,
    batch: list[Any],
    watchers: list[BatchObserver],
    before: BatchObserver | None,
) -> tuple[dict[int, set[str]], dict[int, int]]:
    """Apply a batch of by-user messages to the mirrors of the partitions held here:
    the keys each partition changed, and each partition's next by-user offset."""
    dirty: dict[int, set[str]] = {}
    offsets: dict[int, int] = {}
    for event in batch:
        partition = event.message.partition  # by-user partition = user partition
        part = table.ensure_partition(partition)
        if part is None:
            continue  # not ours (any more): the owner applies it
        offsets[partition] = event.message.offset + 1
        keys = dirty.setdefault(partition, set())
        try:
            _, events = decode_batch(event.value)
            if before is not None:
                before(partition, events)
            apply = part.apply
            for ts_ms, platform, community, user_id, event_type in events:
                if not (
                    type(ts_ms) is int
                    and type(platform) is type(community) is type(user_id) is str
                    and type(event_type) is str
                ):
                    raise TypeError("a by-user event of the wrong shape")
                key = apply(platform, community, user_id, ts_ms, event_type)
                if key is not None:
                    keys.add(key)
        except Exception as exc:  # noqa: BLE001 - no message may stop the worker
            _skipped(event.message, exc)
            continue
        for observe in watchers:
            observe(partition, events)
    return dirty, offsets


def _skipped(message: Any, exc: Exception) -> None:
    """A by-user message this worker's ingest stage can't have written (the topic is
    internal, but anything with the rights may write to it): skipped with a warning —
    what of it was applied stays, and is written with the batch — rather than stop
    the agent on it at every restart."""
    log.warning(
        "state: skipped a malformed by-user message at %s[%d]@%d (%s)",
        message.topic,
        message.partition,
        message.offset,
        type(exc).__name__,
    )


async def expire(state: WorkerState, writer: ChangelogWriter, now_ms: int, horizon_ms: int) -> int:
    """Delete records no window can count any more; tombstone them in the changelog.

    Not while a rebalance is in progress: a mirror kept across it may be stale
    until it is rebuilt, and its "expired" record may be newer in the changelog."""
    async with writer.batch_lock:  # like a batch: a rebalance waits for its write
        if writer.paused:
            return 0
        dirty: dict[int, set[str]] = {}
        for partition, part in list(state.partitions.items()):
            if not writer.producers.owns(partition):
                continue
            keys = await _expired_keys(part, now_ms, horizon_ms)
            for key in keys:
                part.delete(key)
            if keys:
                dirty[partition] = set(keys)
        await writer.write(dirty)
    return sum(len(keys) for keys in dirty.values())


#: Records scanned between two turns of the event loop when looking for expired ones.
EXPIRY_STEP = 20_000


async def _expired_keys(part: PartitionState, now_ms: int, horizon_ms: int) -> list[str]:
    """:meth:`PartitionState.expired_keys`, the event loop served every
    :data:`EXPIRY_STEP` records; the caller holds the batch lock, so no batch changes
    the records meanwhile."""
    steps = part.expired_key_steps(now_ms, horizon_ms, EXPIRY_STEP)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return list(done.value)
        await asyncio.sleep(0)


async def flush_indexes(state: WorkerState) -> None:
    """Bring every partition's window indexes up to date, one partition at a time with
    the event loop served between: the flush is half of a scrape's and of a
    read-model tick's work, and in one piece it held the loop for up to ~380 ms under
    load, every transaction's round trips waiting meanwhile (the gauges' latency,
    session 9). What is applied in between is flushed by the count that follows."""
    for part in list(state.partitions.values()):
        part.flush()
        await asyncio.sleep(0)
