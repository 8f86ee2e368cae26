"""BatchWriter's partitioning, without a broker (delivery: tests/integration/test_kafka_out.py)."""

from __future__ import annotations

import pytest

from agents.kafka_out import BatchWriter, murmur2_partition

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
