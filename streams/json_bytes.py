"""Small JSON texts as bytes, the same bytes ``orjson.dumps`` gives, without its cost.

``orjson.dumps`` starts every output in a 1 KiB buffer outside Python's small-object
allocator and shrinks it at the end. For the tens of thousands of tiny texts the
changelog writer keeps per batch (a key, a 4-field record) that is most of their
cost — 5 µs per key and value in a batch against 0.8 µs built as below (measured
keeping the results, as the writer does) — and it leaves the C heap fragmented.
Anything outside the common shape (quotes, backslashes, control characters other
than the key separator, non-printable characters) goes to orjson, so the bytes are
always orjson's: tests/unit/streams/test_json_bytes.py checks that on any text.
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
