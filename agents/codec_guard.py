"""Bounded decompression of input batches, and a way past a batch that cannot be read.

The consumer's fetch sizes bound the *compressed* bytes of a fetch, not what a batch
expands to: 1 MiB of gzip can hold 1 GiB of zeros. aiokafka decompresses a whole
batch at once, so its gzip decoder is replaced here by one that stops at a limit
(``EM_MAX_BATCH_BYTES``) and raises :class:`DecompressionBomb`. snappy, lz4 and zstd
(through cramjam) are left as they are: their frames declare their sizes.

A batch that raises while aiokafka reads it (a bomb, a corrupt batch, a codec the
machine lacks) surfaces as an exception from ``getmany``, and aiokafka would fetch
the same batch again forever. :func:`probe` reads a partition record by record to
find where it fails, so the stage can handle what precedes it, dead-letter that
offset and move on; a batch of N records is passed after N such steps.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: Largest decompressed batch accepted (EM_MAX_BATCH_BYTES's default).
DEFAULT_LIMIT = 64 * 1024 * 1024


class DecompressionBomb(ValueError):
    """A batch expands beyond the limit."""


def bounded_gzip(limit: int) -> Any:
    """A gzip decoder for aiokafka that refuses output beyond ``limit`` bytes (every
    gzip member of the payload counted)."""

    def gzip_decode(payload: Any) -> bytes:
        data, out = bytes(payload), bytearray()
        while data:
            decoder = zlib.decompressobj(47)  # gzip or zlib header, detected
            out += decoder.decompress(data, limit + 1 - len(out))
            if len(out) > limit or decoder.unconsumed_tail:
                raise DecompressionBomb(f"a gzip batch expands beyond {limit} bytes")
            data = decoder.unused_data
        return bytes(out)

    return gzip_decode


def install(limit: int = DEFAULT_LIMIT) -> None:
    """Put the bounded decoder where aiokafka's record readers look it up."""
    from aiokafka.record import default_records, legacy_records

    modules: list[Any] = [default_records, legacy_records]
    try:
        from aiokafka.record._crecords import default_records as c_default
        from aiokafka.record._crecords import legacy_records as c_legacy

        modules += [c_default, c_legacy]
    except ImportError:  # the pure-Python build
        pass
    decoder = bounded_gzip(limit)
    for module in modules:
        if hasattr(module, "gzip_decode"):
            module.gzip_decode = decoder


@dataclass
class Probe:
    """One partition read record by record after ``getmany`` raised."""

    records: list[Any]  # read before the batch that raised (or all, if none did)
    bad_offset: int | None = None  # where the unreadable batch starts
    error: Exception | None = None


async def rewind(consumer: Any, tp: Any) -> None:
    """Back to the last committed offset (the beginning when none): what was read
    since is read again."""
    committed = await consumer.committed(tp)
    if committed is None:
        await consumer.seek_to_beginning(tp)
    else:
        consumer.seek(tp, committed)


async def probe(consumer: Any, tp: Any, limit: int = 100_000) -> Probe:
    """Read ``tp`` one record at a time from where it stands: aiokafka moves the
    position after each record, so when a batch raises the position is its first
    offset. (A ``getmany`` that raises midway drops what it had read of every
    partition, hence this slower path, taken only after a failure.)"""
    out = Probe([])
    while len(out.records) < limit:
        try:
            got = await consumer.getmany(tp, timeout_ms=1000, max_records=1)
        except Exception as exc:  # noqa: BLE001 - found: the batch that cannot be read
            out.bad_offset, out.error = await consumer.position(tp), exc
            return out
        if not got.get(tp):
            return out
        out.records += got[tp]
    return out
