"""Transactional producers, one per owned partition: Kafka's zombie fencing.

A worker that lost a partition (paused past its session timeout, or just slow to
notice a rebalance) must not get one more record into that partition's outputs
once the new owner has started. Kafka gives this per *transactional id*: when a
producer with the same id initialises (``InitProducerId``), the broker aborts the
old producer's open transaction and rejects everything it sends afterwards
(``ProducerFenced``). aiokafka has no KIP-447 group-metadata fencing, so the ids
are per input partition — ``{prefix}-{partition}`` — as in Kafka Streams before
KIP-447, and a stage creates the producers of its partitions on every assignment,
*before* it reads any state or offsets for them.

Each batch is one transaction: its output records and the input offsets it
consumed are committed together or not at all, and ``read_committed`` readers
never see an aborted batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from itertools import chain
from typing import Any

from agents.kafka_out import consume_outcomes as _consume
from agents.kafka_out import send_to_partition, start_producer

log = logging.getLogger(__name__)


class _BrokerErrorsInOneLine(logging.Filter):
    """aiokafka's sender logs a broker's error (e.g. ``UnknownError`` for the end of a
    transaction that a rebalance cut short) with a traceback, then raises
    ``KafkaError``, which the caller handles: this module gives the partition up
    until the next assignment (and says so), the ingest stage reads the batch again.
    A handled error is one warning line with the broker's error; anything that is
    not a Kafka error (a bug) keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "Unexpected error in sender routine" or not record.exc_info:
            return True
        from aiokafka.errors import KafkaError

        exc = record.exc_info[1]
        if isinstance(exc, KafkaError):
            record.msg = (
                "kafka: the broker refused a producer's request: %r (handled by its caller)"
            )
            record.args = (exc,)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class _RetriesSummarised(logging.Filter):
    """aiokafka's sender logs a warning for every produce request it retries. Since
    Kafka's transaction verification (KIP-890, on by default from Kafka 4), a
    transaction whose first records reach a partition while the broker is still
    completing the producer's previous transaction gets ``NOT_ENOUGH_REPLICAS`` and
    is retried 100 ms later: routine under load, several a second (387 lines in six
    minutes of the latency benchmark), and the counts are not affected. The first
    retry of each error is logged as it is; after that, one line a minute says how
    many there were of each."""

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.counts: dict[str, int] = {}
        self.seen: set[str] = set()
        self.since = time.monotonic()

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Got error produce response"):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        error = getattr(args[-1], "__name__", str(args[-1])) if args else "?"
        if error not in self.seen:
            self.seen.add(error)
            return True
        self.counts[error] = self.counts.get(error, 0) + 1
        now = time.monotonic()
        if now - self.since < self.interval_s:
            return False
        record.msg = "kafka: produce requests retried in the last %.0f s: %s"
        record.args = (
            now - self.since,
            ", ".join(f"{n} × {name}" for name, n in sorted(self.counts.items())),
        )
        self.counts, self.since = {}, now
        return True


_sender_log = logging.getLogger("aiokafka.producer.sender")
_sender_log.addFilter(_BrokerErrorsInOneLine())
_sender_log.addFilter(_RetriesSummarised())


def _fenced_errors() -> tuple[type[BaseException], ...]:
    from aiokafka.errors import InvalidProducerEpoch, ProducerFenced

    return (ProducerFenced, InvalidProducerEpoch)


_FENCED = _fenced_errors()


def _illegal_operation() -> type[Exception]:
    from aiokafka.errors import IllegalOperation

    return IllegalOperation


def _transaction_failed_base() -> type[Exception]:
    from aiokafka.errors import KafkaError

    return KafkaError


class TransactionFailed(_transaction_failed_base()):  # type: ignore[misc]
    """The transaction could not go on (aborted); retry with the same input.
    ``cause``: the error aiokafka ended it with, if known."""

    cause: BaseException | None = None


def _background_error(producer: Any) -> BaseException | None:
    waiter = producer._txn_manager.wait_for_transaction_end()  # noqa: SLF001
    if waiter is not None and waiter.done() and not waiter.cancelled():
        return waiter.exception()
    return None


class NotOwner(Exception):
    """This worker does not (or no longer) own the partition: nothing was written."""


class Transaction:
    """Sends of one open transaction; the context manager commits them."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.futures: list[Any] = []

    async def send(self, topic: str, value: bytes | None, **kwargs: Any) -> Any:
        """Enqueue one record; returns its delivery future (the commit waits for it)."""
        future = await self.producer.send(topic, value, **kwargs)
        self.futures.append(future)
        return future

    async def send_many(
        self, topic: str, partition: int, records: Sequence[tuple[bytes, bytes | None]]
    ) -> None:
        """(key, value) records to one partition in as few batches as fit (see
        :func:`agents.kafka_out.send_to_partition`); the commit waits for them."""
        self.futures += await send_to_partition(self.producer, topic, partition, records)

    async def partition_count(self, topic: str) -> int:
        return len(await self.producer.partitions_for(topic))

    async def send_offsets(self, offsets: dict[Any, int], group_id: str) -> None:
        """Commit these consumer offsets with the transaction (atomically with its records)."""
        await self.producer.send_offsets_to_transaction(offsets, group_id)


class PartitionProducers:
    """The transactional producers of the partitions one stage of this worker owns.

    A producer is made only when its partition is assigned (:meth:`assign`), never in
    between: its ``InitProducerId`` fences whoever holds the id, and between two
    assignments that may be a worker the group has given the partition to since this
    one was cut off (KIP-447's gap, which aiokafka does not close). A partition whose
    producer is fenced or cannot abort is therefore given up, and ``on_given_up`` asks
    the stage's consumer group to rebalance: the next assignment says who owns it.
    """

    def __init__(
        self, bootstrap: str, prefix: str, on_given_up: Callable[[int], None] | None = None
    ) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        #: called with a partition given up without a rebalance (see the class)
        self.on_given_up = on_given_up
        self._owned: set[int] = set()
        self._producers: dict[int, Any] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def owned(self) -> set[int]:
        return set(self._owned)

    def owns(self, partition: int) -> bool:
        return partition in self._owned

    async def assign(self, partitions: Iterable[int]) -> None:
        """Own these partitions from now on: (re)create their producers and wait until
        the broker has fenced every older producer of the same ids (their open
        transactions are aborted, their later writes refused)."""
        wanted = sorted(set(partitions))
        await self.revoke(wanted)
        started = await asyncio.gather(*(self._start(p) for p in wanted))
        self._producers.update(zip(wanted, started, strict=True))
        self._owned.update(wanted)

    async def revoke(self, partitions: Iterable[int]) -> None:
        """Stop owning these partitions; waits for a transaction in progress on them."""
        for partition in sorted(set(partitions)):
            async with self._lock(partition):
                self._owned.discard(partition)
                producer = self._producers.pop(partition, None)
            if producer is not None:
                await _stop_quietly(producer)

    async def revoke_all(self) -> None:
        await self.revoke(self._owned | set(self._producers))

    @asynccontextmanager
    async def transaction(self, partition: int) -> AsyncIterator[Transaction]:
        """One transaction on the partition's producer; commits when the block ends.

        Raises :class:`NotOwner` when the partition is not owned here or its producer
        was fenced (another worker owns it now; the partition is then given up). Any
        other error aborts the transaction and is raised for the caller to retry.
        """
        async with self._lock(partition):
            if partition not in self._owned:
                raise NotOwner(partition)
            producer = self._producers[partition]
            txn = Transaction(producer)
            try:
                await producer.begin_transaction()
                yield txn
                if txn.futures:
                    await asyncio.gather(*txn.futures)
                await producer.commit_transaction()
            except _FENCED as exc:
                _consume(txn.futures)
                await self._fenced(partition, producer, exc)
            except _illegal_operation() as exc:
                # aiokafka ended the transaction in the background (its sender got an
                # error, most often ProducerFenced); later calls just say "not in a
                # transaction": look for the cause
                _consume(txn.futures)
                cause = _background_error(producer)
                if isinstance(cause, _FENCED):
                    await self._fenced(partition, producer, cause)
                await self._abort(partition, producer)
                failed = TransactionFailed(f"{exc} ({cause!r})")
                failed.cause = cause
                raise failed from exc
            except BaseException:
                _consume(txn.futures)
                await self._abort(partition, producer)
                raise

    async def _fenced(self, partition: int, producer: Any, exc: BaseException) -> None:
        log.warning(
            "%s-%d: fenced, another worker owns the partition now (%s: %s)",
            self.prefix,
            partition,
            type(exc).__name__,
            exc,
        )
        await self._give_up(partition, producer)
        raise NotOwner(partition) from exc

    async def _abort(self, partition: int, producer: Any) -> None:
        """Abort. A producer that is fenced, or cannot abort for another reason (the
        broker is away), gives the partition up until the rebalance it asks for: a new
        producer made now could fence a worker that owns the partition by then."""
        _consume_leftovers(producer)  # abort replaces a transaction waiter that failed
        try:
            await asyncio.wait_for(producer.abort_transaction(), 30)
        except _FENCED as exc:
            await self._fenced(partition, producer, exc)
        except Exception as exc:  # noqa: BLE001 - the open transaction ends with the fence
            log.warning(
                "%s-%d: abort failed (%r); partition given up until the next assignment",
                self.prefix,
                partition,
                exc,
            )
            await self._give_up(partition, producer)

    async def _give_up(self, partition: int, producer: Any) -> None:
        """Stop owning the partition between assignments, and ask for a rebalance."""
        self._owned.discard(partition)
        self._producers.pop(partition, None)
        await _stop_quietly(producer)
        if self.on_given_up is not None:
            self.on_given_up(partition)

    def _lock(self, partition: int) -> asyncio.Lock:
        lock = self._locks.get(partition)
        if lock is None:
            lock = self._locks[partition] = asyncio.Lock()
        return lock

    async def _start(self, partition: int) -> Any:
        producer = await start_producer(
            self.bootstrap,
            transactional_id=f"{self.prefix}-{partition}",
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_batch_size=1024 * 1024,
            max_request_size=4 * 1024 * 1024,
        )
        try:
            # InitProducerId: fences older producers of this id (aiokafka runs it in
            # the background; the fence must be in place before we read any state)
            await asyncio.shield(producer._txn_manager.wait_for_pid())  # noqa: SLF001
        except BaseException:
            await _stop_quietly(producer)
            raise
        return producer


def _consume_leftovers(producer: Any) -> None:
    """Retrieve the outcome of the futures aiokafka itself fails when its sender dies
    (ProducerFenced in AddPartitionsToTxn or AddOffsetsToTxn, say): the transaction's
    end waiter, and the delivery and drain futures of every batch still queued — ours
    and any handed over before a send raised. Once the transaction is given up nobody
    awaits them, and asyncio would log each one as "Future exception was never
    retrieved" with a traceback: error lines for a zombie's normal end.

    The same for the sender's produce-request tasks still running: one that was
    backing off to retry a batch (Kafka's transaction verification answers
    ``NOT_ENOUGH_REPLICAS`` under load) while the fence failed every batch re-queues
    a batch no longer pending, and dies of a ``KeyError`` nobody retrieves
    (aiokafka 0.14, ``MessageAccumulator.reenqueue``)."""
    futures = [producer._txn_manager.wait_for_transaction_end()]  # noqa: SLF001
    accumulator = producer._message_accumulator  # noqa: SLF001
    by_partition = accumulator._batches.values()  # noqa: SLF001
    queued = [*chain.from_iterable(by_partition), *accumulator._pending_batches]  # noqa: SLF001
    futures += [f for batch in queued for f in (batch.future, batch._drain_waiter)]  # noqa: SLF001
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        futures += _tasks_of(sender, type(sender)._send_produce_req)  # noqa: SLF001
    _consume([f for f in futures if f is not None])


def _tasks_of(owner: Any, method: Callable[..., Any]) -> list[asyncio.Task[Any]]:
    """The running tasks of ``owner.method(...)``. Only those frames' locals are read
    (reading a frame's locals keeps a copy of them until the frame moves on)."""
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:  # no running loop: nothing of ours can be running
        return []
    code = method.__code__
    out = []
    for task in tasks:
        frame = getattr(task.get_coro(), "cr_frame", None)
        if frame is not None and frame.f_code is code and frame.f_locals.get("self") is owner:
            out.append(task)
    return out


async def _stop_quietly(producer: Any) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 10)
    except Exception as exc:  # noqa: BLE001 - a fenced or broken producer may not stop cleanly
        log.debug("producer stop: %r", exc)
    finally:
        _consume_leftovers(producer)
