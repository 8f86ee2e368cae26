"""Bounded decompression of input batches, and a way past a batch that cannot be read.

The consumer's fetch sizes bound the *compressed* bytes of a fetch, not what a batch
expands to: 1 MiB of gzip can hold 1 GiB of zeros, an lz4 block expands ~255-fold, a
three-byte zstd block to 128 KiB, and raw snappy declares an output length that its
decoder allocates at once (a 4 GB claim aborts the process). aiokafka decompresses
a whole batch at once, so every codec's decoder is replaced here by one bounded by
``EM_MAX_BATCH_BYTES``: gzip stops inflating at the limit; snappy, lz4 and zstd are
measured from their frame headers (``streams/frame_sizes.py``) before a byte is
decompressed. Beyond the limit the decoder raises :class:`DecompressionBomb`.

A batch that raises while aiokafka reads it (a bomb, a corrupt batch, a codec the
machine lacks) surfaces as an exception from ``getmany``, and aiokafka would fetch
the same batch again forever. :func:`probe` reads a partition (in chunks, then
record by record within the chunk that fails) to find where it fails, so the stage
can handle what precedes it, dead-letter that offset (:func:`refusal` says why) and
move on; a batch of N records is passed after N such steps.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streams.events import InvalidEvent
from streams.frame_sizes import lz4_bound, snappy_bound, zstd_bound

log = logging.getLogger(__name__)

#: Largest decompressed batch accepted (EM_MAX_BATCH_BYTES's default).
DEFAULT_LIMIT = 64 * 1024 * 1024

Decoder = Callable[[Any], bytes]


class DecompressionBomb(ValueError):
    """A batch expands beyond the limit."""


def bounded_gzip(limit: int) -> Decoder:
    """A gzip decoder for aiokafka that refuses output beyond ``limit`` bytes (every
    gzip member of the payload counted)."""

    def gzip_decode(payload: Any) -> bytes:
        data, out = bytes(payload), bytearray()
        while data:
            decoder = zlib.decompressobj(47)  # gzip or zlib header, detected
            out += decoder.decompress(data, limit + 1 - len(out))
            if len(out) > limit or decoder.unconsumed_tail:
                raise DecompressionBomb(
                    f"a gzip batch of {len(payload)} bytes expands beyond {limit} bytes"
                    " (EM_MAX_BATCH_BYTES)"
                )
            data = decoder.unused_data
        return bytes(out)

    return gzip_decode


def bounded(codec: str, bound: Callable[[bytes, int], int], decode: Decoder, limit: int) -> Decoder:
    """``decode`` (aiokafka's own), called only when the payload's frames cannot
    expand beyond ``limit``; a payload whose frames cannot be read is refused
    (``MalformedFrame``), as the decoder would refuse it."""

    def bounded_decode(payload: Any) -> bytes:
        data = payload if isinstance(payload, bytes) else bytes(payload)
        size = bound(data, limit)
        if size > limit:
            raise DecompressionBomb(
                f"a {codec} batch of {len(data)} bytes would expand beyond {limit} bytes"
                " (EM_MAX_BATCH_BYTES), by its frame headers"
            )
        return decode(data)

    return bounded_decode


def decoders(limit: int) -> dict[str, Decoder]:
    """The bounded decoders, by the names aiokafka's record readers look up."""
    from aiokafka import codec

    return {
        "gzip_decode": bounded_gzip(limit),
        "snappy_decode": bounded("snappy", snappy_bound, codec.snappy_decode, limit),
        "lz4_decode": bounded("lz4", lz4_bound, codec.lz4_decode, limit),
        "zstd_decode": bounded("zstd", zstd_bound, codec.zstd_decode, limit),
    }


def install(limit: int = DEFAULT_LIMIT) -> None:
    """Put the bounded decoders where aiokafka's record readers (pure-Python and C)
    look them up: their module globals, read at each call."""
    from aiokafka.record import default_records, legacy_records

    modules: list[Any] = [default_records, legacy_records]
    try:
        from aiokafka.record._crecords import default_records as c_default
        from aiokafka.record._crecords import legacy_records as c_legacy

        modules += [c_default, c_legacy]
    except ImportError:  # the pure-Python build
        pass
    for name, decoder in decoders(limit).items():
        for module in modules:
            if hasattr(module, name):  # the legacy readers know no zstd
                setattr(module, name, decoder)


def refusal(error: Exception) -> InvalidEvent:
    """Why the records of an unreadable batch are dead-lettered: a bomb is
    ``too_large`` (foreseen, not the worker's doubt); anything else (a corrupt
    batch, a frame no codec reads) is ``internal_error``. The class goes in the
    ``exception`` header either way."""
    if isinstance(error, DecompressionBomb):
        return InvalidEvent("too_large", str(error), type(error).__name__)
    return InvalidEvent.internal(error)


@dataclass
class Probe:
    """One partition read record by record after ``getmany`` raised."""

    records: list[Any]  # read before the batch that raised (or all, if none did)
    bad_offset: int | None = None  # where the unreadable batch starts
    error: Exception | None = None
    end: int | None = None  # the offset after the unreadable batch (see batch_end)


def batch_end(error: BaseException, offset: int) -> int:
    """The offset after the batch at ``offset`` whose reading raised ``error``: for a
    bomb, the batch aiokafka's record iterator held (its ``next_batch`` local, whose
    header was read without decompressing); else ``offset + 1``. A bomb of N records
    is thus passed in one step instead of N, each a fetch, a dead letter and a commit
    (a zstd batch of 100,000 small records is a few KB on the wire). Another error
    may be transient: its batch is not skipped whole."""
    if isinstance(error, DecompressionBomb):
        tb = error.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_name == "_unpack_records":
                end = getattr(tb.tb_frame.f_locals.get("next_batch"), "next_offset", None)
                if isinstance(end, int) and end > offset:
                    return end
            tb = tb.tb_next
    return offset + 1


async def rewind(consumer: Any, tp: Any) -> None:
    """Back to the last committed offset (the beginning when none): what was read
    since is read again."""
    committed = await consumer.committed(tp)
    if committed is None:
        await consumer.seek_to_beginning(tp)
    else:
        consumer.seek(tp, committed)


async def probe(consumer: Any, tp: Any, limit: int = 100_000, chunk: int = 500) -> Probe:
    """Read ``tp`` from where it stands up to the batch that cannot be read (or its
    end, or ``limit`` records). A ``getmany`` that raises midway drops what it had
    read, so ``chunk`` records are read at a time, and the chunk that raises is read
    again from its start one record at a time: aiokafka moves the position after
    each record, so when a batch raises the position is its first offset. (Record
    by record all the way, a bomb cost one call per record of every partition's
    backlog — 100,000 calls for a backlog of 100,000 — at every offset it held.)"""
    out = Probe([])
    while len(out.records) < limit:
        start = await consumer.position(tp)
        try:
            got = await consumer.getmany(tp, timeout_ms=1000, max_records=chunk)
        except Exception:  # noqa: BLE001 - the unreadable batch is within this chunk
            consumer.seek(tp, start)
            return await _find_unreadable(consumer, tp, out, chunk + 1)
        if not got.get(tp):
            return out
        out.records += got[tp]
    return out


async def _find_unreadable(consumer: Any, tp: Any, out: Probe, steps: int) -> Probe:
    """One record at a time, for at most ``steps`` records, until a batch raises."""
    for _ in range(steps):
        try:
            got = await consumer.getmany(tp, timeout_ms=1000, max_records=1)
        except Exception as exc:  # noqa: BLE001 - found: the batch that cannot be read
            out.bad_offset, out.error = await consumer.position(tp), exc
            out.end = batch_end(exc, out.bad_offset)
            return out
        if not got.get(tp):
            break
        out.records += got[tp]
    return out  # read again later: the failure did not recur (a transient error)
