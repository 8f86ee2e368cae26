"""The batch core and BatchWriter's partitioning, without a broker.

Delivery on a real broker: tests/integration/test_kafka_out.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from agents import kafka_out
from agents.kafka_out import Batches, BatchWriter, murmur2_partition, send_to_partition

#: Kafka's own test vectors for its murmur2 (clients/.../utils/UtilsTest.java), as
#: signed 32-bit results of the Java function.
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("partitions", [1, 3, 4, 12])
def test_keys_go_where_the_java_client_puts_them(partitions: int) -> None:
    for key, java in JAVA_MURMUR2.items():
        # Java: Utils.toPositive(murmur2(key)) % numPartitions
        assert murmur2_partition(key, partitions) == (java & 0x7FFFFFFF) % partitions, key


def test_partition_for_keyed_is_stable_and_unkeyed_is_sticky() -> None:
    writer = BatchWriter("127.0.0.1:9", "t")
    writer._partitions["t"] = [0, 1, 2]
    writer._sticky["t"] = 0
    assert writer.partition_for("t", b"foobar") == (-790332482 & 0x7FFFFFFF) % 3
    assert writer.partition_for("t", b"foobar") == writer.partition_for("t", b"foobar")
    # unkeyed: the same partition until a batch closes, then the next one
    assert [writer.partition_for("t", None) for _ in range(3)] == [0, 0, 0]
    writer._sticky["t"] += 1
    assert writer.partition_for("t", None) == 1
    writer._sticky["t"] += 2
    assert writer.partition_for("t", None) == 0


class RecordingProducer:
    """aiokafka's real batch builders (no broker); ``send_batch`` records what each
    batch holds, or refuses the batches numbered in ``refuse``."""

    def __init__(self, batch_bytes: int, refuse: tuple[int, ...] = ()) -> None:
        from aiokafka import AIOKafkaProducer

        self.client = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", max_batch_size=batch_bytes)
        self.refuse = refuse
        self.offered = 0
        self.batches: list[tuple[str, int, list[tuple[bytes | None, bytes | None]]]] = []

    def create_batch(self) -> Any:
        return self.client.create_batch()

    async def send_batch(self, builder: Any, topic: str, partition: int) -> Any:
        from aiokafka.errors import KafkaTimeoutError
        from aiokafka.record.memory_records import MemoryRecords

        self.offered += 1
        if self.offered in self.refuse:
            raise KafkaTimeoutError("accumulator full")
        builder.close()
        batch = MemoryRecords(bytes(builder._build())).next_batch()
        self.batches.append((topic, partition, [(r.key, r.value) for r in batch]))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_send_to_partition_fills_batches_in_order() -> None:
    producer = RecordingProducer(batch_bytes=300)
    records = [(b"key-%03d" % i, None if i % 7 == 0 else b"x" * 40) for i in range(40)]
    futures = await send_to_partition(producer, "changelog", 2, records)
    await producer.client.stop()
    # 40 records of ~50 bytes do not fit in one 300-byte batch: several, each handed
    # over once, all to partition 2, the records in order, tombstones kept
    assert len(producer.batches) == len(futures) > 1
    assert {(t, p) for t, p, _ in producer.batches} == {("changelog", 2)}
    assert [r for _, _, batch in producer.batches for r in batch] == records


async def test_a_refused_batch_is_reported_and_the_others_still_go() -> None:
    producer = RecordingProducer(batch_bytes=1024 * 1024, refuse=(2,))
    batches = Batches(producer)
    for partition in range(3):
        for i in range(partition + 1):
            assert batches.append(("t", partition), b"v%d" % i)
    assert batches.close_all() == [("t", 0), ("t", 1), ("t", 2)]
    refused: list[tuple[int, str]] = []
    handed = await batches.hand_over(lambda n, exc: refused.append((n, type(exc).__name__)))
    await producer.client.stop()
    assert refused == [(2, "KafkaTimeoutError")]  # partition 1's two records
    assert [(h.topic, h.records) for h in handed] == [("t", 1), ("t", 3)]
    assert [(p, len(batch)) for _, p, batch in producer.batches] == [(0, 1), (2, 3)]
    assert batches.full == [] and batches.open == {}


async def test_without_a_report_a_refused_batch_raises() -> None:
    from aiokafka.errors import KafkaTimeoutError

    producer = RecordingProducer(batch_bytes=1024 * 1024, refuse=(1,))
    try:
        with pytest.raises(KafkaTimeoutError):
            await send_to_partition(producer, "changelog", 0, [(b"k", b"v")])
    finally:
        await producer.client.stop()


class SilentBroker(RecordingProducer):
    """Answers the first ``answered`` batches, then never again (a broker gone), and
    its ``stop`` waits for the unanswered ones as aiokafka's does."""

    def __init__(self, batch_bytes: int, answered: int) -> None:
        super().__init__(batch_bytes)
        self.answered = answered

    async def send_batch(self, builder: Any, topic: str, partition: int) -> Any:
        done = await super().send_batch(builder, topic, partition)
        return done if self.offered <= self.answered else asyncio.get_running_loop().create_future()

    async def stop(self) -> None:
        await asyncio.sleep(3600)


async def test_a_stop_gives_up_on_a_silent_broker_and_counts_what_it_never_confirmed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka_out, "ABANDONED_STOP_S", 0.1)
    producer = SilentBroker(batch_bytes=300, answered=2)
    writer = BatchWriter("127.0.0.1:9", "t", create_partitions=None)
    writer._producer, writer._batches = producer, Batches(producer)
    writer._partitions, writer._sticky = {"t": [0]}, {"t": 0}
    for _ in range(40):
        if writer.append(b"x" * 40, b"k"):
            await writer.drain()
    started = time.monotonic()
    await writer.settle(0.2)
    await writer.stop()
    took = time.monotonic() - started
    await producer.client.stop()
    answered = sum(len(records) for _t, _p, records in producer.batches[:2])
    assert 0 < answered < 40 and len(producer.batches) > 2  # some batches went unanswered
    assert (writer.sent, writer.failed, writer.unconfirmed) == (answered, 0, 40 - answered)
    assert took < 1.0  # 0.2 s of waiting for answers, 0.1 s for the producer's stop
