"""Writes of the users table's changelog: one transaction per partition and batch.

Faust's ``table[key] = value`` sends one changelog record per assignment through
its own producer path — ~100 µs each here, the main reason a naive table agent
runs at ~2,500 events/s. The state stage instead marks keys dirty while it applies
a batch, and writes each dirty key once, in the same (JSON) encoding Faust's
table uses, so Faust's recovery reads these records back unchanged. Like Kafka
Streams' record cache: a key updated many times in one batch costs one record.

Each partition's records go out in a transaction of that partition's fenced
producer (:mod:`agents.producer`), together with the by-user offsets the batch
consumed: the changelog and the stage's input position move together or not at
all, and a worker that no longer owns the partition writes nothing.

The agent does not wait for those transactions (:meth:`ChangelogWriter.stage`): a
transaction is five round trips to the broker, which on a busy event loop took
150–500 ms, and the agent applied nothing meanwhile — batches queued behind it,
and the gauges lagged by seconds (docs/benchmarks.md, "Latency, session 9"). A
task per partition writes what was staged while the agent applies the next
batches, and stages of many batches coalesce into its next transaction. That is
still exact: a transaction reads its keys' records when it starts (under the
partition's producer lock, so in commit order) and commits the offset staged by
then, so every event below a committed offset has its effect in that
transaction or an earlier one; a record newer than the offset only makes events
read again after a crash change nothing (the fold is idempotent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from agents.lag_offsets import OffsetGauges
from agents.outage import Outage
from agents.producer import NotOwner, PartitionProducers
from agents.store_sync import last_batch_offset
from streams.json_bytes import json_record, json_string
from streams.state import WorkerState

log = logging.getLogger(__name__)

#: Staged keys (all partitions) past which the agent waits for the writes: bounds
#: what a crash makes the next owner read again, and the agent's lead while Kafka
#: is slow.
MAX_STAGED_KEYS = 200_000


class ChangelogWriter:
    def __init__(
        self,
        producers: PartitionProducers,
        topic: str,
        state: WorkerState,
        source_topic: str = "",
        group_id: str = "",
        offsets: OffsetGauges | None = None,
    ) -> None:
        self.producers = producers
        self.topic = topic
        self.state = state
        self.source_topic = source_topic
        self.group_id = group_id
        #: told each committed by-user offset (the consumer-lag gauges)
        self.offsets = offsets
        self.records_written = 0
        #: held while a batch is applied to the mirrors and written (see
        #: state_stage.UsersTable.on_rebalance)...
        self.batch_lock = asyncio.Lock()
        #: ...and clear from a rebalance's start until the mirrors are rebuilt: no
        #: batch is applied and nothing expires from a mirror that may be stale
        self.ready = asyncio.Event()
        self.ready.set()
        self.outage = Outage("changelog: cannot write to Kafka", "changelog: writing again")
        #: told (partition, records, offset) after each commit: agents.store_sync
        self.on_committed: Callable[[int, list[tuple[bytes, Any]], int], None] | None = None
        #: applied but not yet in a transaction: keys, and the next by-user offset
        self._staged: dict[int, set[str]] = {}
        self._staged_offsets: dict[int, int] = {}
        #: the task writing each partition's staged keys
        self._flushers: dict[int, asyncio.Task[None]] = {}
        #: what stopped a flusher (raised to the agent: nothing staged is lost)
        self._failed: BaseException | None = None

    @property
    def paused(self) -> bool:
        return not self.ready.is_set()

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """The batch lock, held only while no rebalance is in progress.

        Readiness is checked again once the lock is held: ``ready.wait()`` returns to
        a waiter woken by one recovery's ``set()`` even when the next rebalance has
        cleared it meanwhile, and that rebalance holds the lock while it fences and
        revokes. Applying a batch then — to a mirror that is stale, or rebuilt from a
        store the new recovery has not brought up to date — wrote old records over
        another worker's newer ones (the zombie test's lost updates)."""
        while True:
            await self.ready.wait()
            await self.batch_lock.acquire()
            if self.ready.is_set():
                break
            self.batch_lock.release()
        try:
            yield
        finally:
            self.batch_lock.release()

    def stage(self, dirty: dict[int, set[str]], offsets: dict[int, int]) -> None:
        """Note an applied batch's dirty keys and next by-user offsets; each partition's
        flusher task writes them (with whatever else is staged by then) while the
        caller goes on. Raises what stopped a flusher."""
        self._raise_failed()
        for partition, keys in dirty.items():
            staged = self._staged.get(partition)
            if staged is None:
                self._staged[partition] = set(keys)
            else:
                staged |= keys
        for partition, offset in offsets.items():
            if offset > self._staged_offsets.get(partition, -1):
                self._staged_offsets[partition] = offset
        for partition in {*dirty, *offsets}:
            task = self._flushers.get(partition)
            if task is None or task.done():
                self._flushers[partition] = asyncio.create_task(
                    self._flush(partition), name=f"changelog-flush-{partition}"
                )

    @property
    def staged_keys(self) -> int:
        return sum(len(keys) for keys in self._staged.values())

    async def room(self) -> None:
        """Wait for the writes while too much is staged or Kafka is failing: the
        agent keeps at most :data:`MAX_STAGED_KEYS` unwritten keys ahead."""
        if self.staged_keys > MAX_STAGED_KEYS or self.outage.since is not None:
            await self.drain()

    async def drain(self) -> None:
        """Wait until everything staged is committed (or dropped: a partition no longer
        owned). A rebalance calls it under the batch lock before it revokes anything,
        so no staged write commits after the recovery read the changelog's end."""
        while True:
            running = [task for task in self._flushers.values() if not task.done()]
            if not running:
                break
            await asyncio.wait(running)
        self._raise_failed()

    def _raise_failed(self) -> None:
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed

    async def _flush(self, partition: int) -> None:
        """Write the partition's staged keys and offset, one transaction at a time,
        until nothing is staged. Keys of a transaction that raised go back to the
        stage, so a later transaction cannot commit an offset past their events."""
        while partition in self._staged or partition in self._staged_offsets:
            keys = self._staged.pop(partition, set())
            offset = self._staged_offsets.pop(partition, None)
            try:
                written = await self._write_partition(partition, keys, offset)
            except BaseException as exc:
                self._restage(partition, keys, offset)
                if not isinstance(exc, asyncio.CancelledError):
                    log.error("changelog: partition %d not written: %r", partition, exc)
                    self._failed = exc
                raise
            if not written:  # not ours any more: the owner reads these events again
                self._staged.pop(partition, None)
                self._staged_offsets.pop(partition, None)
                return

    def _restage(self, partition: int, keys: set[str], offset: int | None) -> None:
        if keys:
            self._staged.setdefault(partition, set()).update(keys)
        if offset is not None and offset > self._staged_offsets.get(partition, -1):
            self._staged_offsets[partition] = offset

    async def write(
        self, dirty: dict[int, set[str]], offsets: dict[int, int] | None = None
    ) -> set[int]:
        """Commit the current record (or a tombstone) of every dirty key, and the
        by-user ``offsets`` ({partition: next offset}), one transaction per partition.

        Returns the partitions written. A partition this worker does not hold (its
        mirror was revoked, or its producer was fenced) is skipped whole: its keys
        are neither written nor tombstoned, and its offsets are not committed — the
        owner reads those events again. While Kafka is unreachable it retries (the
        agent waits; a transaction either commits whole or not at all).
        """
        offsets = offsets or {}
        partitions = sorted(set(dirty) | set(offsets))
        done = await asyncio.gather(
            *(self._write_partition(p, dirty.get(p, set()), offsets.get(p)) for p in partitions)
        )
        return {p for p, ok in zip(partitions, done, strict=True) if ok}

    async def _write_partition(self, partition: int, keys: set[str], offset: int | None) -> bool:
        from aiokafka.errors import KafkaError

        while True:
            if partition not in self.state.partitions:
                return False
            try:
                await self._send(partition, keys, offset)
            except NotOwner:
                return False
            except KafkaError as exc:
                self.outage.failed(exc)
                await asyncio.sleep(1.0)
                continue
            self.outage.ok()
            return True

    async def _send(self, partition: int, keys: set[str], offset: int | None) -> None:
        from aiokafka import TopicPartition

        out: list[tuple[bytes, Any]] = []
        async with self.producers.transaction(partition) as txn:
            part = self.state.partitions.get(partition)
            if part is None:  # revoked while waiting for the producer
                raise NotOwner(partition)
            wire = part.records.wire
            for key in keys:
                value = wire(key)
                out.append((json_string(key), None if value is None else json_record(value)))
            if out:
                await txn.send_many(self.topic, partition, out)
            if offset is not None:
                await txn.send_offsets(
                    {TopicPartition(self.source_topic, partition): offset}, self.group_id
                )
        self.records_written += len(out)
        if out and self.on_committed is not None:  # committed: the futures are done
            last = last_batch_offset(f.result() for f in txn.futures)
            if last is not None:
                self.on_committed(partition, out, last)
        if offset is not None and self.offsets is not None:
            self.offsets.committed(self.source_topic, partition, offset)
