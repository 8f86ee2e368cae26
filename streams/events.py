"""The event contract of the ``interactions`` topic and its validation.

Validation is pure (bytes in, an :class:`Event` or an :class:`InvalidEvent` out) so
it is tested without services, and so every invalid message can be routed to the
dead-letter topic with a reason from a closed set — a reason is a Prometheus label,
so it must never be free text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

EVENT_TYPES: frozenset[str] = frozenset(
    {"post", "comment", "reply", "like", "share", "mention", "click", "view", "follow", "unfollow"}
)
DEFAULT_ACTIVE_TYPES: frozenset[str] = EVENT_TYPES - {"view", "click", "unfollow"}
REQUIRED_FIELDS: tuple[str, ...] = ("event_id", "ts", "platform", "community", "user_id", "type")

#: The closed set of reasons a message is refused; the label values of
#: ``engagement_invalid_events_total{reason}``.
REASONS: tuple[str, ...] = (
    "too_large",
    "not_json",
    "not_object",
    "missing_field",
    "bad_field",
    "bad_type",
    "bad_timestamp",
    "future_timestamp",
)

#: Community names the pipeline itself uses as label values.
ALL_COMMUNITIES = "*"
OTHER_COMMUNITY = "_other"
RESERVED_COMMUNITIES = frozenset({ALL_COMMUNITIES, OTHER_COMMUNITY})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# RFC 3339 date-time: a full date, "T" (or space, or lower-case t), time, optional
# fraction, and a mandatory offset. fromisoformat alone would accept dates without
# time or offset, which are ambiguous as instants.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Epoch numbers at or above this are milliseconds: 1e11 seconds is the year 5138,
# while 1e11 milliseconds is 1973.
_MS_THRESHOLD = 100_000_000_000


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits: they bound memory per event and the length of label values."""

    max_message_bytes: int = 4096
    max_id_length: int = 128
    max_platform_length: int = 32
    max_community_length: int = 128
    future_tolerance_ms: int = 300_000


class Event(NamedTuple):
    """A valid event. A named tuple, not a frozen dataclass: it is built once per
    message on the hot path, and a frozen dataclass's __init__ costs ~1.5 µs."""

    event_id: str
    ts_ms: int
    platform: str
    community: str
    user_id: str
    type: str


class InvalidEvent(ValueError):
    """A message that breaks the contract; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def parse_timestamp_ms(value: Any) -> int:
    """Epoch milliseconds of an RFC 3339 string or an epoch seconds/milliseconds number."""
    if isinstance(value, bool):
        raise InvalidEvent("bad_timestamp", "ts is a boolean")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidEvent("bad_timestamp", f"ts is not finite: {value!r}")
        if value < 0:
            raise InvalidEvent("bad_timestamp", f"ts is before 1970: {value!r}")
        if value >= _MS_THRESHOLD:
            return int(value)
        if isinstance(value, int):
            return value * 1000
        # Decimal of the shortest repr: the number as written, so 1.005 s is 1005 ms
        # (the float product 1.005 * 1000 is 1004.999...).
        return math.floor(Decimal(repr(value)) * 1000)
    if isinstance(value, str):
        return _parse_rfc3339_ms(value)
    raise InvalidEvent(
        "bad_timestamp", f"ts must be a string or a number, not {type(value).__name__}"
    )


#: Epoch seconds of "YYYY-MM-DDTHH:MM:SS" prefixes already parsed. Events arrive
#: roughly in time order, so most of a batch shares a handful of seconds; the cache
#: turns the full parse into a slice and a dict lookup. Cleared when large.
_SECOND_CACHE: dict[str, int] = {}
_FAST_FRACTION = re.compile(r"(?:\.([0-9]{1,3}))?Z")


def _parse_rfc3339_ms(value: str) -> int:
    """RFC 3339 to epoch ms; the common "…SS[.fff]Z" form takes a cached fast path."""
    seconds = _SECOND_CACHE.get(value[:19])
    if seconds is not None:
        # the two shapes producers send: "...SS.fffZ" and "...SSZ"
        size = len(value)
        fraction = value[20:23]
        if (
            size == 24
            and value[19] == "."
            and value[23] == "Z"
            and fraction.isascii()
            and fraction.isdigit()
        ):
            return seconds * 1000 + int(fraction)
        if size == 20 and value[19] == "Z":
            return seconds * 1000
        tail = _FAST_FRACTION.fullmatch(value, 19)
        if tail is not None:
            digits = tail.group(1)
            return seconds * 1000 + (int(digits.ljust(3, "0")) if digits else 0)
    prefix = value[:19]
    ms = _parse_rfc3339_slow(value)
    if len(value) >= 20 and value[10] == "T" and _FAST_FRACTION.fullmatch(value, 19):
        if len(_SECOND_CACHE) > 100_000:
            _SECOND_CACHE.clear()
        _SECOND_CACHE[prefix] = ms // 1000
    return ms


def _parse_rfc3339_slow(value: str) -> int:
    """The full parse: regex, fraction beyond microseconds, fromisoformat."""
    if not _RFC3339.fullmatch(value):
        raise InvalidEvent("bad_timestamp", f"ts is not RFC 3339: {value[:64]!r}")
    text = value
    fraction = re.search(r"\.(\d+)", text)
    if fraction and len(fraction.group(1)) > 6:
        # datetime keeps microseconds; digits beyond them cannot change the millisecond.
        text = text.replace(fraction.group(0), "." + fraction.group(1)[:6], 1)
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    except ValueError as exc:
        raise InvalidEvent("bad_timestamp", f"ts is not a valid date-time: {exc}") from None
    ms = (moment - _EPOCH) // _MS
    if ms < 0:
        raise InvalidEvent("bad_timestamp", f"ts is before 1970: {value!r}")
    return int(ms)


def _printable(text: str) -> bool:
    """No control characters; isprintable() is the fast yes (it is False for other
    characters too, e.g. U+00A0, which the regex then accepts)."""
    return text.isprintable() or not _CONTROL.search(text)


def _text_field(obj: dict[str, Any], name: str, max_length: int) -> str:
    value = obj[name]
    if not isinstance(value, str):
        raise InvalidEvent("bad_field", f"{name} must be a string, not {type(value).__name__}")
    if not value or len(value) > max_length:
        raise InvalidEvent("bad_field", f"{name} must have 1..{max_length} characters")
    if _CONTROL.search(value):
        raise InvalidEvent("bad_field", f"{name} contains control characters")
    return value


def validate(obj: Any, now_ms: int, limits: Limits = Limits()) -> Event:
    """Check a decoded message against the contract; raise :class:`InvalidEvent`."""
    if not isinstance(obj, dict):
        raise InvalidEvent("not_object", f"expected a JSON object, got {type(obj).__name__}")
    get = obj.get
    event_id, ts, platform = get("event_id"), get("ts"), get("platform")
    community, user_id, kind = get("community"), get("user_id"), get("type")
    if (
        event_id is None
        or ts is None
        or platform is None
        or community is None
        or user_id is None
        or kind is None
    ):
        missing = [name for name in REQUIRED_FIELDS if get(name) is None]
        raise InvalidEvent("missing_field", "missing " + ", ".join(missing))
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise InvalidEvent("bad_type", f"unknown type {str(kind)[:32]!r}")
    if not (
        type(event_id) is str
        and type(platform) is str
        and type(community) is str
        and type(user_id) is str
        and 0 < len(event_id) <= limits.max_id_length
        and 0 < len(platform) <= limits.max_platform_length
        and 0 < len(community) <= limits.max_community_length
        and 0 < len(user_id) <= limits.max_id_length
        and _printable(event_id + platform + community + user_id)
    ):
        # the slow path names the field at fault
        _text_field(obj, "event_id", limits.max_id_length)
        _text_field(obj, "platform", limits.max_platform_length)
        _text_field(obj, "community", limits.max_community_length)
        _text_field(obj, "user_id", limits.max_id_length)
    if community in RESERVED_COMMUNITIES:
        raise InvalidEvent("bad_field", f"community {community!r} is reserved")
    ts_ms = parse_timestamp_ms(ts)
    if ts_ms > now_ms + limits.future_tolerance_ms:
        raise InvalidEvent(
            "future_timestamp",
            f"ts is {(ts_ms - now_ms) / 1000:.0f}s in the future "
            f"(tolerance {limits.future_tolerance_ms / 1000:.0f}s)",
        )
    return Event(event_id, ts_ms, platform, community, user_id, kind)


def parse_event(raw: bytes | None, now_ms: int, limits: Limits = Limits()) -> Event:
    """Decode and validate one Kafka message value."""
    if raw is None:
        raise InvalidEvent("not_json", "empty message (null value)")
    if len(raw) > limits.max_message_bytes:
        raise InvalidEvent(
            "too_large", f"{len(raw)} bytes, the limit is {limits.max_message_bytes}"
        )
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("not_json", str(exc)[:120]) from None
    return validate(obj, now_ms, limits)


def event_to_json(event: Event) -> bytes:
    """Serialise an event in the contract's shape (ts as RFC 3339, millisecond precision)."""
    return orjson.dumps(
        {
            "event_id": event.event_id,
            "ts": format_ts(event.ts_ms),
            "platform": event.platform,
            "community": event.community,
            "user_id": event.user_id,
            "type": event.type,
        }
    )


def format_ts(ts_ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-25T17:00:00.120Z."""
    moment = _EPOCH + timedelta(milliseconds=ts_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"
