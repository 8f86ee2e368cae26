"""The output bounds read from snappy, lz4 and zstd frame headers: never below what the
frames decompress to (else a bomb passes), and at most one block above it (else a
legitimate batch near the limit would be refused)."""

from __future__ import annotations

import struct
from collections.abc import Callable

import cramjam
import pytest
from aiokafka import codec
from hypothesis import given
from hypothesis import strategies as st

from streams.frame_sizes import (
    LZ4_BLOCK_MAX,
    XERIAL_HEADER,
    ZSTD_BLOCK_MAX,
    MalformedFrame,
    lz4_bound,
    snappy_bound,
    zstd_bound,
)

NO_LIMIT = 1 << 62
Bound = Callable[[bytes, int], int]


def _zstd_streamed(data: bytes) -> bytes:
    """A zstd frame without a declared content size, as a streaming producer (the
    Java client's zstd-jni output stream) writes it."""
    compressor = cramjam.zstd.Compressor()
    compressor.compress(data)
    return bytes(compressor.finish())


#: (name, encoder, bound, most the bound may exceed the output by)
ENCODERS: list[tuple[str, Callable[[bytes], bytes], Bound, int]] = [
    ("snappy-xerial", lambda d: bytes(codec.snappy_encode(d)), snappy_bound, 0),
    ("snappy-raw", lambda d: bytes(cramjam.snappy.compress_raw(d)), snappy_bound, 0),
    ("lz4", lambda d: bytes(codec.lz4_encode(d)), lz4_bound, LZ4_BLOCK_MAX[4]),
    ("zstd", lambda d: bytes(codec.zstd_encode(d)), zstd_bound, ZSTD_BLOCK_MAX),
    ("zstd-streamed", _zstd_streamed, zstd_bound, ZSTD_BLOCK_MAX),
]

payloads = st.one_of(
    st.binary(max_size=3000),
    st.builds(lambda part, n: part * n, st.binary(min_size=1, max_size=40), st.integers(1, 20_000)),
)


@pytest.mark.parametrize(
    ("name", "encode", "bound", "slack"), ENCODERS, ids=[e[0] for e in ENCODERS]
)
@given(data=payloads)
def test_the_bound_holds_and_is_tight(
    name: str, encode: Callable[[bytes], bytes], bound: Bound, slack: int, data: bytes
) -> None:
    if name == "snappy-xerial" and not data:
        return  # aiokafka's xerial writer emits a bare header, read back as raw snappy
    size = bound(encode(data), NO_LIMIT)
    assert len(data) <= size <= len(data) + slack


@pytest.mark.parametrize(
    ("name", "encode", "bound", "slack"), ENCODERS, ids=[e[0] for e in ENCODERS]
)
def test_a_bomb_is_measured_without_walking_all_of_it(
    name: str, encode: Callable[[bytes], bytes], bound: Bound, slack: int
) -> None:
    """Several frames of 2 MiB of zeros each: the walk stops just past the limit."""
    frame = encode(b"\0" * 2 * 1024 * 1024)
    payload = frame if name.startswith("snappy") else frame * 50
    assert 1024 * 1024 < bound(payload, 1024 * 1024) <= 4 * 1024 * 1024 + slack


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out) + bytes([n])


def test_snappy_counts_the_declared_length_that_its_decoder_allocates() -> None:
    """Regression: raw snappy claiming 4 GB (5 bytes of header) made cramjam allocate
    4 GB at once — an abort, not an exception, where memory is limited."""
    lie = _varint(4_000_000_000) + b"\x08abc"
    assert snappy_bound(lie, NO_LIMIT) == 4_000_000_000
    blocks = b"".join(struct.pack(">i", 9) + _varint(1 << 30) + b"\x08abc" for _ in range(3))
    assert snappy_bound(XERIAL_HEADER + blocks, NO_LIMIT) == 3 << 30


def test_declared_content_sizes_count() -> None:
    """An lz4 or zstd frame declaring a huge content size over a tiny block."""
    lz4 = b"\x04\x22\x4d\x18" + bytes([0x68, 0x40]) + struct.pack("<Q", 1 << 40) + b"\x00"
    lz4 += struct.pack("<I", 0x80000003) + b"abc" + b"\0\0\0\0"
    assert lz4_bound(lz4, NO_LIMIT) == 1 << 40
    zstd = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + struct.pack("<Q", 1 << 40)
    zstd += (1 | 3 << 3).to_bytes(3, "little") + b"abc"
    assert zstd_bound(zstd, NO_LIMIT) == 1 << 40


def test_skippable_frames_count_nothing_and_hide_nothing() -> None:
    skippable = struct.pack("<II", 0x184D2A50, 5) + b"12345"
    zstd = bytes(codec.zstd_encode(b"a" * 1000))
    assert zstd_bound(skippable + zstd + skippable + zstd, NO_LIMIT) == 2000
    lz4 = bytes(codec.lz4_encode(b"\0" * 100_000))
    assert lz4_bound(skippable + lz4, NO_LIMIT) == lz4_bound(lz4, NO_LIMIT)


@pytest.mark.parametrize(
    ("bound", "payload"),
    [
        (zstd_bound, b""),
        (zstd_bound, b"\x28\xb5\x2f\xfd"),  # no frame header
        (zstd_bound, b"\x27\xb5\x2f\xfd\x00"),  # a legacy (v0.7) magic
        (zstd_bound, b"\x28\xb5\x2f\xfd\x20\x05" + (7 << 1 | 1).to_bytes(3, "little")),  # type 3
        (zstd_bound, bytes(codec.zstd_encode(b"x" * 500))[:-2]),
        (lz4_bound, b"\x04\x22\x4d\x18\x60\x30\x00"),  # block size code 3
        (lz4_bound, bytes(codec.lz4_encode(b"x" * 500))[:-6]),
        (lz4_bound, bytes(codec.lz4_encode(b"x" * 500)) + b"junk"),
        (snappy_bound, b"\xff\xff\xff\xff\xff"),  # a varint that never ends
        (snappy_bound, XERIAL_HEADER + struct.pack(">i", -4) + b"abcd"),
        (snappy_bound, XERIAL_HEADER + struct.pack(">i", 100) + b"abcd"),
    ],
)
def test_what_no_producer_sends_is_malformed(bound: Bound, payload: bytes) -> None:
    with pytest.raises(MalformedFrame):
        bound(payload, NO_LIMIT)
