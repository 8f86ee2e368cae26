"""Where replayed events come from: time bounds, files (JSONL, CSV, SNAP) and topics.

Everything here except :class:`TopicSource` is pure (no Kafka) so that formats,
column mappings and time ranges are unit-tested without a broker. File readers are
written for speed: ``replay --speed max`` must push more than 100k events/s from
one Python process, so a line costs a split, a dict and one ``orjson.dumps`` —
no dataclass per event, no per-line datetime arithmetic (timestamps are formatted
through a one-second cache; SNAP files are sorted by time, so it nearly always hits).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from agents.kafka_admin import require_topic
from agents.kafka_security import client_kwargs, start_or_close
from streams.durations import parse_duration_ms
from streams.events import (
    EVENT_TYPES,
    Event,
    InvalidEvent,
    Limits,
    format_ts,
    judge,
    parse_timestamp_ms,
)
from streams.merge import TimestampMerge

#: A record ready to send: (value bytes, event time ms, key) — or, for a bad line,
#: (original bytes, its line number, None) with ``reason`` set (the number travels
#: with the line: a reader in another thread is ahead of the line being sent).
#: Tuples, not objects: they are made a million times per run.
Item = tuple[bytes, int, bytes | None, str | None]

log = logging.getLogger(__name__)

_RELATIVE = re.compile(r"^\s*([+-])\s*((?:\d+\s*(?:ms|s|m|h|d|w)\s*)+)$")
_NUMBER = re.compile(r"^\s*\d+(\.\d+)?\s*$")


# Time bounds -------------------------------------------------------------------


def parse_time_bound(text: str, now_ms: int) -> int:
    """Epoch ms of ``now``, a relative offset (``-2h``, ``-30m``, ``+5m``), an RFC 3339
    date-time or an epoch number (seconds, or milliseconds when ≥ 1e11)."""
    value = text.strip()
    if value.lower() == "now":
        return now_ms
    relative = _RELATIVE.match(value)
    if relative:
        offset = parse_duration_ms(relative.group(2).replace(" ", ""))
        return now_ms - offset if relative.group(1) == "-" else now_ms + offset
    try:
        if _NUMBER.match(value):
            return parse_timestamp_ms(float(value) if "." in value else int(value))
        return parse_timestamp_ms(value)
    except InvalidEvent:
        raise ValueError(
            f"bad time {text!r}: expected now, -2h / -30m / +5m, RFC 3339 "
            "(2026-11-25T17:00:00Z) or epoch seconds"
        ) from None


@dataclass(frozen=True, slots=True)
class TimeRange:
    """The half-open event-time range [start_ms, end_ms); None is unbounded."""

    start_ms: int | None = None
    end_ms: int | None = None

    def __post_init__(self) -> None:
        if self.start_ms is not None and self.end_ms is not None and self.end_ms <= self.start_ms:
            raise ValueError("the time range is empty: --to must be after --from")

    def contains(self, ts_ms: int) -> bool:
        if self.start_ms is not None and ts_ms < self.start_ms:
            return False
        return self.end_ms is None or ts_ms < self.end_ms

    @classmethod
    def parse(cls, start: str | None, end: str | None, now_ms: int) -> TimeRange:
        return cls(
            None if start is None else parse_time_bound(start, now_ms),
            None if end is None else parse_time_bound(end, now_ms),
        )


# Timestamp formatting ----------------------------------------------------------


class TsFormatter:
    """RFC 3339 UTC with milliseconds. strftime is the slow part, so the date is
    formatted once per day and the time of day by arithmetic; a repeat of the same
    second (dense, time-sorted files) reuses the whole prefix."""

    __slots__ = ("_second", "_prefix", "_day", "_date")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self._day = -1
        self._date = ""

    def __call__(self, ts_ms: int) -> str:
        second, ms = divmod(ts_ms, 1000)
        if second != self._second:
            day, rest = divmod(second, 86_400)
            if day != self._day:
                self._day = day
                self._date = time.strftime("%Y-%m-%dT", time.gmtime(day * 86_400))
            hours, rest = divmod(rest, 3600)
            minutes, seconds = divmod(rest, 60)
            self._second = second
            self._prefix = f"{self._date}{hours:02d}:{minutes:02d}:{seconds:02d}"
        return f"{self._prefix}.{ms:03d}Z"


# Column formats ----------------------------------------------------------------

#: The SNAP temporal edge list kinds (Higgs Twitter data set): retweet, mention, reply.
SNAP_TYPE_MAP: dict[str, str] = {"RT": "share", "MT": "mention", "RE": "reply"}
COLUMN_FIELDS: tuple[str, ...] = ("event_id", "ts", "platform", "community", "user_id", "type")


@dataclass(frozen=True)
class ColumnFormat:
    """How a delimited line maps onto the event contract.

    ``columns`` maps contract fields to 0-based column indexes; ``user_id`` and
    ``ts`` are required, ``community`` and ``type`` too unless ``community_value`` /
    ``type_value`` give one constant for every line (a message log of "SRC DST
    UNIXTS" lines has neither). A missing ``platform`` column
    uses ``platform``; a missing ``event_id`` column is synthesised as
    ``{id_prefix}-{line number}`` — deterministic, so a replay of the same file sends
    the same ids and downstream de-duplication works.
    """

    columns: dict[str, int]
    delimiter: str | None = None  # None: runs of whitespace
    type_map: dict[str, str] = field(default_factory=dict)
    platform: str = "twitter"
    ts_unit: str = "auto"  # s, ms, or auto (numbers ≥ 1e11 are ms)
    id_prefix: str = "line"
    header: bool = False  # skip the first line
    type_value: str | None = None  # the type of every line (no type column)
    community_value: str | None = None  # the community of every line (no column)

    def __post_init__(self) -> None:
        unknown = set(self.columns) - set(COLUMN_FIELDS)
        if unknown:
            raise ValueError(f"unknown column fields {sorted(unknown)}; known: {COLUMN_FIELDS}")
        constants = {"type": self.type_value, "community": self.community_value}
        both = sorted(name for name, value in constants.items() if value and name in self.columns)
        if both:
            raise ValueError(f"{both} given both as a column and as a constant (--{both[0]})")
        required = {"user_id", "ts"} | {name for name, value in constants.items() if not value}
        missing = required - set(self.columns)
        if missing:
            hint = " (or --type/--community for a constant)" if missing & set(constants) else ""
            raise ValueError(f"column mapping lacks {sorted(missing)}{hint}")
        if self.type_value is not None and self.type_value not in EVENT_TYPES:
            raise ValueError(f"--type {self.type_value!r} is not an event type")
        if any(index < 0 for index in self.columns.values()):
            raise ValueError("column indexes start at 0")
        bad = {v for v in self.type_map.values() if v not in EVENT_TYPES}
        if bad:
            raise ValueError(f"type map targets {sorted(bad)} are not event types")
        if self.ts_unit not in ("s", "ms", "auto"):
            raise ValueError("ts unit must be s, ms or auto")


SNAP_FORMAT = ColumnFormat(
    columns={"user_id": 0, "community": 1, "ts": 2, "type": 3},
    delimiter=None,
    type_map=SNAP_TYPE_MAP,
    platform="twitter",
    ts_unit="s",
    id_prefix="snap",
)


def parse_columns(text: str) -> dict[str, int]:
    """``user_id=0,community=1,ts=2,type=3`` → {field: index}."""
    mapping: dict[str, int] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, index = part.partition("=")
        if not sep or not index.strip().isdigit():
            raise ValueError(f"bad column mapping {part!r}: expected field=INDEX, e.g. ts=2")
        mapping[name.strip()] = int(index)
    return mapping


def parse_type_map(text: str) -> dict[str, str]:
    """``RT=share,MT=mention`` → {source value: event type}."""
    mapping: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        source, sep, target = part.partition("=")
        if not sep or not target.strip():
            raise ValueError(f"bad type mapping {part!r}: expected VALUE=type, e.g. RT=share")
        mapping[source.strip()] = target.strip()
    return mapping


# Line decoders -----------------------------------------------------------------

FUTURE = "future_timestamp"
DEFAULT_LIMITS = Limits()


class ColumnDecoder:
    """Turns one delimited line into contract JSON bytes (or a bad-line reason)."""

    def __init__(
        self,
        fmt: ColumnFormat,
        shift_ms: int = 0,
        now_ms: int | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.fmt = fmt
        self.shift_ms = shift_ms
        self._check = WorkerCheck(now_ms, limits)
        self._fmt_ts = TsFormatter()
        cols = fmt.columns
        self._i_user = cols["user_id"]
        self._i_comm = cols.get("community")
        self._i_ts = cols["ts"]
        self._i_type = cols.get("type")
        self._i_id = cols.get("event_id")
        self._i_platform = cols.get("platform")
        self._width = max(cols.values()) + 1
        self._types = {name: name for name in EVENT_TYPES} | dict(fmt.type_map)
        self._btypes = {k.encode(): v.encode() for k, v in self._types.items()}
        self._bdelim = None if fmt.delimiter is None else fmt.delimiter.encode()
        self._kind = (fmt.type_value or "").encode()
        self._community = (fmt.community_value or "").encode()
        # The fast path writes JSON with bytes formatting; it is taken only for lines
        # whose values need no escaping (alphanumeric ids), others go through orjson.
        self._fast = (
            self._i_id is None
            and self._i_platform is None
            and (self._i_comm is not None or self._community.isalnum())
        )
        prefix = orjson.dumps(fmt.id_prefix)[1:-1].replace(b"%", b"%%")
        platform = orjson.dumps(fmt.platform).replace(b"%", b"%%")
        self._template = (
            b'{"event_id":"'
            + prefix
            + b'-%d","ts":"%s","platform":'
            + platform
            + b',"community":"%s","user_id":"%s","type":"%s"}'
        )
        # The fast path's lines have ASCII letter-and-digit ids (no control character,
        # no reserved community) and a known type; if the platform passes too, only the
        # size, the lengths and the time can make the worker refuse one. A line within
        # those bounds is accepted here; any other gets parse_event's verdict.
        now = format_ts(self._check.now_ms).encode()  # a probe no time rule refuses
        probe = self._template % (1, now, b"c", b"u", b"like")
        self._fast = self._fast and self._check(probe, 0)[3] is None
        self._latest_ms = self._check.now_ms + limits.future_tolerance_ms - shift_ms
        max_age = limits.max_event_age_ms
        self._earliest_ms = -1 if max_age is None else self._check.now_ms - max_age - shift_ms
        self._max_bytes = limits.max_message_bytes
        self._max_length = min(limits.max_id_length, limits.max_community_length)

    def _ts_ms(self, raw: str) -> int:
        unit = self.fmt.ts_unit
        if unit == "s":
            return int(raw) * 1000 if raw.isdigit() else int(float(raw) * 1000)
        if unit == "ms":
            return int(raw) if raw.isdigit() else int(float(raw))
        return parse_timestamp_ms(int(raw) if raw.isdigit() else float(raw))

    def decode_bytes(self, raw: bytes, line_no: int) -> Item:
        """:meth:`decode` for a raw line; about three times faster for plain lines."""
        if self._fast:
            parts = raw.split(self._bdelim)
            if len(parts) >= self._width:
                user = parts[self._i_user].strip()
                i_comm, i_type = self._i_comm, self._i_type
                community = self._community if i_comm is None else parts[i_comm].strip()
                kind = self._kind if i_type is None else self._btypes.get(parts[i_type].strip())
                stamp = parts[self._i_ts].strip()
                if kind is not None and user.isalnum() and community.isalnum() and stamp.isdigit():
                    number = int(stamp)
                    unit = self.fmt.ts_unit
                    ts_ms = (
                        number * 1000
                        if unit == "s" or (unit == "auto" and number < 100_000_000_000)
                        else number
                    )
                    value = self._template % (
                        line_no,
                        self._fmt_ts(ts_ms + self.shift_ms).encode(),
                        community,
                        user,
                        kind,
                    )
                    if (
                        self._earliest_ms <= ts_ms <= self._latest_ms
                        and len(value) <= self._max_bytes
                        and len(user) <= self._max_length
                        and len(community) <= self._max_length
                    ):
                        return value, ts_ms, None, None
                    return self._check(value, ts_ms)  # near a limit: the full verdict
        try:
            return self.decode(raw.decode(), line_no)
        except UnicodeDecodeError:
            return b"", -1, None, "bad_field"

    def decode(self, line: str, line_no: int) -> Item:
        """Return (value, ts_ms, None, None), or (b"", -1, None, reason) for a bad line."""
        parts = line.split(self.fmt.delimiter)
        if len(parts) < self._width:
            return b"", -1, None, "missing_field"
        i_type, i_comm = self._i_type, self._i_comm
        kind = self.fmt.type_value if i_type is None else self._types.get(parts[i_type].strip())
        if kind is None:
            return b"", -1, None, "bad_type"
        try:
            ts_ms = self._ts_ms(parts[self._i_ts].strip())
        except (ValueError, OverflowError, InvalidEvent):
            return b"", -1, None, "bad_timestamp"
        if ts_ms < 0:
            return b"", -1, None, "bad_timestamp"
        user = parts[self._i_user].strip()
        community = self.fmt.community_value or "" if i_comm is None else parts[i_comm].strip()
        if not user or not community:
            return b"", -1, None, "bad_field"
        event_id = (
            parts[self._i_id].strip()
            if self._i_id is not None
            else f"{self.fmt.id_prefix}-{line_no}"
        )
        platform = (
            parts[self._i_platform].strip() if self._i_platform is not None else self.fmt.platform
        )
        value = orjson.dumps(
            {
                "event_id": event_id,
                "ts": self._fmt_ts(ts_ms + self.shift_ms),
                "platform": platform,
                "community": community,
                "user_id": user,
                "type": kind,
            }
        )
        return self._check(value, ts_ms)


class WorkerCheck:
    """The worker's own judgement of a message about to be sent: the function the
    ingest stage calls (:func:`streams.events.parse_event`), with its limits and
    future tolerance, judged at ``now_ms`` (the replay's start; default: now). What
    it refuses would reach the worker's DLQ anyway, so the replay sends it there."""

    def __init__(self, now_ms: int | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
        self.now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self.limits = limits

    def __call__(self, value: bytes, ts_ms: int) -> Item:
        verdict = judge(value, self.now_ms, self.limits)
        if isinstance(verdict, InvalidEvent):
            # a future line keeps its time: outside the replayed range it is skipped
            return b"", ts_ms if verdict.reason == FUTURE else -1, None, verdict.reason
        return value, ts_ms, None, None


class JsonDecoder:
    """JSONL in the event contract, judged by the worker's rules (:class:`WorkerCheck`)
    so refused lines reach the DLQ with a reason; good lines go out byte-for-byte
    unless timestamps are shifted (then the shifted ``ts`` is what is judged)."""

    def __init__(
        self, shift_ms: int = 0, now_ms: int | None = None, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self.shift_ms = shift_ms
        self._check = WorkerCheck(now_ms, limits)
        self._fmt_ts = TsFormatter()

    def decode(self, line: bytes) -> Item:
        check = self._check
        event = judge(line, check.now_ms - self.shift_ms, check.limits)
        if isinstance(event, InvalidEvent):
            ts_ms = -1
            if event.reason == FUTURE:
                ts_ms = parse_timestamp_ms(orjson.loads(line)["ts"])
            return b"", ts_ms, None, event.reason
        if self.shift_ms:
            obj = orjson.loads(line)
            obj["ts"] = self._fmt_ts(event.ts_ms + self.shift_ms)
            return orjson.dumps(obj), event.ts_ms, None, None
        return line, event.ts_ms, None, None


# Files -------------------------------------------------------------------------


def _guarded(decode: Callable[..., Item], *args: Any) -> Item:
    """A line that breaks a decoder in an unforeseen way goes to the DLQ as
    ``internal_error``: one line must not stop a replay."""
    try:
        return decode(*args)
    except Exception as exc:  # noqa: BLE001 - no line may stop a replay
        log.warning("replay: unexpected %s on a line, sent to the DLQ", type(exc).__name__)
        return b"", -1, None, "internal_error"


FILE_FORMATS = ("jsonl", "snap", "csv")


def open_binary(path: str | Path, stdin: IO[bytes] | None = None) -> tuple[IO[bytes], IO[bytes]]:
    """(reader, raw file): gzip is detected by magic bytes; progress uses the raw
    file's position, which for .gz is the compressed offset (and the size too).
    ``-`` is standard input (gzip too): ``stdin`` if given, else ``sys.stdin``."""
    if str(path) == "-":
        raw: IO[bytes] = sys.stdin.buffer if stdin is None else stdin
    else:
        raw = open(path, "rb")  # noqa: SIM115 - closed by FileSource
    magic = raw.peek(2)[:2] if isinstance(raw, io.BufferedReader) else b""
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw  # type: ignore[return-value]
    return raw, raw


class FileFormatError(ValueError):
    """A file that is not in the format asked for: one error, naming the line."""


class FileSource:
    """Iterates a file's lines as :data:`Item` tuples, filtered by a time range.

    ``path`` ``-`` is standard input. Lines the worker would refuse are yielded too
    (with a reason) so the caller sends them to the DLQ; ``line_no`` is the 1-based
    number of the line just yielded. Lines outside the time range (future ones
    included) are skipped and counted in ``skipped``; blank lines are ignored. A
    JSONL file whose first line is not JSON is not JSONL at all (a csv or snap file
    without a column mapping): that stops the read with one :class:`FileFormatError`
    instead of a DLQ full of ``not_json``.
    """

    def __init__(
        self,
        path: str | Path,
        fmt: str = "jsonl",
        columns: ColumnFormat | None = None,
        time_range: TimeRange = TimeRange(),
        shift_ms: int = 0,
        now_ms: int | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        if fmt not in FILE_FORMATS:
            raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FILE_FORMATS)}")
        if fmt == "csv" and columns is None:
            raise ValueError("--format csv needs --columns, e.g. user_id=0,community=1,ts=2,type=3")
        self.path = Path(path)
        self.stdin = str(path) == "-"
        self.name = "<stdin>" if self.stdin else str(path)
        self.fmt = fmt
        self.columns = SNAP_FORMAT if fmt == "snap" and columns is None else columns
        self.time_range = time_range
        self.shift_ms = shift_ms
        self.now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self.limits = limits
        self.line_no = 0
        self.skipped = 0
        self.size = 0 if self.stdin else self.path.stat().st_size
        self._raw: IO[bytes] | None = None

    @property
    def position(self) -> int:
        """Bytes of the (possibly compressed) file consumed so far."""
        if self.stdin:
            return 0
        if self._raw is None or self._raw.closed:
            return self.size if self.line_no else 0
        return self._raw.tell()

    def __iter__(self) -> Iterator[Item]:
        return self.read_from(None)

    def read_from(self, stdin: IO[bytes] | None) -> Iterator[Item]:
        """The items, standard input read from ``stdin`` (see commands.stdin_feed)."""
        reader, self._raw = open_binary(self.path, stdin)
        try:
            if self.fmt == "jsonl":
                decoder = JsonDecoder(self.shift_ms, self.now_ms, self.limits)
                yield from self._lines(_jsonl_lines(reader, decoder, self.name))
            else:
                assert self.columns is not None
                yield from self._lines(_column_lines(reader, self.columns, self))
        finally:
            reader.close()
            self._raw.close()

    def _lines(self, numbered: Iterator[tuple[int, bytes, Item]]) -> Iterator[Item]:
        """Range filter and line numbers over (line number, line, decoded item)."""
        contains = self.time_range.contains
        unbounded = self.time_range == TimeRange()
        line_no = 0
        for line_no, line, item in numbered:
            reason = item[3]
            if reason is not None and (reason != FUTURE or unbounded or contains(item[1])):
                self.line_no = line_no
                yield line, line_no, None, reason
            elif reason is None and (unbounded or contains(item[1])):
                self.line_no = line_no
                yield item
            else:
                self.skipped += 1
        self.line_no = line_no

    def max_ts_ms(self) -> int | None:
        """The newest event time in the file (a full pass): where the range ends when
        ``--shift-to-now`` is given without ``--to``."""
        if self.stdin:
            raise ValueError("--shift-to-now with --file - needs --to (stdin is read once)")
        newest: int | None = None
        # only the newest time is wanted: no judgement by the clock (a 2012 file is
        # too old, unshifted, for the worker; shifted to now it is not)
        untimed = dataclasses.replace(self.limits, future_tolerance_ms=2**62, max_event_age_ms=None)
        probe = FileSource(
            self.path, self.fmt, self.columns, self.time_range, 0, self.now_ms, untimed
        )
        for _value, ts_ms, _key, reason in probe:
            if reason is None and (newest is None or ts_ms > newest):
                newest = ts_ms
        return newest


def _jsonl_lines(
    reader: IO[bytes], decoder: JsonDecoder, name: str
) -> Iterator[tuple[int, bytes, Item]]:
    decode = decoder.decode
    first = True
    for line_no, raw_line in enumerate(reader, start=1):
        line = raw_line.rstrip(b"\r\n")
        if not line.strip():
            continue
        item = _guarded(decode, line)
        if first and item[3] == "not_json":
            raise FileFormatError(
                f"{name} line {line_no} is not JSON ({line[:60]!r}): a JSONL file of events "
                "was expected; for delimited files give --format csv --columns "
                "user_id=0,ts=1,... (with --type/--community for constants) or --format snap"
            )
        first = False
        yield line_no, line, item


def _column_lines(
    reader: IO[bytes], fmt: ColumnFormat, source: FileSource
) -> Iterator[tuple[int, bytes, Item]]:
    decode = ColumnDecoder(fmt, source.shift_ms, source.now_ms, source.limits).decode_bytes
    for line_no, raw_line in enumerate(reader, start=1):
        if line_no == 1 and fmt.header:
            continue
        item = _guarded(decode, raw_line, line_no)
        line = raw_line
        if item[3] is not None:
            line = raw_line.rstrip(b"\r\n")
            if not line.strip():
                continue
        yield line_no, line, item


# Topics ------------------------------------------------------------------------


@dataclass
class PartitionSpan:
    """Offsets [start, stop) of one partition that the read plan selects."""

    partition: int
    start: int
    stop: int

    @property
    def count(self) -> int:
        return max(0, self.stop - self.start)


def spans_from_offsets(
    partitions: list[int],
    beginning: dict[int, int],
    end: dict[int, int],
    start_at: dict[int, int | None],
    stop_at: dict[int, int | None],
) -> list[PartitionSpan]:
    """Combine offset look-ups into spans. ``offsets_for_times`` answers None when no
    record is at or after the time: the span then starts (or stops) at the end."""
    spans = []
    for p in partitions:
        start = start_at.get(p, beginning[p])
        stop = stop_at.get(p, end[p])
        spans.append(
            PartitionSpan(
                p,
                end[p] if start is None else start,
                end[p] if stop is None else min(stop, end[p]),
            )
        )
    return spans


#: A record read from a topic and judged by the worker's rules: (the event, or None
#: for a record the worker would refuse; the refusal reason or None; the Kafka record).
Decoded = tuple[Event | None, str | None, Any]


@dataclass
class TopicTally:
    """What a topic read saw, by event time: the summary of every topic command."""

    read: int = 0
    in_range: int = 0
    before: int = 0  # valid events older than the range
    after: int = 0  # valid events at or after its end
    invalid: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        return (
            f"{self.read} records read: {self.in_range} events in the range, "
            f"{self.before + self.after} outside it ({self.before} before, {self.after} after), "
            f"{sum(self.invalid.values())} refused by the worker's rules" + by_reason(self.invalid)
        )


def by_reason(counts: Counter[str]) -> str:
    """`` (not_json 3, bad_type 1)``, most frequent first; empty when there are none."""
    text = ", ".join(f"{reason} {n}" for reason, n in counts.most_common())
    return f" ({text})" if text else ""


class TopicSource:
    """Reads a topic the way the worker does, and selects a range by *event* time.

    Kafka record timestamps are produce time, append time, event time or a mix, and
    a late event can sit anywhere in a partition, so they cannot tell where a range
    of event times ends: every partition is read up to its end offset taken at start
    (``stop_offsets`` lowers that, e.g. to a group's committed offsets) — which also
    makes a replay into its own source topic terminate. Each value is parsed with
    the worker's function and limits (:func:`streams.events.parse_event`, future
    tolerance included, judged at ``now_ms``); the event time decides whether it is
    in the range.

    Record timestamps narrow the read in one case only, when the caller says they
    are safe (``trust_timestamps``: no record is stamped earlier than its event time
    minus the future tolerance — true for produce time, append time and event time
    by producers that send no future events): each partition then starts at the
    first record stamped at or after ``--from`` minus the tolerance, since every
    record before it has an event time before ``--from``.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        time_range: TimeRange,
        *,
        now_ms: int,
        limits: Limits = DEFAULT_LIMITS,
        trust_timestamps: bool = False,
        stop_offsets: dict[int, int] | None = None,
        transform: Callable[[Any], Any] | None = None,
        max_records: int = 20_000,
    ) -> None:
        self.bootstrap = bootstrap
        #: records per fetch: a reader that must react quickly (replay's Ctrl-C) asks fewer
        self.max_records = max_records
        #: the worker's input mapping (EM_INPUT_MAPPING), applied before validation
        self.transform = transform
        self.topic = topic
        self.time_range = time_range
        self.now_ms = now_ms
        self.limits = limits
        self.trust_timestamps = trust_timestamps
        self.stop_offsets = stop_offsets
        self.spans: list[PartitionSpan] = []
        self.tally = TopicTally()

    @property
    def total(self) -> int:
        """Records the plan reads: the progress bar's 100 %."""
        return sum(span.count for span in self.spans)

    @property
    def read(self) -> int:
        return self.tally.read

    @property
    def skipped(self) -> int:
        return self.tally.before + self.tally.after

    async def batches(
        self, ordered: bool = False, max_buffered: int = 10_000
    ) -> AsyncGenerator[list[Decoded], None]:
        """Yield lists of :data:`Decoded`: the events in the range and every refused
        record (the caller dead-letters or counts them); events outside the range
        are only counted.

        Unordered (the default): in consumption order, a chunk of one partition at a
        time. ``ordered`` (for paced replays): in event-time order across partitions,
        by a :class:`~streams.merge.TimestampMerge` (within one partition, partition
        order); a partition holding more than ``max_buffered`` records is paused
        until the merge has drained it.
        """
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
            **client_kwargs(),
        )
        await start_or_close(consumer)
        try:
            active = await self._plan(consumer)
            if not active:
                return
            if ordered:
                reader = self._read_ordered(consumer, active, max_buffered)
            else:
                reader = self._read(consumer, active)
            async for batch in reader:
                yield batch
        finally:
            await consumer.stop()

    async def _plan(self, consumer: Any) -> dict[Any, int]:
        """Compute the spans, assign and seek; return {partition: stop offset} to read."""
        from aiokafka import TopicPartition

        # first without naming the topic: a metadata request naming a missing topic
        # creates it on brokers with auto-creation on (a typo would read "0 events")
        await require_topic(self.bootstrap, self.topic)
        partitions = sorted(await consumer._client._wait_on_metadata(self.topic) or [])
        tps = [TopicPartition(self.topic, p) for p in partitions]
        consumer.assign(tps)
        beginning = {tp.partition: o for tp, o in (await consumer.beginning_offsets(tps)).items()}
        end = {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
        start_at: dict[int, int | None] = {}
        if self.trust_timestamps and self.time_range.start_ms is not None:
            earliest = self.time_range.start_ms - self.limits.future_tolerance_ms
            start_at = await self._offsets_at(consumer, tps, earliest)
        stop_at: dict[int, int | None] = {}
        if self.stop_offsets is not None:  # a partition never committed: nothing of it
            stop_at = {p: self.stop_offsets.get(p, beginning[p]) for p in partitions}
        self.spans = spans_from_offsets(partitions, beginning, end, start_at, stop_at)
        active = {tp: span.stop for span, tp in zip(self.spans, tps, strict=True) if span.count > 0}
        consumer.assign(list(active))
        for span, tp in zip(self.spans, tps, strict=True):
            if tp in active:
                consumer.seek(tp, span.start)
        return active

    async def _read(self, consumer: Any, active: dict[Any, int]) -> AsyncIterator[list[Decoded]]:
        while active:
            fetched = await consumer.getmany(*active, timeout_ms=1000, max_records=self.max_records)
            for _tp, chosen in self._select(consumer, active, fetched):
                if chosen:
                    yield chosen
            await self._drop_ended(consumer, active)

    async def _read_ordered(
        self, consumer: Any, active: dict[Any, int], max_buffered: int
    ) -> AsyncIterator[list[Decoded]]:
        max_buffered = max(1, max_buffered)
        merge: TimestampMerge[Decoded] = TimestampMerge(
            (tp.partition for tp in active), _event_time
        )
        paused: set[Any] = set()
        while active:
            fetching = [tp for tp in active if tp not in paused] or list(active)
            fetched = await consumer.getmany(
                *fetching, timeout_ms=1000, max_records=self.max_records
            )
            for tp, chosen in self._select(consumer, active, fetched):
                if chosen:
                    merge.add(tp.partition, chosen)
                if tp not in active:
                    merge.finish(tp.partition)
            for tp in await self._drop_ended(consumer, active):
                merge.finish(tp.partition)
            ready = merge.pop_ready()
            if ready:
                yield ready
            # Bounded buffering: a partition far ahead of the others waits for them.
            for tp in active:
                full = merge.buffered(tp.partition) >= max_buffered
                if full and tp not in paused:
                    consumer.pause(tp)
                    paused.add(tp)
                elif not full and tp in paused:
                    consumer.resume(tp)
                    paused.discard(tp)
        rest = merge.pop_ready()  # every partition is finished: the buffers drain
        if rest:
            yield rest

    def _select(
        self, consumer: Any, active: dict[Any, int], fetched: dict[Any, list[Any]]
    ) -> Iterator[tuple[Any, list[Decoded]]]:
        """(partition, decoded records to hand on) per fetched chunk; a partition that
        has reached its stop is removed from ``active`` (and paused) before it is
        yielded."""
        tally, now_ms, limits = self.tally, self.now_ms, self.limits
        start = self.time_range.start_ms
        end = self.time_range.end_ms
        for tp, records in fetched.items():
            if tp not in active:
                continue
            stop = active[tp]
            chosen: list[Decoded] = []
            for record in records:
                if record.offset >= stop:
                    break
                tally.read += 1
                event = judge(record.value, now_ms, limits, self.transform)
                if isinstance(event, InvalidEvent):
                    tally.invalid[event.reason] += 1
                    chosen.append((None, event.reason, record))
                    continue
                if start is not None and event.ts_ms < start:
                    tally.before += 1
                elif end is not None and event.ts_ms >= end:
                    tally.after += 1
                else:
                    tally.in_range += 1
                    chosen.append((event, None, record))
            if records and records[-1].offset >= stop - 1:
                del active[tp]
                consumer.pause(tp)
            yield tp, chosen

    @staticmethod
    async def _drop_ended(consumer: Any, active: dict[Any, int]) -> list[Any]:
        """Remove (and return) the partitions whose position reached the stop: a span
        may end on offsets that hold no record (transaction markers)."""
        ended = []
        for tp in list(active):
            if await consumer.position(tp) >= active[tp]:
                del active[tp]
                ended.append(tp)
        return ended

    @staticmethod
    async def _offsets_at(
        consumer: Any, tps: list[Any], ts_ms: int | None
    ) -> dict[int, int | None]:
        if ts_ms is None:
            return {}
        found = await consumer.offsets_for_times({tp: ts_ms for tp in tps})
        return {tp.partition: (None if meta is None else meta.offset) for tp, meta in found.items()}


def _event_time(item: Decoded) -> int:
    """Merge key: the event time; a refused record goes out at once."""
    return -1 if item[0] is None else item[0].ts_ms
