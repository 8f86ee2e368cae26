"""How large a compressed Kafka batch can become, read from its frame headers alone.

A Kafka batch is decompressed whole, and a few KiB of snappy, lz4 or zstd can claim
or produce gigabytes: raw snappy starts with the output length the decoder
allocates at once (a 4 GB claim aborts the process when the allocation fails), and
an lz4 or zstd frame is a run of blocks of which each can expand ~255-fold (lz4) or
to 128 KiB from three bytes (zstd). The formats bound every block's output, so
walking the block headers — without decompressing anything — gives an upper bound
of the output that a conforming decoder cannot exceed. The walk stops as soon as
the bound passes ``stop_above``, so a payload of millions of tiny blocks costs no
more than the limit it is measured against.

Only what Kafka producers send is accepted: raw snappy (librdkafka, aiokafka with
``xerial_compatible=False``) and the xerial/snappy-java framing (the Java client,
aiokafka); the lz4 frame format (KIP-57); zstd frames. Concatenated and skippable
frames count too. Anything else raises :class:`MalformedFrame`, which aiokafka's
decoder would refuse as well.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

XERIAL_HEADER = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
LZ4_MAGIC = 0x184D2204
ZSTD_MAGIC = 0xFD2FB528
#: 0x184D2A50 to 0x184D2A5F: skippable frames in both lz4 and zstd streams
SKIPPABLE_MASK, SKIPPABLE_MAGIC = 0xFFFFFFF0, 0x184D2A50
LZ4_BLOCK_MAX = {4: 64 * 1024, 5: 256 * 1024, 6: 1024 * 1024, 7: 4 * 1024 * 1024}
ZSTD_BLOCK_MAX = 128 * 1024


#: reads the frame whose header follows the magic at ``pos``: (output bound, next position)
FrameWalk = Callable[[bytes, int, int], tuple[int, int]]


class MalformedFrame(ValueError):
    """The payload is not a frame of the codec its batch names."""


def _u32(data: bytes, pos: int) -> int:
    if pos + 4 > len(data):
        raise MalformedFrame(f"truncated at byte {pos}")
    return int.from_bytes(data[pos : pos + 4], "little")


def snappy_raw_length(data: bytes | memoryview) -> int:
    """The output length a raw snappy block declares (its varint preamble)."""
    length, shift = 0, 0
    for pos in range(min(len(data), 5)):
        byte = data[pos]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return length
        shift += 7
    raise MalformedFrame("raw snappy: no length preamble")


def snappy_bound(data: bytes, stop_above: int) -> int:
    """Output size of a snappy batch, as aiokafka's ``snappy_decode`` reads it: the
    xerial framing (16-byte header, then big-endian length + raw block) when the
    header matches, raw snappy otherwise."""
    if not (len(data) > 16 and data.startswith(XERIAL_HEADER)):
        return snappy_raw_length(data)
    view, pos, total = memoryview(data), 16, 0
    while pos < len(data) and total <= stop_above:
        if pos + 4 > len(data):
            raise MalformedFrame(f"xerial snappy: truncated block length at byte {pos}")
        (size,) = struct.unpack_from(">i", data, pos)
        pos += 4
        if size < 0 or pos + size > len(data):
            raise MalformedFrame(f"xerial snappy: block of {size} bytes at byte {pos}")
        total += snappy_raw_length(view[pos : pos + size])
        pos += size
    return total


def _skippable(data: bytes, pos: int) -> int:
    """The position after the skippable frame at ``pos``."""
    end = pos + 8 + _u32(data, pos + 4)
    if end > len(data):
        raise MalformedFrame(f"skippable frame beyond the payload at byte {pos}")
    return end


def frames_bound(data: bytes, stop_above: int, magic: int, walk: FrameWalk) -> int:
    """Sum of the bounds of every frame in ``data`` (skippable ones count 0)."""
    pos, total = 0, 0
    if not data:
        raise MalformedFrame("empty payload")
    while pos < len(data) and total <= stop_above:
        found = _u32(data, pos)
        if found & SKIPPABLE_MASK == SKIPPABLE_MAGIC:
            pos = _skippable(data, pos)
        elif found == magic:
            bound, pos = walk(data, pos + 4, stop_above - total)
            total += bound
        else:
            raise MalformedFrame(f"unknown magic {found:#010x} at byte {pos}")
    return total


def _lz4_frame(data: bytes, pos: int, stop_above: int) -> tuple[int, int]:
    """(output bound, next position) of the lz4 frame whose descriptor is at ``pos``."""
    if pos + 3 > len(data):
        raise MalformedFrame("lz4: truncated frame descriptor")
    flags, bd = data[pos], data[pos + 1]
    if flags >> 6 != 1 or flags & 0x02 or bd & 0x8F or (bd >> 4) not in LZ4_BLOCK_MAX:
        raise MalformedFrame(f"lz4: unsupported frame descriptor {flags:#04x} {bd:#04x}")
    block_max, block_checksum = LZ4_BLOCK_MAX[bd >> 4], 4 if flags & 0x10 else 0
    declared = 0
    if flags & 0x08:
        if pos + 10 > len(data):
            raise MalformedFrame("lz4: truncated content size")
        declared = int.from_bytes(data[pos + 2 : pos + 10], "little")
    pos += 2 + (8 if flags & 0x08 else 0) + (4 if flags & 0x01 else 0) + 1  # + header checksum
    total = 0
    while (word := _u32(data, pos)) != 0:
        size = word & 0x7FFFFFFF
        if size > block_max:
            raise MalformedFrame(f"lz4: block of {size} bytes beyond its maximum {block_max}")
        total += size if word & 0x80000000 else block_max
        pos += 4 + size + block_checksum
        if total > stop_above or declared > stop_above:
            return max(total, declared), pos
    pos += 4 + (4 if flags & 0x04 else 0)  # end mark, content checksum
    if pos > len(data):
        raise MalformedFrame("lz4: truncated frame end")
    return max(total, declared), pos


def lz4_bound(data: bytes, stop_above: int) -> int:
    """Output bound of an lz4 batch (KIP-57 frames): the declared content size or the
    blocks' sizes (an uncompressed block's own, a compressed one's maximum)."""
    return frames_bound(data, stop_above, LZ4_MAGIC, _lz4_frame)


def _zstd_header(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """(declared content size or 0, largest output of one block, length of the
    checksum that ends the frame, position of the first block)."""
    if pos >= len(data):
        raise MalformedFrame("zstd: truncated frame header")
    fhd = data[pos]
    if fhd & 0x08:
        raise MalformedFrame(f"zstd: reserved bit set in frame header {fhd:#04x}")
    single_segment, fcs_flag = fhd & 0x20, fhd >> 6
    fcs_size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    start = pos + 1 + (0 if single_segment else 1) + (0, 1, 2, 4)[fhd & 0x03]
    if start + fcs_size > len(data):
        raise MalformedFrame("zstd: truncated frame header")
    declared = int.from_bytes(data[start : start + fcs_size], "little")
    declared += 256 if fcs_size == 2 else 0
    if single_segment:  # the window is the whole content
        window = declared
    else:
        exponent, mantissa = data[pos + 1] >> 3, data[pos + 1] & 7
        window = (1 << (10 + exponent)) + ((1 << (10 + exponent)) >> 3) * mantissa
    return declared, min(window, ZSTD_BLOCK_MAX), 4 if fhd & 0x04 else 0, start + fcs_size


def _zstd_frame(data: bytes, pos: int, stop_above: int) -> tuple[int, int]:
    """(output bound, next position) of the zstd frame whose header is at ``pos``:
    a block's output is at most min(window, 128 KiB) (RFC 8878, Block_Maximum_Size)."""
    declared, block_max, checksum, pos = _zstd_header(data, pos)
    total, last = 0, False
    while not last:
        if pos + 3 > len(data):
            raise MalformedFrame(f"zstd: truncated block header at byte {pos}")
        header = int.from_bytes(data[pos : pos + 3], "little")
        last, kind, size = bool(header & 1), (header >> 1) & 3, header >> 3
        if kind == 3 or size > block_max:
            raise MalformedFrame(f"zstd: invalid block header {header:#08x} at byte {pos}")
        total += block_max if kind == 2 else size  # raw, RLE: their size exactly
        pos += 3 + (1 if kind == 1 else size)
        if total > stop_above or declared > stop_above:
            return max(total, declared), pos
    pos += checksum
    if pos > len(data):
        raise MalformedFrame("zstd: truncated frame end")
    return max(total, declared), pos


def zstd_bound(data: bytes, stop_above: int) -> int:
    """Output bound of a zstd batch: the declared content size or the blocks' sizes
    (raw and RLE blocks their own, a compressed block its frame's block maximum)."""
    return frames_bound(data, stop_above, ZSTD_MAGIC, _zstd_frame)
