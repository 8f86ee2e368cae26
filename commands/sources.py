"""Where replayed events come from: time bounds, files (JSONL, CSV, SNAP) and topics.

Everything here except :class:`TopicSource` is pure (no Kafka) so that formats,
column mappings and time ranges are unit-tested without a broker. File readers are
written for speed: ``replay --speed max`` must push more than 100k events/s from
one Python process, so a line costs a split, a dict and one ``orjson.dumps`` —
no dataclass per event, no per-line datetime arithmetic (timestamps are formatted
through a one-second cache; SNAP files are sorted by time, so it nearly always hits).
"""

from __future__ import annotations

import gzip
import io
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from agents.kafka_security import client_kwargs
from streams.durations import parse_duration_ms
from streams.events import EVENT_TYPES, InvalidEvent, parse_timestamp_ms, validate

#: A record ready to send: (value bytes, event time ms, key) — or, for a bad line,
#: (original bytes, -1, None) with ``reason`` set. Tuples, not objects: they are
#: made a million times per run.
Item = tuple[bytes, int, bytes | None, str | None]

_RELATIVE = re.compile(r"^\s*([+-])\s*(\d+\s*(?:ms|s|m|h|d|w))\s*$")
_NUMBER = re.compile(r"^\s*\d+(\.\d+)?\s*$")
# Checks in the contract that do not depend on the clock: future timestamps are the
# worker's business (it knows "now"), a replay of history must not judge them.
_NO_FUTURE_CHECK_MS = 2**62


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

    ``columns`` maps contract fields to 0-based column indexes; ``user_id``,
    ``community``, ``ts`` and ``type`` are required. A missing ``platform`` column
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

    def __post_init__(self) -> None:
        unknown = set(self.columns) - set(COLUMN_FIELDS)
        if unknown:
            raise ValueError(f"unknown column fields {sorted(unknown)}; known: {COLUMN_FIELDS}")
        missing = {"user_id", "community", "ts", "type"} - set(self.columns)
        if missing:
            raise ValueError(f"column mapping lacks {sorted(missing)}")
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


class ColumnDecoder:
    """Turns one delimited line into contract JSON bytes (or a bad-line reason)."""

    def __init__(self, fmt: ColumnFormat, shift_ms: int = 0) -> None:
        self.fmt = fmt
        self.shift_ms = shift_ms
        self._fmt_ts = TsFormatter()
        cols = fmt.columns
        self._i_user = cols["user_id"]
        self._i_comm = cols["community"]
        self._i_ts = cols["ts"]
        self._i_type = cols["type"]
        self._i_id = cols.get("event_id")
        self._i_platform = cols.get("platform")
        self._width = max(cols.values()) + 1
        self._types = {name: name for name in EVENT_TYPES} | dict(fmt.type_map)
        self._btypes = {k.encode(): v.encode() for k, v in self._types.items()}
        self._bdelim = None if fmt.delimiter is None else fmt.delimiter.encode()
        # The fast path writes JSON with bytes formatting; it is taken only for lines
        # whose values need no escaping (alphanumeric ids), others go through orjson.
        self._fast = self._i_id is None and self._i_platform is None
        prefix = orjson.dumps(fmt.id_prefix)[1:-1].replace(b"%", b"%%")
        platform = orjson.dumps(fmt.platform).replace(b"%", b"%%")
        self._template = (
            b'{"event_id":"'
            + prefix
            + b'-%d","ts":"%s","platform":'
            + platform
            + b',"community":"%s","user_id":"%s","type":"%s"}'
        )

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
                community = parts[self._i_comm].strip()
                kind = self._btypes.get(parts[self._i_type].strip())
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
                    return value, ts_ms, None, None
        try:
            return self.decode(raw.decode(), line_no)
        except UnicodeDecodeError:
            return b"", -1, None, "bad_field"

    def decode(self, line: str, line_no: int) -> Item:
        """Return (value, ts_ms, None, None), or (b"", -1, None, reason) for a bad line."""
        parts = line.split(self.fmt.delimiter)
        if len(parts) < self._width:
            return b"", -1, None, "missing_field"
        kind = self._types.get(parts[self._i_type].strip())
        if kind is None:
            return b"", -1, None, "bad_type"
        try:
            ts_ms = self._ts_ms(parts[self._i_ts].strip())
        except (ValueError, OverflowError, InvalidEvent):
            return b"", -1, None, "bad_timestamp"
        if ts_ms < 0:
            return b"", -1, None, "bad_timestamp"
        user = parts[self._i_user].strip()
        community = parts[self._i_comm].strip()
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
        return value, ts_ms, None, None


class JsonDecoder:
    """JSONL in the event contract: checked (all but the clock-dependent future check)
    so bad lines reach the DLQ with a reason; good lines go out byte-for-byte unless
    timestamps are shifted."""

    def __init__(self, shift_ms: int = 0) -> None:
        self.shift_ms = shift_ms
        self._fmt_ts = TsFormatter()

    def decode(self, line: bytes) -> Item:
        try:
            obj: Any = orjson.loads(line)
        except orjson.JSONDecodeError:
            return b"", -1, None, "not_json"
        try:
            event = validate(obj, _NO_FUTURE_CHECK_MS)
        except InvalidEvent as exc:
            return b"", -1, None, exc.reason
        if self.shift_ms:
            obj["ts"] = self._fmt_ts(event.ts_ms + self.shift_ms)
            return orjson.dumps(obj), event.ts_ms, None, None
        return line, event.ts_ms, None, None


# Files -------------------------------------------------------------------------

FILE_FORMATS = ("jsonl", "snap", "csv")


def open_binary(path: str | Path) -> tuple[IO[bytes], IO[bytes]]:
    """(reader, raw file): gzip is detected by magic bytes; progress uses the raw
    file's position, which for .gz is the compressed offset (and the size too)."""
    raw = open(path, "rb")  # noqa: SIM115 - closed by FileSource
    magic = raw.peek(2)[:2] if isinstance(raw, io.BufferedReader) else b""
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw  # type: ignore[return-value]
    return raw, raw


class FileSource:
    """Iterates a file's lines as :data:`Item` tuples, filtered by a time range.

    Bad lines are yielded too (with a reason) so the caller sends them to the DLQ;
    ``line_no`` is the 1-based number of the line just yielded. Lines outside the
    time range are skipped and counted in ``skipped``; blank lines are ignored.
    """

    def __init__(
        self,
        path: str | Path,
        fmt: str = "jsonl",
        columns: ColumnFormat | None = None,
        time_range: TimeRange = TimeRange(),
        shift_ms: int = 0,
    ) -> None:
        if fmt not in FILE_FORMATS:
            raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FILE_FORMATS)}")
        if fmt == "csv" and columns is None:
            raise ValueError("--format csv needs --columns, e.g. user_id=0,community=1,ts=2,type=3")
        self.path = Path(path)
        self.fmt = fmt
        self.columns = SNAP_FORMAT if fmt == "snap" and columns is None else columns
        self.time_range = time_range
        self.shift_ms = shift_ms
        self.line_no = 0
        self.skipped = 0
        self.size = self.path.stat().st_size
        self._raw: IO[bytes] | None = None

    @property
    def position(self) -> int:
        """Bytes of the (possibly compressed) file consumed so far."""
        if self._raw is None or self._raw.closed:
            return self.size if self.line_no else 0
        return self._raw.tell()

    def __iter__(self) -> Iterator[Item]:
        reader, self._raw = open_binary(self.path)
        try:
            if self.fmt == "jsonl":
                yield from self._jsonl(reader)
            else:
                assert self.columns is not None
                yield from self._columns(reader, self.columns)
        finally:
            reader.close()
            self._raw.close()

    def _jsonl(self, reader: IO[bytes]) -> Iterator[Item]:
        decode = JsonDecoder(self.shift_ms).decode
        contains = self.time_range.contains
        unbounded = self.time_range == TimeRange()
        line_no = 0
        for raw_line in reader:
            line_no += 1
            line = raw_line.rstrip(b"\r\n")
            if not line.strip():
                continue
            item = decode(line)
            if item[3] is not None:
                self.line_no = line_no
                yield line, -1, None, item[3]
            elif unbounded or contains(item[1]):
                self.line_no = line_no
                yield item
            else:
                self.skipped += 1
        self.line_no = line_no

    def _columns(self, reader: IO[bytes], fmt: ColumnFormat) -> Iterator[Item]:
        decode = ColumnDecoder(fmt, self.shift_ms).decode_bytes
        contains = self.time_range.contains
        unbounded = self.time_range == TimeRange()
        line_no = 0
        for raw_line in reader:
            line_no += 1
            if line_no == 1 and fmt.header:
                continue
            item = decode(raw_line, line_no)
            if item[3] is not None:
                line = raw_line.rstrip(b"\r\n")
                if not line.strip():
                    continue
                self.line_no = line_no
                yield line, -1, None, item[3]
            elif unbounded or contains(item[1]):
                self.line_no = line_no
                yield item
            else:
                self.skipped += 1
        self.line_no = line_no

    def max_ts_ms(self) -> int | None:
        """The newest event time in the file (a full pass): where the range ends when
        ``--shift-to-now`` is given without ``--to``."""
        newest: int | None = None
        probe = FileSource(self.path, self.fmt, self.columns, self.time_range, 0)
        for _value, ts_ms, _key, reason in probe:
            if reason is None and (newest is None or ts_ms > newest):
                newest = ts_ms
        return newest


# Topics ------------------------------------------------------------------------


@dataclass
class PartitionSpan:
    """Offsets [start, stop) of one partition that the time range selects."""

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


class TopicSource:
    """Reads the records of a time range from every partition of a topic.

    Each partition is read from the first offset whose timestamp is ≥ ``--from``
    (``offsets_for_times``; no record at or after ``--from`` sits before it), and
    records are kept when their timestamp is in [from, to). Event-time timestamps are
    not monotonic within a partition, so reading does not stop at the first offset
    whose timestamp is ≥ ``--to``: it goes on until a record is ``lateness`` past
    ``--to`` (a late event more out of order than that is left out), and never beyond
    the end offset seen at start — so a replay into its own source topic terminates.
    """

    def __init__(
        self, bootstrap: str, topic: str, time_range: TimeRange, lateness_ms: int = 300_000
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.time_range = time_range
        self.lateness_ms = lateness_ms
        self.spans: list[PartitionSpan] = []
        self.skipped = 0
        self.read = 0

    @property
    def total(self) -> int:
        """Records between the --from and --to offsets: the progress bar's 100 %."""
        return sum(span.count for span in self.spans)

    async def batches(
        self, ordered: bool = False, max_buffered: int = 10_000
    ) -> AsyncIterator[list[Any]]:
        """Yield lists of ConsumerRecords (key, value, timestamp, headers...).

        Unordered (the default, for ``--speed max``): in consumption order, a chunk of
        one partition at a time. ``ordered`` (for paced replays): in timestamp order
        across partitions, by a :class:`~streams.merge.TimestampMerge` of the
        partitions (within one partition, partition order); a partition holding more
        than ``max_buffered`` records is paused until the merge has drained it.
        """
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
            **client_kwargs(),
        )
        await consumer.start()
        try:
            partitions = sorted(await consumer._client._wait_on_metadata(self.topic) or [])
            if not partitions:
                raise ValueError(f"topic {self.topic!r} does not exist or has no partitions")
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            beginning = {
                tp.partition: o for tp, o in (await consumer.beginning_offsets(tps)).items()
            }
            end = {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
            start_at = await self._offsets_at(consumer, tps, self.time_range.start_ms)
            stop_at = await self._offsets_at(consumer, tps, self.time_range.end_ms)
            self.spans = spans_from_offsets(partitions, beginning, end, start_at, stop_at)
            starts = {span.partition: span.start for span in self.spans}
            # (soft stop: the --to offset, hard stop: the end offset at start)
            active = {
                tp: (span.stop, end[tp.partition])
                for span, tp in zip(self.spans, tps, strict=True)
                if span.start < end[tp.partition]
            }
            if not active:
                return
            consumer.assign(list(active))
            for tp in active:
                consumer.seek(tp, starts[tp.partition])
            if ordered:
                reader = self._read_ordered(consumer, active, max_buffered)
            else:
                reader = self._read(consumer, active)
            async for batch in reader:
                yield batch
        finally:
            await consumer.stop()

    async def _read(
        self, consumer: Any, active: dict[Any, tuple[int, int]]
    ) -> AsyncIterator[list[Any]]:
        while active:
            fetched = await consumer.getmany(*active, timeout_ms=1000, max_records=20000)
            for _tp, chosen in self._select(consumer, active, fetched):
                if chosen:
                    yield chosen
            await self._drop_ended(consumer, active)

    async def _read_ordered(
        self, consumer: Any, active: dict[Any, tuple[int, int]], max_buffered: int
    ) -> AsyncIterator[list[Any]]:
        from streams.merge import TimestampMerge

        max_buffered = max(1, max_buffered)
        merge: TimestampMerge[Any] = TimestampMerge(
            (tp.partition for tp in active), _record_timestamp
        )
        paused: set[Any] = set()
        while active:
            fetching = [tp for tp in active if tp not in paused] or list(active)
            fetched = await consumer.getmany(*fetching, timeout_ms=1000, max_records=20000)
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
        self, consumer: Any, active: dict[Any, tuple[int, int]], fetched: dict[Any, list[Any]]
    ) -> Iterator[tuple[Any, list[Any]]]:
        """(partition, records in the range) per fetched chunk; a partition that has
        reached its stop is removed from ``active`` (and paused) before it is yielded."""
        contains = self.time_range.contains
        cutoff = (
            None if self.time_range.end_ms is None else self.time_range.end_ms + self.lateness_ms
        )
        for tp, records in fetched.items():
            if tp not in active:
                continue
            soft, hard = active[tp]
            chosen, finished = [], False
            for record in records:
                if record.offset >= hard or (
                    cutoff is not None and record.offset >= soft and record.timestamp >= cutoff
                ):
                    finished = True
                    break
                self.read += 1
                if contains(record.timestamp):
                    chosen.append(record)
                else:
                    self.skipped += 1
            if finished or (records and records[-1].offset >= hard - 1):
                del active[tp]
                consumer.pause(tp)
            yield tp, chosen

    @staticmethod
    async def _drop_ended(consumer: Any, active: dict[Any, tuple[int, int]]) -> list[Any]:
        """Remove (and return) the partitions whose position reached the hard stop: a
        span may end on offsets that hold no record (transaction markers)."""
        ended = []
        for tp in list(active):
            if await consumer.position(tp) >= active[tp][1]:
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


def _record_timestamp(record: Any) -> int:
    return int(record.timestamp)
