"""Dead letters: safe rendering, counts, export lines and what resend takes from them."""

from __future__ import annotations

import orjson
import pytest

from streams.deadletters import DeadLetter, Tally, export_line, from_record, message_of, safe_text

HOUR = 3_600_000
T = 1_800_000_000_000  # on an hour boundary


def letter(reason: str, ts_ms: int = T, value: bytes | None = b"{}") -> DeadLetter:
    return DeadLetter(0, 7, ts_ms, {"reason": reason, "detail": "d"}, value)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b'{"a": 1}', '{"a": 1}'),
        (b"\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),  # no terminal escape gets through
        (b"two\nlines\r\t", "two\\x0alines\\x0d\\x09"),
        (b"\xff\xfe bytes", "\\xff\\xfe bytes"),
        ("caf\u00e9 \u202e".encode(), "caf\u00e9 \\u202e"),  # a bidi override is escaped
        (None, "(null)"),
    ],
)
def test_safe_text_is_one_printable_line(raw: bytes | None, shown: str) -> None:
    assert safe_text(raw) == shown
    assert safe_text(raw).isprintable()


def test_safe_text_cuts_long_values_and_says_how_much() -> None:
    assert safe_text(b"x" * 50, limit=10) == "xxxxxxxxxx… (+40 chars, 50 bytes)"


def test_tally_by_reason_and_bucket() -> None:
    tally = Tally(HOUR)
    for reason, ts in [("not_json", T), ("bad_type", T + 10), ("not_json", T + HOUR + 1)]:
        tally.add(letter(reason, ts))
    assert tally.by_reason == {"not_json": 2, "bad_type": 1}
    assert tally.rows() == [
        ("2027-01-15T08:00:00Z", {"not_json": 1, "bad_type": 1}),
        ("2027-01-15T09:00:00Z", {"not_json": 1}),
    ]


def test_from_record_decodes_headers_leniently() -> None:
    got = from_record(2, 9, T, [("reason", b"bad_type"), ("x", b"\xff"), ("y", None)], b"v")
    assert got.headers == {"reason": "bad_type", "x": "\\xff", "y": ""}
    assert got.reason == "bad_type" and got.partition == 2 and got.offset == 9


@pytest.mark.parametrize("value", [b'{"type": "poke"}', b"\xff\xfe", b"{not json", None])
def test_an_exported_line_resends_the_original_bytes(value: bytes | None) -> None:
    line = export_line(letter("x", value=value))
    meta = orjson.loads(line)["dlq"]
    assert meta["reason"] == "x" and meta["offset"] == 7
    assert meta["timestamp"] == "2027-01-15T08:00:00Z"
    assert message_of(line) == value


def test_an_edited_export_line_and_plain_lines() -> None:
    line = orjson.loads(export_line(letter("bad_type", value=b'{"type": "poke"}')))
    line["value"] = '{"type": "like"}'
    assert message_of(orjson.dumps(line)) == b'{"type": "like"}'
    line["value"] = {"type": "like"}  # edited as an object rather than text
    assert message_of(orjson.dumps(line)) == b'{"type":"like"}'
    assert message_of(b'{"event_id": "e"}') == b'{"event_id": "e"}'  # a plain event
    assert message_of(b"not json") == b"not json"
