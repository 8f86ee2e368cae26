"""PartitionProducers makes a partition's producer only when it is assigned.

A producer that cannot abort (the broker away) used to be replaced by a new one with
the same transactional id at the next transaction; its ``InitProducerId`` fenced
whoever held the id then — also a worker the group had given the partition to in the
meantime, whose writes this worker's stale mirror then overwrote (the known gap of
docs/architecture.md). Now the partition is given up and a rebalance requested; only
the next assignment makes its producer again. Fake producers: no broker.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, ProducerFenced

from agents.kafka_out import consume_outcomes
from agents.producer import NotOwner, PartitionProducers


class _Txn:
    def wait_for_transaction_end(self) -> None:
        return None


class _Accumulator:
    _batches: dict[Any, Any] = {}
    _pending_batches: list[Any] = []


class FakeProducer:
    def __init__(self, abort_error: BaseException | None) -> None:
        self.abort_error = abort_error
        self.stopped = False
        self._txn_manager = _Txn()
        self._message_accumulator = _Accumulator()

    async def begin_transaction(self) -> None:
        pass

    async def commit_transaction(self) -> None:
        pass

    async def abort_transaction(self) -> None:
        if self.abort_error is not None:
            raise self.abort_error

    async def stop(self) -> None:
        self.stopped = True


def producers(abort_error: BaseException | None) -> tuple[PartitionProducers, list[Any], list[int]]:
    made: list[FakeProducer] = []
    given_up: list[int] = []
    pp = PartitionProducers("127.0.0.1:1", "t", on_given_up=given_up.append)

    async def start(partition: int) -> FakeProducer:
        made.append(FakeProducer(abort_error))
        return made[-1]

    pp._start = start  # type: ignore[method-assign]
    return pp, made, given_up


@pytest.mark.parametrize(
    "abort_error", [KafkaConnectionError("broker away"), ProducerFenced("newer epoch")]
)
async def test_a_producer_that_cannot_abort_gives_the_partition_up_until_assigned(
    abort_error: BaseException,
) -> None:
    pp, made, given_up = producers(abort_error)
    await pp.assign([0, 1])
    assert len(made) == 2

    with pytest.raises((KafkaConnectionError, NotOwner)):
        async with pp.transaction(0):
            raise KafkaConnectionError("send failed")
    assert not pp.owns(0) and pp.owns(1)
    assert given_up == [0]  # the stage is asked to rebalance
    assert made[0].stopped

    # no producer of the same id between assignments: it would fence a newer owner
    with pytest.raises(NotOwner):
        async with pp.transaction(0):
            pass
    assert len(made) == 2

    await pp.assign([0, 1])  # the rebalance says this worker owns it again
    assert pp.owns(0) and len(made) == 4
    async with pp.transaction(0):
        pass


async def test_an_abort_that_succeeds_keeps_the_partition() -> None:
    pp, made, given_up = producers(None)
    await pp.assign([0])
    with pytest.raises(KafkaConnectionError):
        async with pp.transaction(0):
            raise KafkaConnectionError("send failed")
    assert pp.owns(0) and given_up == [] and len(made) == 1
    async with pp.transaction(0):
        pass


def test_a_broker_error_in_the_sender_is_one_line_and_a_bug_keeps_its_traceback() -> None:
    """What aiokafka's sender logs before raising KafkaError to a caller that handles
    it (a transaction's end cut short by a rebalance): one warning line, no traceback.
    Anything else stays an error with its traceback. (Its own handler: other tests
    configure logging, e.g. Faust's app, so the root's capture is not reliable.)"""
    import logging

    from aiokafka.errors import UnknownError

    import agents.producer  # noqa: F401 - installs the filter

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    sender = logging.getLogger("aiokafka.producer.sender")
    keep, level, disabled = Keep(), sender.level, sender.disabled
    switched_off = logging.root.manager.disable
    logging.disable(logging.NOTSET)
    sender.addHandler(keep)
    sender.setLevel(logging.DEBUG)
    sender.disabled = False
    try:
        for exc in (UnknownError(), ValueError("a bug")):
            try:
                raise exc
            except Exception:
                sender.exception("Unexpected error in sender routine")
    finally:
        sender.removeHandler(keep)
        sender.setLevel(level)
        sender.disabled = disabled
        logging.disable(switched_off)
    broker, bug = keep.records
    assert broker.levelname == "WARNING" and broker.exc_info is None
    assert "UnknownError" in broker.getMessage() and "handled" in broker.getMessage()
    assert bug.levelname == "ERROR" and bug.exc_info is not None
    assert "Traceback" not in logging.Formatter().format(broker)
    assert "Traceback" in logging.Formatter().format(bug)


def test_produce_retries_are_summarised_once_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiokafka warns for every retried produce request; KIP-890's NOT_ENOUGH_REPLICAS
    retries are routine under load. The first of each error goes through, then one
    line per interval with the counts."""
    import logging

    from aiokafka.errors import NotEnoughReplicasError, RequestTimedOutError

    import agents.producer as producer

    clock = [1000.0]
    monkeypatch.setattr(producer.time, "monotonic", lambda: clock[0])
    summary = producer._RetriesSummarised(interval_s=60)

    def retried(error: type) -> logging.LogRecord:
        return logging.LogRecord(
            "aiokafka.producer.sender",
            logging.WARNING,
            __file__,
            1,
            "Got error produce response on topic-partition %s, retrying. Error: %s",
            ("TopicPartition(topic='t', partition=0)", error),
            None,
        )

    other = logging.LogRecord("aiokafka.producer.sender", logging.WARNING, "", 1, "x", (), None)
    assert summary.filter(other)
    assert summary.filter(retried(NotEnoughReplicasError))  # the first one, as it is
    shown = []
    for k in range(200):
        clock[0] += 0.5
        record = retried(RequestTimedOutError if k % 50 == 0 else NotEnoughReplicasError)
        if summary.filter(record):
            shown.append(record.getMessage())
    # the first timeout as it is, then one line a minute (at 60 s and 120 s of the 100 s
    # that passed: one) with the counts since the last line
    assert shown[0].startswith("Got error produce response") and "RequestTimedOut" in shown[0]
    assert shown[1:] == [
        "kafka: produce requests retried in the last 60 s: 117 × NotEnoughReplicasError, "
        "2 × RequestTimedOutError"
    ]


async def test_a_dying_sender_task_of_a_given_up_producer_is_retrieved() -> None:
    """aiokafka's produce-request task that re-queues a batch the fence already failed
    dies of a KeyError after its backoff; the leftovers of a given-up producer include
    it, so asyncio reports nothing."""
    import asyncio
    import gc

    from agents.producer import _tasks_of

    class Sender:
        async def send_produce_req(self) -> None:
            await asyncio.sleep(0.01)  # the retry backoff
            raise KeyError("batch")

    seen: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, c: seen.append(c))
    sender, other = Sender(), Sender()
    ours = asyncio.ensure_future(sender.send_produce_req())
    theirs = asyncio.ensure_future(other.send_produce_req())
    await asyncio.sleep(0)
    found = _tasks_of(sender, Sender.send_produce_req)
    assert found == [ours]
    consume_outcomes(found)
    await asyncio.sleep(0.05)
    del ours, found
    gc.collect()
    assert seen == []
    with pytest.raises(KeyError):
        await theirs  # (not ours: left to its owner)
