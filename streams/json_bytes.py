"""Small JSON texts as bytes, the same bytes ``orjson.dumps`` gives, without its cost.

Every ``orjson.dumps`` output (orjson 3.x) is written into a fresh buffer that is
shrunk at the end, and a small output kept alive still holds about 4 KiB of the
process's memory (measured: 200,000 kept 151-byte outputs took 4,120 B of RSS each,
200 B each as copies). The changelog writer keeps tens of thousands of tiny texts
per batch (a key, a 4-field record) until the transaction commits: that was most of
the worker's memory per stored record (2,160 B, 940 B without it) and, through the
allocations, 5 µs per key and value against 0.9 µs built as below. Anything outside
the common shape (quotes, backslashes, control characters other than the key
separator, non-printable characters) goes to orjson, so the bytes are always
orjson's: tests/unit/streams/test_json_bytes.py checks that on any text.
:func:`kept` is the remedy for other outputs that are kept in bulk.
"""

from __future__ import annotations

import orjson

from streams.state import SEP

_SEP_ESCAPED = "\\u001f"  # orjson's escape of SEP ("\x1f")


def json_string(text: str) -> bytes:
    """``orjson.dumps(text)``."""
    if '"' in text or "\\" in text or not text.replace(SEP, "").isprintable():
        return orjson.dumps(text)
    return ('"' + text.replace(SEP, _SEP_ESCAPED) + '"').encode()


def json_record(value: list[int | None]) -> bytes:
    """``orjson.dumps(value)`` of a record's wire value (4 fields, ints and None)."""
    if len(value) == 4:
        a, b, c, d = value
        if (
            type(a) is int
            and type(d) is int
            and (b is None or type(b) is int)
            and (c is None or type(c) is int)
        ):
            return f"[{a},{'null' if b is None else b},{'null' if c is None else c},{d}]".encode()
    return orjson.dumps(value)


def kept(raw: bytes) -> bytes:
    """A copy of an ``orjson.dumps`` output sized to its content, for outputs kept in
    bulk (benchmark payloads, test fixtures, a whole read-model snapshot's rows): ~200 B
    instead of ~4 KiB each."""
    return memoryview(raw).tobytes()
