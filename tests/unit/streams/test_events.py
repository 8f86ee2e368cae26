"""Validation of the event contract: every refusal reason, and exact timestamps."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.events import (
    REASONS,
    REQUIRED_FIELDS,
    Event,
    InvalidEvent,
    Limits,
    format_ts,
    parse_event,
    parse_timestamp_ms,
    validate,
)
from tests.eventgen import event_to_json

NOW = 1_764_090_000_000  # 2025-11-25T17:00:00Z
T2024 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
#: the tests of other rules use 2024 timestamps, older than the default maximum age
ANY_AGE = Limits(max_event_age_ms=None)
DAY = 86_400_000
BASE: dict[str, Any] = {
    "event_id": "e-1",
    "ts": "2024-01-01T00:00:00Z",
    "platform": "instagram",
    "community": "brand",
    "user_id": "u-1",
    "type": "post",
}


def with_(**changes: Any) -> dict[str, Any]:
    obj = dict(BASE)
    obj.update(changes)
    return obj


def without(name: str) -> dict[str, Any]:
    return {k: v for k, v in BASE.items() if k != name}


def raw(obj: Any) -> bytes:
    return orjson.dumps(obj)


# (reason, raw message bytes or None, limits)
INVALID: list[Any] = [
    # too_large
    ("too_large", b"x" * 4097, None),
    ("too_large", raw(with_(event_id="e" * 5000)), None),
    ("too_large", raw(BASE), Limits(max_message_bytes=50)),
    # not_json
    ("not_json", None, None),
    ("not_json", b"", None),
    ("not_json", b"{", None),
    ("not_json", b"{'event_id': 'e'}", None),
    ("not_json", b"\xff\xfe", None),
    ("not_json", b"NaN", None),
    ("not_json", raw(BASE) + b"garbage", None),
    # not_object
    ("not_object", b"[]", None),
    ("not_object", b"[" + raw(BASE) + b"]", None),
    ("not_object", b"1", None),
    ("not_object", b'"text"', None),
    ("not_object", b"null", None),
    ("not_object", b"true", None),
    # missing_field: each field absent, and null counts as absent
    *[("missing_field", raw(without(name)), None) for name in REQUIRED_FIELDS],
    *[("missing_field", raw(with_(**{name: None})), None) for name in REQUIRED_FIELDS],
    ("missing_field", b"{}", None),
    # bad_field
    ("bad_field", raw(with_(event_id=1)), None),
    ("bad_field", raw(with_(platform=["x"])), None),
    ("bad_field", raw(with_(user_id=True)), None),
    ("bad_field", raw(with_(community={"a": 1})), None),
    ("bad_field", raw(with_(platform="")), None),
    ("bad_field", raw(with_(user_id="")), None),
    ("bad_field", raw(with_(platform="p" * 33)), None),
    ("bad_field", raw(with_(community="c" * 129)), None),
    ("bad_field", raw(with_(event_id="e" * 129)), None),
    ("bad_field", raw(with_(user_id="u" * 129)), None),
    ("bad_field", raw(with_(community="*")), None),
    ("bad_field", raw(with_(community="_other")), None),
    ("bad_field", raw(with_(user_id="a\x1fb")), None),
    ("bad_field", raw(with_(community="line\nbreak")), None),
    ("bad_field", raw(with_(platform="tab\there")), None),
    ("bad_field", raw(with_(event_id="nul\x00")), None),
    ("bad_field", raw(with_(user_id="del\x7f")), None),
    # bad_type
    ("bad_type", raw(with_(type="Post")), None),
    ("bad_type", raw(with_(type="purchase")), None),
    ("bad_type", raw(with_(type="")), None),
    ("bad_type", raw(with_(type=1)), None),
    ("bad_type", raw(with_(type=["post"])), None),
    ("bad_type", raw(with_(type={"a": 1})), None),
    # bad_timestamp
    ("bad_timestamp", raw(with_(ts="2024-01-01")), None),
    ("bad_timestamp", raw(with_(ts="2024-01-01T00:00:00")), None),  # no offset
    ("bad_timestamp", raw(with_(ts="2024-01-01T00:00Z")), None),  # no seconds
    ("bad_timestamp", raw(with_(ts="2024-13-01T00:00:00Z")), None),
    ("bad_timestamp", raw(with_(ts="2024-02-30T00:00:00Z")), None),
    ("bad_timestamp", raw(with_(ts="2024-01-01T24:00:00Z")), None),
    ("bad_timestamp", raw(with_(ts="2024-01-01T00:00:00.Z")), None),
    ("bad_timestamp", raw(with_(ts="2024-01-01T00:00:00.1234567890Z")), None),  # 10 digits
    ("bad_timestamp", raw(with_(ts="2024-01-01T00:00:00+0100")), None),
    ("bad_timestamp", raw(with_(ts="2024-01-01T00:00:00Z\n")), None),
    ("bad_timestamp", raw(with_(ts=" 2024-01-01T00:00:00Z")), None),
    ("bad_timestamp", raw(with_(ts="1969-12-31T23:59:59.999Z")), None),
    ("bad_timestamp", raw(with_(ts="yesterday")), None),
    ("bad_timestamp", raw(with_(ts="1704067200")), None),  # numeric string
    ("bad_timestamp", raw(with_(ts=-1)), None),
    ("bad_timestamp", raw(with_(ts=-0.5)), None),
    ("bad_timestamp", raw(with_(ts=True)), None),
    ("bad_timestamp", raw(with_(ts=[2024])), None),
    ("bad_timestamp", raw(with_(ts={"s": 1})), None),
    # future_timestamp (tolerance 300 s by default)
    ("future_timestamp", raw(with_(ts=NOW + 300_001)), None),
    ("future_timestamp", raw(with_(ts=format_ts(NOW + 300_001))), None),
    ("future_timestamp", raw(with_(ts=(NOW + 301_000) // 1000)), None),
    ("future_timestamp", raw(with_(ts="9999-12-31T23:59:59Z")), None),
    ("future_timestamp", raw(with_(ts=2**63 - 1)), None),
    ("future_timestamp", raw(BASE).replace(b'"2024-01-01T00:00:00Z"', b"1e300"), None),
    ("future_timestamp", raw(with_(ts=NOW + 2)), Limits(future_tolerance_ms=1)),
    # too_old (400 days by default)
    ("too_old", raw(with_(ts=NOW - 400 * DAY - 1)), Limits()),
    ("too_old", raw(with_(ts="1970-01-01T00:00:00Z")), Limits()),
    ("too_old", raw(with_(ts=NOW - 2 * DAY)), Limits(max_event_age_ms=DAY)),
    # names: Unicode categories Cc, Cf, Zl, Zp, Cn (and Cs) are refused
    *[
        ("bad_field", raw(with_(**{field: f"a{char}b"})), None)
        for field in ("platform", "community", "user_id")
        for char in ("\x85", "\u202e", "\u200b", "\u2028", "\u2029", "\u0378", "\ufeff")
    ],
    # duplicate keys: the last would win in orjson, the first in other readers
    ("duplicate_key", raw(BASE)[:-1] + b',"user_id":"u-2"}', None),
    ("duplicate_key", raw(BASE)[:-1] + b',"user_id" : "u-2"}', None),
    ("duplicate_key", raw(BASE)[:-1] + b',"user_\\u0069d":"u-2"}', None),
    ("duplicate_key", raw(BASE)[:-1] + b',"x":{"a":1,"a":2}}', None),
    (
        "duplicate_key",
        raw(with_(ts="2024-01-01T00\\u003a00:00Z"))[:-1] + b',"user_id":"u-2"}',
        None,
    ),
]


def test_every_reason_is_covered() -> None:
    """Every reason but internal_error (the worker's own, for unforeseen exceptions)."""
    covered = {case.values[0] if hasattr(case, "values") else case[0] for case in INVALID}
    assert covered == set(REASONS) - {"internal_error"}


@pytest.mark.parametrize(("reason", "message", "limits"), INVALID)
def test_invalid(reason: str, message: bytes | None, limits: Limits | None) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(message, NOW, limits or ANY_AGE)
    assert info.value.reason == reason
    assert info.value.reason in REASONS


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_ts(value: float) -> None:
    # JSON cannot carry these, but validate() takes decoded objects from any source.
    with pytest.raises(InvalidEvent) as info:
        validate(with_(ts=value), NOW)
    assert info.value.reason == "bad_timestamp"


VALID_TS: list[tuple[Any, int]] = [
    ("2024-01-01T00:00:00Z", T2024),
    ("2024-01-01t00:00:00z", T2024),
    ("2024-01-01 00:00:00Z", T2024),
    ("2024-01-01T01:00:00+01:00", T2024),
    ("2023-12-31T18:30:00-05:30", T2024),
    ("2024-01-01T00:00:00+00:00", T2024),
    ("2024-01-01T00:00:00-00:00", T2024),
    ("2024-01-01T00:00:00.1Z", T2024 + 100),
    ("2024-01-01T00:00:00.12Z", T2024 + 120),
    ("2024-01-01T00:00:00.123Z", T2024 + 123),
    ("2024-01-01T00:00:00.1239Z", T2024 + 123),  # truncated, not rounded
    ("2024-01-01T00:00:00.999999Z", T2024 + 999),
    ("2024-01-01T00:00:00.123456789Z", T2024 + 123),
    ("2024-01-01T00:00:00.999999999Z", T2024 + 999),
    ("2024-01-01T00:00:00.000000001Z", T2024),
    ("2024-01-01T02:00:00.5+02:00", T2024 + 500),
    ("1970-01-01T00:00:00Z", 0),
    ("2024-02-29T00:00:00Z", T2024 + 59 * 86_400_000),
    (1704067200, T2024),  # epoch seconds
    (1704067200.5, T2024 + 500),
    (1704067200.123, T2024 + 123),
    (1704067200.9999, T2024 + 999),  # floor, never rounded up
    (0, 0),
    (0.001, 1),
    (99_999_999_999, 99_999_999_999_000),  # largest seconds value
    (100_000_000_000, 100_000_000_000),  # smallest milliseconds value
    (T2024, T2024),  # epoch milliseconds
    (T2024 + 123, T2024 + 123),
    (float(T2024) + 123.7, T2024 + 123),
]


@pytest.mark.parametrize(("ts", "expected"), VALID_TS)
def test_valid_timestamps(ts: Any, expected: int) -> None:
    assert parse_timestamp_ms(ts) == expected
    event = parse_event(raw(with_(ts=ts)), max(NOW, expected), ANY_AGE)
    assert event.ts_ms == expected
    assert isinstance(event.ts_ms, int)


@pytest.mark.parametrize(("ts", "expected"), [(1.005, 1005), (1.001, 1001)])
def test_float_seconds_exact(ts: float, expected: int) -> None:
    assert parse_timestamp_ms(orjson.loads(orjson.dumps(ts))) == expected


def test_valid_event_fields() -> None:
    obj = with_(platform="p" * 32, community="c" * 128, user_id="ü" * 128, event_id="e" * 128)
    event = parse_event(raw(obj), NOW, ANY_AGE)
    assert event == Event("e" * 128, T2024, "p" * 32, "c" * 128, "ü" * 128, "post")


def test_extra_fields_are_ignored() -> None:
    assert parse_event(raw(with_(extra={"x": 1})), NOW, ANY_AGE).type == "post"


def test_size_limit_is_inclusive() -> None:
    message = raw(BASE)
    assert (
        parse_event(
            message, NOW, Limits(max_message_bytes=len(message), max_event_age_ms=None)
        ).event_id
        == "e-1"
    )


def test_future_tolerance_is_inclusive() -> None:
    assert parse_event(raw(with_(ts=NOW + 300_000)), NOW).ts_ms == NOW + 300_000


@pytest.mark.parametrize("kind", ["post", "comment", "follow", "unfollow", "view", "click"])
def test_types(kind: str) -> None:
    assert parse_event(raw(with_(type=kind)), NOW, ANY_AGE).type == kind


@given(
    st.integers(86_400_000, 253_402_214_399_999),  # 1970-01-02 .. 9999-12-30
    st.text("0123456789", max_size=6),
    st.sampled_from([0, 345, -660, 840, -720]),
)
def test_rfc3339_milliseconds_exact(ts_ms: int, extra_digits: str, offset_min: int) -> None:
    """Any instant, in any offset, with 3..9 fraction digits: exactly its millisecond."""
    zone = timezone(timedelta(minutes=offset_min))
    moment = datetime.fromtimestamp(ts_ms // 1000, UTC).astimezone(zone)
    suffix = "Z" if offset_min == 0 else moment.strftime("%z")[:3] + ":" + moment.strftime("%z")[3:]
    text = f"{moment:%Y-%m-%dT%H:%M:%S}.{ts_ms % 1000:03d}{extra_digits}{suffix}"
    assert parse_timestamp_ms(text) == ts_ms


@given(
    st.builds(
        Event,
        event_id=st.text(
            st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1, max_size=20
        ),
        ts_ms=st.integers(0, NOW),
        platform=st.sampled_from(["instagram", "x", "tiktok"]),
        community=st.text("abc-_", min_size=1, max_size=10).filter(lambda c: c != "_other"),
        user_id=st.text(
            st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1, max_size=20
        ),
        type=st.sampled_from(["post", "like", "follow", "unfollow"]),
    ).filter(lambda e: (e.event_id + e.user_id).isprintable())
)
def test_event_json_round_trip(event: Event) -> None:
    assert parse_event(event_to_json(event), NOW, ANY_AGE) == event


def assert_same_as_full_parse(text: str) -> None:
    """The fast path gives what the full parse gives, a refusal included."""
    from streams.events import _parse_rfc3339_slow

    try:
        got: int | None = parse_timestamp_ms(text)
    except InvalidEvent:
        got = None
    try:
        slow: int | None = _parse_rfc3339_slow(text)
    except InvalidEvent:
        slow = None
    assert got == slow, text


@given(
    st.integers(min_value=0, max_value=253_402_300_799_999),
    st.sampled_from(["{s}.{ms:03d}Z", "{s}Z", "{s}.{ms:03d}000Z", "{s}.{c}Z", "{s}+00:00"]),
)
def test_fast_path_equals_the_full_parse(ts_ms: int, shape: str) -> None:
    """The fast path (fromisoformat on the common shapes) gives what the full parse
    gives, the first time and again."""
    from datetime import UTC, datetime

    from streams.events import _parse_rfc3339_slow

    moment = datetime.fromtimestamp(ts_ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    text = shape.format(s=moment, ms=ts_ms % 1000, c=(ts_ms % 1000) // 100)
    want = _parse_rfc3339_slow(text)
    assert parse_timestamp_ms(text) == want  # may fill the cache
    assert parse_timestamp_ms(text) == want  # cache hit
    for odd in (text[:19] + ".١٢٣Z", text[:19] + ".12Z ", text[:19] + "z"):
        assert_same_as_full_parse(odd)


@given(
    st.integers(min_value=0, max_value=253_402_300_799_999),
    st.integers(min_value=0, max_value=86_399_999),
    st.sampled_from(["{s}.{ms:03d}Z", "{s}Z"]),
)
def test_other_times_of_a_day_equal_the_full_parse(ts_ms: int, other_ms: int, shape: str) -> None:
    """Another time of a day already parsed gives what the full parse gives (what the
    per-day cache, before the fast path, had to get right); times the full parse
    refuses stay refused."""
    from datetime import UTC, datetime

    from streams.events import _parse_rfc3339_slow

    def text(ms: int) -> str:
        moment = datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return shape.format(s=moment, ms=ms % 1000)

    parse_timestamp_ms(text(ts_ms))  # fills the caches for this day
    day = text(ts_ms)[:10]
    other = day + text(other_ms)[10:]
    assert parse_timestamp_ms(other) == _parse_rfc3339_slow(other)
    for time_of_day in ("24:00:00", "23:60:00", "23:59:60", "1a:00:00", "١٢:00:00", "12:00"):
        odd = f"{day}T{time_of_day}" + other[19:]
        assert_same_as_full_parse(odd)


@given(
    st.sampled_from(
        ["2026-12-07T09:41:05.123Z", "2026-12-07T09:41:05Z", "1970-01-01T00:00:00.000Z"]
    ),
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=23), st.characters(max_codepoint=0x7F)),
        min_size=1,
        max_size=3,
    ),
)
def test_any_ascii_text_of_the_fast_shapes_equals_the_full_parse(
    template: str, edits: list[tuple[int, str]]
) -> None:
    """Any character at any place of the two fast shapes — a separator, a digit, a
    sign, a letter (week dates, which fromisoformat takes and RFC 3339 does not) —
    gives the full parse's answer or its refusal."""
    text = list(template)
    for place, char in edits:
        text[place % len(text)] = char
    assert_same_as_full_parse("".join(text))
    assert_same_as_full_parse("2026-W49-1T09:41:05.123Z")


def test_age_limit_is_inclusive() -> None:
    assert parse_event(raw(with_(ts=NOW - 400 * DAY)), NOW).ts_ms == NOW - 400 * DAY


def test_deeply_nested_type_is_bad_type_not_a_crash() -> None:
    """Regression: str() of a list nested 1,000 levels deep raised RecursionError
    while the error text was built, and the worker died on that message."""
    for depth in (950, 1000, 1020):
        message = raw(BASE)[:-1] + b',"type":' + b"[" * depth + b"]" * depth + b"}"
        message = message.replace(b'"type":"post",', b"")
        with pytest.raises(InvalidEvent) as info:
            parse_event(message, NOW, ANY_AGE)
        assert info.value.reason == "bad_type"


def test_deeply_nested_extra_field_is_refused_cleanly() -> None:
    """Lists hold no keys: accepted as they are. Objects too deep for the exact
    duplicate-key check are refused, never a crash."""
    lists = raw(BASE)[:-1] + b',"x":' + b"[" * 1020 + b"]" * 1020 + b"}"
    assert parse_event(lists, NOW, ANY_AGE).user_id == "u-1"
    objects = raw(BASE)[:-1] + b',"x":' + b'{"a":' * 1020 + b"1" + b"}" * 1020 + b"}"
    with pytest.raises(InvalidEvent) as info:
        parse_event(objects, NOW, Limits(max_message_bytes=10_000, max_event_age_ms=None))
    assert info.value.reason == "not_json"


def test_names_are_nfc_normalised() -> None:
    """Cafe + a combining acute and the precomposed Café are one community."""
    decomposed = parse_event(raw(with_(community="Cafe\u0301", user_id="u\u0308")), NOW, ANY_AGE)
    composed = parse_event(raw(with_(community="Caf\u00e9", user_id="\u00fc")), NOW, ANY_AGE)
    assert decomposed.community == composed.community == "Caf\u00e9"
    assert decomposed.user_id == composed.user_id == "\u00fc"


def test_other_non_ascii_names_are_kept() -> None:
    event = parse_event(
        raw(with_(community="caf\u00e9 \u00a0\u4e2d\u6587", platform="\u0445")), NOW, ANY_AGE
    )
    assert event.community == "caf\u00e9 \u00a0\u4e2d\u6587"


def test_unique_keys_with_colons_elsewhere_are_fine() -> None:
    obj = with_(user_id="u:1", community="a:b", extra={"k": "v:w"}, ts="2024-01-01T00:00:00+00:00")
    assert parse_event(raw(obj), NOW, ANY_AGE).user_id == "u:1"
    spaced = b'{"event_id" : "e", "ts" : 1704067200, "platform" : "p", "community" : "c",'
    spaced += b' "user_id" : "u", "type" : "like"}'
    assert parse_event(spaced, NOW, ANY_AGE).user_id == "u"


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _outcome(message: bytes) -> Event | InvalidEvent:
    try:
        return parse_event(message, NOW)
    except InvalidEvent as exc:
        return exc


@given(st.binary(max_size=300))
def test_any_bytes_give_an_event_or_an_invalid_event(message: bytes) -> None:
    assert isinstance(_outcome(message), Event | InvalidEvent)


@given(
    st.dictionaries(
        st.sampled_from([*REQUIRED_FIELDS, "x"]), JSON_VALUES | st.sampled_from(list(BASE.values()))
    )
)
def test_any_object_gives_an_event_or_an_invalid_event(obj: dict[str, Any]) -> None:
    assert isinstance(_outcome(raw(obj)), Event | InvalidEvent)


@given(st.data())
def test_mutated_valid_events_give_an_event_or_an_invalid_event(data: st.DataObject) -> None:
    message = bytearray(raw(with_(ts=NOW - 1000)))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(message) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            message[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del message[at:]
            if not message:
                break
        else:
            message[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    assert isinstance(_outcome(bytes(message)), Event | InvalidEvent)
