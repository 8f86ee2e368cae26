"""``engagement-monitor replay``: copy the events of a time range into a topic.

The source is a topic (``--from-topic``; every partition is read to its end offset
and the range is chosen by event time, whatever the record timestamps — see
:class:`commands.sources.TopicSource`) or a file (``--file``, ``-`` for stdin: JSONL
in the event contract, the SNAP temporal edge list, or CSV/whitespace columns with a
mapping; ``.gz`` is read as is). Every record sent is stamped with its event time
(moved by ``--shift-to-now``, which makes the range end now). ``--speed`` paces the
copy (1: as fast as it happened, 10: ten times faster, ``max``: no pacing).

Every line or record is judged by the worker's own function and limits (future
tolerance included); what the worker would refuse never stops a replay: it is
counted and goes to the DLQ topic with its original bytes and ``reason``/``source``
headers. Ctrl-C stops cleanly: what was appended is flushed and a summary says what
was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from agents.dead_letters import cut
from agents.kafka_out import BatchWriter
from agents.kafka_security import failure
from commands.interrupt import STOP_FLUSH_SECONDS, run_stoppable, unless_stopped
from commands.progress import Progress
from commands.sources import (
    DEFAULT_LIMITS,
    FILE_FORMATS,
    SNAP_FORMAT,
    ColumnFormat,
    FileFormatError,
    FileSource,
    Item,
    TimeRange,
    TopicSource,
    TsFormatter,
    by_reason,
    parse_columns,
    parse_type_map,
)
from commands.stdin_feed import StdinFeed
from streams import settings
from streams.durations import describe_ms
from streams.events import EVENT_TYPES, Limits

T = TypeVar("T")

#: events between progress updates / event-loop yields in the unpaced file loop: the
#: signal handler runs only when the loop gets control, so this bounds how long a
#: Ctrl-C waits (1,024 events: ~0.15 s at load 7 on 2 cores; 4,096 took 0.7 s)
_YIELD_EVERY = 1024
#: records per fetch of a --from-topic source: each fetch is judged and sent before
#: the loop gets control again (20,000, the readers' default, took 1.2 s at load 7;
#: 2,000 still 0.35 s). Throughput at 1,000 was within the noise of 20,000.
_TOPIC_CHUNK = 1000
#: longest single sleep of a paced wait: how often its progress note is refreshed
#: (a stop request wakes the sleep at once)
_PACE_SLICE = 0.2
#: the worker's settings a replay needs: where to write, and the rules it judges by
SETTINGS = (
    "kafka_bootstrap_servers",
    "input_topic",
    "dlq_topic",
    "input_mapping",
    "future_tolerance",
    "max_event_age",
    "max_message_bytes",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-topic", metavar="TOPIC", help="read the range from this topic")
    source.add_argument(
        "--file", metavar="FILE", help="read events from a file (.gz too; - for stdin)"
    )
    parser.add_argument(
        "--from",
        dest="start",
        metavar="TIME",
        help="start of the range (inclusive): RFC 3339, epoch s, -2h, now",
    )
    parser.add_argument(
        "--to",
        dest="end",
        metavar="TIME",
        help="end of the range (exclusive): RFC 3339, epoch s, -30m, now",
    )
    parser.add_argument(
        "--to-topic", metavar="TOPIC", help="destination (default: the input topic)"
    )
    parser.add_argument(
        "--speed",
        default="1",
        help="1: real time, 10: ten times faster, max: no pacing (default: 1)",
    )
    parser.add_argument(
        "--shift-to-now",
        action="store_true",
        help="move event times so that the range ends now (for demos)",
    )
    add_file_arguments(parser)
    parser.add_argument(
        "--trust-timestamps",
        action="store_true",
        help="topics: no record is stamped earlier than its event time minus the future "
        "tolerance, so each partition is read from the first record stamped at or after "
        "--from minus the tolerance (default: from the beginning)",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=4,
        help="partitions when the destination topic is created (default: 4)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    settings.add_arguments(parser, names=SETTINGS)


def add_file_arguments(parser: argparse.ArgumentParser) -> None:
    """How lines of a --file source map onto the event contract."""
    parser.add_argument(
        "--format",
        choices=FILE_FORMATS,
        default="jsonl",
        help="file format: jsonl (event contract), snap (user_a user_b "
        "unix_seconds RT|MT|RE), csv (see --columns) (default: jsonl)",
    )
    parser.add_argument(
        "--columns",
        metavar="FIELD=INDEX,...",
        help="csv: column of each field, e.g. user_id=0,community=1,ts=2,type=3",
    )
    parser.add_argument(
        "--type-map",
        metavar="VALUE=TYPE,...",
        help="csv/snap: map source values to event types, e.g. RT=share,MT=mention",
    )
    parser.add_argument(
        "--platform", default="twitter", help="csv/snap: platform when there is no platform column"
    )
    parser.add_argument(
        "--type",
        dest="type_value",
        choices=sorted(EVENT_TYPES),
        metavar="TYPE",
        help="csv/snap: the event type of every line (a file without a type column)",
    )
    parser.add_argument(
        "--community",
        dest="community_value",
        metavar="NAME",
        help="csv/snap: the community of every line (a file without a community column)",
    )
    parser.add_argument(
        "--delimiter",
        default=",",
        help="csv: column delimiter; 'space' for runs of whitespace (default: ,)",
    )
    parser.add_argument(
        "--ts-unit",
        choices=("s", "ms", "auto"),
        default="auto",
        help="csv: unit of numeric timestamps (default: auto)",
    )
    parser.add_argument("--header", action="store_true", help="csv: skip the first line")


def parse_speed(text: str) -> float | None:
    """None for ``max``; otherwise a positive factor."""
    if text.strip().lower() in ("max", "inf"):
        return None
    try:
        speed = float(text)
    except ValueError:
        raise ValueError(f"bad --speed {text!r}: a number > 0, or max") from None
    if not speed > 0 or speed == float("inf"):
        raise ValueError(f"bad --speed {text!r}: a number > 0 (1: real time), or max")
    return speed


def column_format(args: argparse.Namespace) -> ColumnFormat | None:
    """The column mapping for --format csv/snap (flags override the SNAP preset)."""
    type_value = getattr(args, "type_value", None)
    community_value = getattr(args, "community_value", None)
    if args.format == "jsonl":
        if args.columns or args.type_map or type_value or community_value:
            raise ValueError(
                "--columns/--type-map/--type/--community apply to --format csv or snap"
            )
        return None
    if args.format == "snap":
        extra = parse_type_map(args.type_map) if args.type_map else {}
        columns = parse_columns(args.columns) if args.columns else dict(SNAP_FORMAT.columns)
        if not args.columns:  # the preset's column gives way to a constant
            columns = {
                name: index
                for name, index in columns.items()
                if not (name == "type" and type_value)
                and not (name == "community" and community_value)
            }
        return ColumnFormat(
            columns=columns,
            delimiter=None,
            type_map={**SNAP_FORMAT.type_map, **extra},
            platform=args.platform,
            ts_unit="s",
            id_prefix="snap",
            type_value=type_value,
            community_value=community_value,
        )
    if not args.columns:
        raise ValueError("--format csv needs --columns, e.g. user_id=0,community=1,ts=2,type=3")
    delimiter = None if args.delimiter in ("space", "whitespace", " ") else args.delimiter
    return ColumnFormat(
        columns=parse_columns(args.columns),
        delimiter=delimiter,
        type_map=parse_type_map(args.type_map) if args.type_map else {},
        platform=args.platform,
        ts_unit=args.ts_unit,
        id_prefix="line",
        header=args.header,
        type_value=type_value,
        community_value=community_value,
    )


@dataclass
class Tally:
    """What a replay did; printed as the summary and returned to tests."""

    read: int = 0
    sent: int = 0
    failed: int = 0
    unconfirmed: int = 0  # given up at a stop before the broker answered
    bad: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    bytes: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    reasons: Counter[str] = field(default_factory=Counter)
    source: str = ""  # what a topic read saw, by event time

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"replay{' (interrupted)' if self.interrupted else ''}: sent {self.sent} events "
            f"({self.bytes / 1e6:.1f} MB) in {self.seconds:.1f}s, {self.rate:,.0f} events/s; "
            f"bad {self.bad}{by_reason(self.reasons)} -> DLQ; "
            f"outside the range {self.skipped}; failed {self.failed}"
            + (
                f"; NOT CONFIRMED {self.unconfirmed} (the broker had not confirmed them "
                f"{STOP_FLUSH_SECONDS:.0f}s after the stop: they may or may not be in the topic)"
                if self.unconfirmed
                else ""
            )
            + (f"\nreplay: {self.source}" if self.source else "")
        )


class Pacer:
    """Maps event time to wall time: an event of time t is due at
    ``wall0 + (t - t0) / speed``, where wall0 is when the first event came and t0 the
    earliest event time seen so far. An event earlier than t0 (out of order) is due
    at once and becomes the new t0: the events after it move later, so that the
    replay takes at least (newest - earliest) / speed. ``delay`` is never negative."""

    def __init__(self, speed: float | None) -> None:
        self.speed = speed
        self._t0: int | None = None
        self._wall0 = 0.0

    def delay(self, ts_ms: int, now: float | None = None) -> float:
        if self.speed is None:
            return 0.0
        now = time.monotonic() if now is None else now
        if self._t0 is None:
            self._t0, self._wall0 = ts_ms, now
            return 0.0
        if ts_ms < self._t0:
            self._t0 = ts_ms
            return 0.0
        return max(0.0, self._wall0 + (ts_ms - self._t0) / 1000 / self.speed - now)


class Replay:
    """One replay run: a source, a writer, a pacer, a progress line, a tally."""

    def __init__(
        self,
        args: argparse.Namespace,
        bootstrap: str,
        to_topic: str,
        dlq_topic: str,
        limits: Limits = DEFAULT_LIMITS,
    ):
        self.args = args
        self.limits = limits
        #: EM_INPUT_MAPPING: --from-topic records are judged through it (files: the contract)
        self.mapping: Any = None
        self.bootstrap = bootstrap
        self.to_topic = to_topic
        self.dlq_topic = dlq_topic
        self.speed = parse_speed(args.speed)
        self.pacer = Pacer(self.speed)
        self.tally = Tally()
        self.stopping = False
        #: set with ``stopping``: wakes a paced wait at once
        self._stopped = asyncio.Event()
        self.now_ms = int(time.time() * 1000)
        self.time_range = TimeRange.parse(args.start, args.end, self.now_ms)

    def stop(self) -> None:
        """Ctrl-C/SIGTERM (called on the event loop): end the run, flush, summarise."""
        self.stopping = True
        self._stopped.set()

    async def _nap(self, seconds: float) -> None:
        """Sleep, but return as soon as a stop is requested."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopped.wait()

    async def run(self) -> Tally:
        started = time.monotonic()
        async with BatchWriter(
            self.bootstrap,
            self.to_topic,
            create_partitions=self.args.partitions,
            client_id="engagement-monitor-replay",
        ) as writer:
            await writer.add_topic(self.dlq_topic, create_partitions=self.args.partitions)
            progress = Progress("replay", enabled=not self.args.quiet)
            try:
                if self.args.file:
                    await self._from_file(writer, progress)
                else:
                    await self._from_topic(writer, progress)
            except FileFormatError:
                progress.enabled = False  # the error is the one line to show
                raise
            finally:
                await writer.settle(STOP_FLUSH_SECONDS if self.stopping else None)
                self.tally.sent = writer.sent_by_topic[self.to_topic]
                self.tally.dead_lettered = writer.sent_by_topic[self.dlq_topic]
                self.tally.failed = writer.failed
                self.tally.unconfirmed = writer.unconfirmed
                self.tally.seconds = time.monotonic() - started
                self.tally.interrupted = self.stopping
                end = progress.total if self.args.file and not self.stopping else None
                progress.update(self.tally.read, position=end, **self._counters())
                progress.close()
                for error in writer.errors[:5]:
                    print(f"replay: {error}", file=sys.stderr)
        return self.tally

    def _counters(self) -> dict[str, int]:
        return {"bad": self.tally.bad, "skipped": self.tally.skipped}

    def _dead_letter(self, writer: Any, raw: bytes, reason: str, where: str) -> bool:
        self.tally.bad += 1
        self.tally.reasons[reason] += 1
        value, size_headers = cut(raw)  # a dead letter must fit in a Kafka record
        headers = [("reason", reason.encode()), ("source", where.encode()), *size_headers]
        return bool(writer.append(value, None, None, headers, self.dlq_topic))

    async def _pace(self, ts_ms: int, progress: Any) -> bool:
        """Wait until the event is due; False if asked to stop meanwhile. A stop
        request ends the wait at once (Ctrl-C/SIGTERM stop a 60-day wait well within
        a second, with the summary); the wait is cut in slices so that the progress
        line says what it is waiting for."""
        wait = self.pacer.delay(ts_ms)
        if wait <= 0.002:
            return not self.stopping
        due = time.monotonic() + wait
        while wait > 0.002 and not self.stopping:
            progress.note = f"waiting {describe_ms(int(wait * 1000))} for the next event"
            progress.update(self.tally.read, **self._counters())
            await self._nap(min(wait, _PACE_SLICE))
            wait = due - time.monotonic()
        progress.note = ""
        return not self.stopping

    async def _unless_stopped(
        self, waited: Awaitable[T], progress: Any = None, note: str = ""
    ) -> T | None:
        """:func:`commands.interrupt.unless_stopped`; with ``progress``, its line
        shows ``note`` while the wait lasts."""

        def tick() -> None:
            progress.note = note
            progress.update(self.tally.read, **self._counters())

        try:
            return await unless_stopped(self._stopped, waited, tick if progress else None)
        finally:
            if progress is not None:
                progress.note = ""

    def _file_source(self) -> FileSource:
        source = FileSource(
            self.args.file,
            self.args.format,
            column_format(self.args),
            self.time_range,
            now_ms=self.now_ms,
            limits=self.limits,
        )
        if self.args.shift_to_now:
            end = self.time_range.end_ms
            if end is None:
                end = source.max_ts_ms()
                end = None if end is None else end + 1
            source.shift_ms = 0 if end is None else self.now_ms - end
        return source

    async def _file_batches(
        self, source: FileSource, progress: Any
    ) -> AsyncGenerator[list[Item], None]:
        """The file's items, ``_YIELD_EVERY`` at a time. Standard input is read by a
        thread (:mod:`commands.stdin_feed`): an idle pipe must not block the loop."""
        if not source.stdin:
            items = iter(source)
            while batch := list(itertools.islice(items, _YIELD_EVERY)):
                yield batch
            return
        feed = StdinFeed(source.read_from, _YIELD_EVERY)
        async with contextlib.aclosing(feed.batches()) as batches:
            while not self.stopping:
                waited: Awaitable[list[Item] | None] = anext(batches, None)
                got = await self._unless_stopped(waited, progress, "waiting for input")
                if got is None:
                    return
                yield got

    async def _from_file(self, writer: Any, progress: Any) -> None:
        source = self._file_source()
        progress.total = source.size
        async with contextlib.aclosing(self._file_batches(source, progress)) as batches:
            async for batch in batches:
                stopped = not await self._send_file_items(batch, source, writer, progress)
                self.tally.skipped = source.skipped
                progress.update(self.tally.read, position=source.position, **self._counters())
                await asyncio.sleep(0)  # Ctrl-C handler, linger timer
                if stopped or self.stopping:
                    break

    async def _send_file_items(
        self, items: list[Item], source: FileSource, writer: Any, progress: Any
    ) -> bool:
        """Send (or dead-letter) one batch of file items; False if a stop came."""
        name, shift, paced = source.name, source.shift_ms, self.speed is not None
        tally, append = self.tally, writer.append
        done = 0
        try:
            for value, ts_ms, key, reason in items:
                done += 1
                if reason is not None:  # ts_ms is then the line's number
                    full = self._dead_letter(writer, value, reason, f"{name}:{ts_ms}")
                else:
                    if paced and not await self._pace(ts_ms, progress):
                        return False
                    tally.bytes += len(value)
                    full = append(value, key, ts_ms + shift)
                if full:
                    await self._unless_stopped(writer.drain())
            return not self.stopping
        finally:
            tally.read += done

    async def _from_topic(self, writer: Any, progress: Any) -> None:
        if self.args.format != "jsonl" or self.args.columns:
            raise ValueError("--format/--columns apply to --file sources")
        shift = 0
        if self.args.shift_to_now:
            if self.time_range.end_ms is None:
                raise ValueError("--shift-to-now with --from-topic needs --to (the end to move)")
            if self.mapping is not None:
                raise ValueError("--shift-to-now rewrites ts: not with an input mapping")
            shift = self.now_ms - self.time_range.end_ms
        source = TopicSource(
            self.bootstrap,
            self.args.from_topic,
            self.time_range,
            now_ms=self.now_ms,
            limits=self.limits,
            trust_timestamps=self.args.trust_timestamps,
            transform=self.mapping,
            max_records=_TOPIC_CHUNK,
        )
        tally = self.tally
        paced = self.speed is not None
        reshape = _Reshaper(shift) if shift else None
        # Paced: in event-time order across partitions, or the pacer would replay the
        # range one partition after the other. Unpaced: as consumed, the fast path.
        # closed on a stop right here (not at loop shutdown): the consumer stops first
        async with contextlib.aclosing(source.batches(ordered=paced)) as batches:
            async for decoded in batches:
                progress.total = source.total
                for event, reason, record in decoded:
                    tally.read += 1
                    if event is None:
                        where = f"{self.args.from_topic}:{record.partition}:{record.offset}"
                        if self._dead_letter(writer, record.value or b"", reason or "", where):
                            await self._unless_stopped(writer.drain())
                        continue
                    value = record.value if reshape is None else reshape(record.value, event.ts_ms)
                    if paced and not await self._pace(event.ts_ms, progress):
                        break
                    tally.bytes += len(value)
                    if writer.append(value, record.key, event.ts_ms + shift):
                        await self._unless_stopped(writer.drain())
                tally.skipped = source.skipped
                progress.update(source.read, **self._counters())
                await asyncio.sleep(0)
                if self.stopping:
                    break
        tally.read, tally.skipped = source.read, source.skipped
        tally.source = f"{self.args.from_topic}: {source.tally.summary()}"


class _Reshaper:
    """Rewrites the ``ts`` of a valid contract message by ``shift_ms`` (--shift-to-now)."""

    def __init__(self, shift_ms: int) -> None:
        self.shift_ms = shift_ms
        self._fmt_ts = TsFormatter()

    def __call__(self, raw: bytes, ts_ms: int) -> bytes:
        obj = orjson.loads(raw)
        obj["ts"] = self._fmt_ts(ts_ms + self.shift_ms)
        return orjson.dumps(obj)


def run(args: argparse.Namespace) -> int:
    conf = settings.from_args(args)
    if args.file and args.file != "-" and not os.path.isfile(args.file):
        raise ValueError(f"no such file: {args.file}")
    parse_speed(args.speed)
    column_format(args)
    to_topic = args.to_topic or conf.input_topic
    if args.from_topic and args.from_topic == to_topic and args.shift_to_now is False:
        print(
            "replay: note: source and destination are the same topic; the range is read "
            "up to the end offsets seen at start",
            file=sys.stderr,
        )
    replay = Replay(args, conf.kafka_bootstrap_servers, to_topic, conf.dlq_topic, conf.limits)
    replay.mapping = conf.mapping  # a topic in another shape is judged through it
    from aiokafka.errors import KafkaError

    try:
        tally = asyncio.run(run_stoppable(replay.run, replay.stop))
    except KafkaError as exc:
        print(f"replay: Kafka at {conf.kafka_bootstrap_servers}: {failure(exc)}", file=sys.stderr)
        return 1
    print(tally.summary(), file=sys.stderr)
    if tally.failed or tally.unconfirmed:
        return 1
    return 130 if tally.interrupted else 0
