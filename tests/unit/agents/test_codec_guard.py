"""Every codec's decompression is bounded inside aiokafka's own (C) batch readers."""

from __future__ import annotations

import gzip
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cramjam
import pytest
from aiokafka.record import default_records, legacy_records
from aiokafka.record.memory_records import MemoryRecords

from agents import codec_guard
from agents.codec_guard import DecompressionBomb, bounded_gzip, refusal

REPO = Path(__file__).resolve().parents[3]
#: aiokafka's codec ids; "snappy-raw" is snappy without the xerial framing (librdkafka's)
CODEC_IDS = {"gzip": 1, "snappy": 2, "snappy-raw": 2, "lz4": 3, "zstd": 4}
NAMES = ("gzip_decode", "snappy_decode", "lz4_decode", "zstd_decode", "snappy_encode")


def _record_modules() -> list[Any]:
    try:
        from aiokafka.record._crecords import default_records as c_default
        from aiokafka.record._crecords import legacy_records as c_legacy
    except ImportError:  # the pure-Python build
        return [default_records, legacy_records]
    return [default_records, legacy_records, c_default, c_legacy]


@pytest.fixture(autouse=True)
def restore_decoders(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """install() replaces module globals of aiokafka: put them back after each test."""
    for module in _record_modules():
        for name in NAMES:
            if hasattr(module, name):
                monkeypatch.setattr(module, name, getattr(module, name))
    yield


def _raw_snappy(data: Any) -> bytes:
    return bytes(cramjam.snappy.compress_raw(bytes(data)))


def batch(codec: str, value: bytes, monkeypatch: pytest.MonkeyPatch, magic: int = 2) -> bytes:
    """One record batch as a producer sends it, compressed with ``codec``."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder
    from aiokafka.record.legacy_records import LegacyRecordBatchBuilder

    if codec == "snappy-raw":
        for module in _record_modules():
            monkeypatch.setattr(module, "snappy_encode", _raw_snappy, raising=False)
    if magic == 2:
        builder: Any = DefaultRecordBatchBuilder(
            2, CODEC_IDS[codec], False, -1, -1, -1, 64 * 1024 * 1024
        )
        builder.append(0, timestamp=None, key=None, value=value, headers=[])
    else:
        builder = LegacyRecordBatchBuilder(magic, CODEC_IDS[codec], 64 * 1024 * 1024)
        builder.append(0, timestamp=None, key=None, value=value)
    return bytes(builder.build())


def read(raw: bytes) -> int:
    """Bytes of the values aiokafka reads from ``raw`` (what the consumer does)."""
    records = MemoryRecords(raw)
    total = 0
    while (found := records.next_batch()) is not None:
        total += sum(len(r.value) for r in found)
    return total


@pytest.mark.parametrize("magic", [2, 1])
@pytest.mark.parametrize("codec", list(CODEC_IDS))
def test_a_bomb_is_refused_by_aiokafkas_own_batch_reader(
    codec: str, magic: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: only gzip was bounded; 3 MB of zeros is ~150 KB of snappy, ~12 KB
    of lz4, ~100 bytes of zstd, and aiokafka decompressed it whole. With the guard, a
    batch beyond the limit raises DecompressionBomb in aiokafka's reader, and one
    within it reads as before."""
    if magic == 1 and codec == "zstd":
        pytest.skip("the message format v1 has no zstd")
    raw = batch(codec, b"0" * 3_000_000, monkeypatch, magic)
    assert len(raw) < 200_000
    assert read(raw) == 3_000_000
    codec_guard.install(1024 * 1024)
    with pytest.raises(DecompressionBomb, match=codec.split("-")[0]):
        read(raw)
    codec_guard.install(4 * 1024 * 1024)
    assert read(raw) == 3_000_000


def test_a_batch_of_each_codec_just_within_the_limit_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The header bounds are tight: a batch at the limit (not a byte more) passes."""
    codec_guard.install(1024 * 1024)
    for codec in CODEC_IDS:
        value = bytes(range(256)) * 4000  # ~1 MB with the batch's framing
        assert read(batch(codec, value, monkeypatch)) == len(value)


LYING_SNAPPY = textwrap.dedent(
    """
    import resource, sys
    import cramjam
    from aiokafka.record import default_records as py_default
    from aiokafka.record._crecords import default_records
    from aiokafka.record.memory_records import MemoryRecords
    from agents import codec_guard

    # 5 bytes of raw snappy declaring 4 GB: cramjam allocates that at once
    lie = bytes([0x80, 0xD0, 0xAC, 0xF3, 0x0E]) + b"\\x08abc"
    for module in (py_default, default_records):
        module.snappy_encode = lambda data: lie
    builder = default_records.DefaultRecordBatchBuilder(2, 2, False, -1, -1, -1, 1 << 20)
    builder.append(0, timestamp=None, key=None, value=b"abc", headers=[])
    raw = bytes(builder.build())
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # a worker's memory limit
    if sys.argv[1] == "guarded":
        codec_guard.install(64 << 20)
    try:
        list(MemoryRecords(raw).next_batch())
    except Exception as exc:
        print(type(exc).__name__, exc)
    """
)


def test_a_lying_snappy_length_is_refused_before_anything_is_allocated() -> None:
    """Regression: raw snappy whose length preamble claims 4 GB made the worker
    process abort (a failed allocation in cramjam is no exception): no handler
    could catch it, and the worker died at every restart."""

    def run(mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", LYING_SNAPPY, mode],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
            timeout=60,
        )

    unguarded = run("unguarded")
    assert unguarded.returncode == -6, unguarded  # SIGABRT: the regression is real
    assert "memory allocation of 4000000000 bytes failed" in unguarded.stderr
    guarded = run("guarded")
    assert guarded.returncode == 0, guarded.stderr
    assert guarded.stdout.startswith("DecompressionBomb a snappy batch of"), guarded.stdout


def test_bounded_gzip_counts_every_member() -> None:
    two = gzip.compress(b"a" * 600) + gzip.compress(b"b" * 400)
    assert bounded_gzip(1000)(two) == b"a" * 600 + b"b" * 400
    with pytest.raises(DecompressionBomb):
        bounded_gzip(999)(two)


def test_a_bomb_is_too_large_and_anything_else_unreadable_an_internal_error() -> None:
    bomb = refusal(DecompressionBomb("a zstd batch of 90 bytes would expand beyond 1 bytes"))
    assert (bomb.reason, bomb.exception) == ("too_large", "DecompressionBomb")
    assert bomb.detail.startswith("a zstd batch")
    corrupt = refusal(cramjam.DecompressionError("lz4: ERROR_frameSize_wrong"))
    assert (corrupt.reason, corrupt.exception) == ("internal_error", "DecompressionError")


class BacklogConsumer:
    """aiokafka's reading semantics over one partition of ``size`` records whose batch
    at ``bad`` cannot be read: a ``getmany`` that meets it raises, and the records it
    had read before are dropped (the position moves past them)."""

    def __init__(self, size: int, bad: int | None) -> None:
        self.size, self.bad, self.at, self.calls = size, bad, 0, 0

    async def position(self, tp: str) -> int:
        return self.at

    def seek(self, tp: str, offset: int) -> None:
        self.at = offset

    async def getmany(self, tp: str, timeout_ms: int, max_records: int) -> dict[str, list[int]]:
        self.calls += 1
        end = min(self.at + max_records, self.size)
        if self.bad is not None and self.at <= self.bad < end:
            self.at = self.bad
            raise DecompressionBomb("a zstd batch of 90 bytes would expand beyond 1 bytes")
        got, self.at = list(range(self.at, end)), end
        return {tp: got} if got else {}


@pytest.mark.parametrize("bad", [0, 1, 499, 500, 12_345, 29_999, None])
async def test_probe_finds_the_unreadable_batch_without_reading_the_backlog_one_by_one(
    bad: int | None,
) -> None:
    """Regression: the probe read every partition one record at a time, so a bomb
    behind a backlog of 30,000 records cost 30,000 calls per partition at every
    offset of the bomb. Now it reads 500 at a time and only the chunk that raised
    record by record; nothing before the bad batch is dropped."""
    consumer = BacklogConsumer(30_000, bad)
    found = await codec_guard.probe(consumer, "tp")
    before = 30_000 if bad is None else bad
    assert found.records == list(range(before))
    assert found.bad_offset == bad
    assert isinstance(found.error, DecompressionBomb) == (bad is not None)
    assert found.end == (None if bad is None else bad + 1)  # no aiokafka batch to ask
    assert consumer.calls <= before // 500 + 2 + (0 if bad is None else bad % 500 + 1)


def _batch_at(base: int, codec: int, values: list[bytes]) -> bytes:
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(2, codec, False, -1, -1, -1, 64 << 20)
    for delta, value in enumerate(values):
        builder.append(delta, timestamp=None, key=None, value=value, headers=[])
    raw = bytearray(builder.build())
    raw[0:8] = base.to_bytes(8, "big")  # the base offset (outside the CRC)
    return bytes(raw)


def test_a_bomb_is_passed_whole_by_the_batch_aiokafka_was_reading() -> None:
    """A zstd bomb of 5 records at offsets 3-7 between readable batches: aiokafka's
    record iterator raises at offset 3, and the batch it held ends at 8, so the
    stage passes the five offsets in one step (one step each, it took a fetch, a
    dead letter and a commit per record)."""
    from aiokafka.consumer.fetcher import READ_UNCOMMITTED, PartitionRecords
    from aiokafka.structs import TopicPartition

    raw = _batch_at(0, 0, [b"a"] * 3) + _batch_at(3, 4, [b"0" * 400_000] * 5)
    raw += _batch_at(8, 0, [b"b"] * 2)
    codec_guard.install(1024 * 1024)
    records = PartitionRecords(
        TopicPartition("t", 0), MemoryRecords(raw), [], 0, None, None, True, READ_UNCOMMITTED
    )
    read = []
    with pytest.raises(DecompressionBomb) as raised:
        for record in records:
            read.append(record.offset)
    assert read == [0, 1, 2]
    assert codec_guard.batch_end(raised.value, 3) == 8
    assert codec_guard.batch_end(raised.value, 8) == 9  # not a batch behind the offset
    assert codec_guard.batch_end(ValueError("transient?"), 3) == 4
