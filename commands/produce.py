"""``engagement-monitor produce FILE``: send a JSONL file of events to the input topic.

Lines go out byte-for-byte — validation is the worker's job, and a test that feeds it
broken lines on purpose must get exactly those bytes through. Each record's Kafka
timestamp is the line's event time when the line has a readable ``ts`` (so topic
time ranges match event times), else the current time. ``--validate`` checks every
line against the contract first and reports the bad ones (still sending them, unless
``--skip-invalid``). With ``EM_INPUT_MAPPING`` the lines are in the mapped shape: the
validation and the event time go through the mapping, as in the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from agents.kafka_out import BatchWriter
from agents.kafka_security import failure
from commands.interrupt import STOP_FLUSH_SECONDS, run_stoppable, unless_stopped
from commands.progress import Progress
from commands.sources import open_binary
from streams import settings as settings_mod
from streams.events import InvalidEvent, judge, parse_timestamp_ms

_SHOW_BAD = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="JSONL file of events (.gz too)")
    parser.add_argument(
        "--validate", action="store_true", help="check lines against the contract and report"
    )
    parser.add_argument(
        "--skip-invalid", action="store_true", help="with --validate: do not send bad lines"
    )
    parser.add_argument("--topic", help="destination (default: the input topic)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions if created")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    settings_mod.add_arguments(
        parser, names=("kafka_bootstrap_servers", "input_topic", "dlq_topic", "input_mapping")
    )


def event_time_ms(line: bytes, transform: Callable[[Any], Any] | None = None) -> int | None:
    """The line's ``ts`` in epoch ms (after the input mapping, if any), or None when it
    has none that parses."""
    try:
        obj = orjson.loads(line)
        if transform is not None:
            obj = transform(obj)
        return parse_timestamp_ms(obj["ts"]) if isinstance(obj, dict) and "ts" in obj else None
    except (orjson.JSONDecodeError, InvalidEvent):
        return None


class Producer:
    """Reads the file, sends the lines, counts; ``stop()`` ends it early."""

    def __init__(self, args: argparse.Namespace, bootstrap: str, topic: str) -> None:
        self.args = args
        #: EM_INPUT_MAPPING, applied before validation as the worker does
        self.transform: Callable[[Any], Any] | None = None
        self.bootstrap = bootstrap
        self.topic = topic
        self.stopping = False
        self.lines = 0
        self.bad: Counter[str] = Counter()
        self.bad_lines: list[str] = []
        self.skipped = 0
        self.bytes = 0
        self.sent = 0
        self.failed = 0
        self.unconfirmed = 0
        self.seconds = 0.0
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        self.stopping = True
        self._stopped.set()

    def check(self, line: bytes, line_no: int, now_ms: int) -> bool:
        verdict = judge(line, now_ms, transform=self.transform)
        if not isinstance(verdict, InvalidEvent):
            return True
        self.bad[verdict.reason] += 1
        if len(self.bad_lines) < _SHOW_BAD:
            self.bad_lines.append(f"line {line_no}: {verdict}")
        return False

    async def run(self) -> None:

        started = time.monotonic()
        reader, raw = open_binary(self.args.file)
        progress = Progress("produce", total=_size(raw), enabled=not self.args.quiet)
        now_ms = int(time.time() * 1000)
        try:
            async with BatchWriter(
                self.bootstrap,
                self.topic,
                create_partitions=self.args.partitions,
                client_id="engagement-monitor-produce",
            ) as writer:
                try:
                    await self._send_lines(reader, raw, writer, progress, now_ms)
                finally:
                    await writer.settle(STOP_FLUSH_SECONDS if self.stopping else None)
                    self.sent, self.failed = writer.sent, writer.failed
                    self.unconfirmed = writer.unconfirmed
                    for error in writer.errors[:5]:
                        print(f"produce: {error}", file=sys.stderr)
        finally:
            reader.close()
            raw.close()
            self.seconds = time.monotonic() - started
            end = None if self.stopping else progress.total
            progress.update(self.lines, position=end, **self._counters())
            progress.close()

    def _counters(self) -> dict[str, int]:
        return {"bad": sum(self.bad.values())} if self.args.validate else {}

    async def _send_lines(
        self, reader: Any, raw: Any, writer: Any, progress: Any, now_ms: int
    ) -> None:
        line_no = 0
        for raw_line in reader:
            line_no += 1
            line = raw_line.rstrip(b"\r\n")
            if not line.strip():
                continue
            self.lines += 1
            if self.args.validate and not self.check(line, line_no, now_ms):
                if self.args.skip_invalid:
                    self.skipped += 1
                    continue
            self.bytes += len(line)
            if writer.append(line, None, event_time_ms(line, self.transform)):
                await unless_stopped(self._stopped, writer.drain())
            if self.lines % 4096 == 0:
                progress.update(self.lines, position=raw.tell(), **self._counters())
                await asyncio.sleep(0)
                if self.stopping:
                    break

    def summary(self) -> str:
        rate = self.sent / self.seconds if self.seconds else 0.0
        text = (
            f"produce{' (interrupted)' if self.stopping else ''}: sent {self.sent} of "
            f"{self.lines} lines ({self.bytes / 1e6:.2f} MB) to {self.topic} in "
            f"{self.seconds:.1f}s, {rate:,.0f} events/s; failed {self.failed}"
        )
        if self.unconfirmed:
            text += (
                f"; NOT CONFIRMED {self.unconfirmed} (the broker had not confirmed them "
                f"{STOP_FLUSH_SECONDS:.0f}s after the stop: they may or may not be in the topic)"
            )
        if self.args.validate:
            reasons = ", ".join(f"{r} {n}" for r, n in self.bad.most_common()) or "none"
            text += f"; invalid lines {sum(self.bad.values())} ({reasons})"
            if self.skipped:
                text += f", {self.skipped} not sent"
        return text


def _size(raw: Any) -> int | None:
    try:
        return os.fstat(raw.fileno()).st_size
    except (OSError, AttributeError):
        return None


def run(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    if not os.path.isfile(args.file):
        raise ValueError(f"no such file: {args.file}")
    if args.skip_invalid and not args.validate:
        raise ValueError("--skip-invalid needs --validate")
    conf = settings_mod.from_args(args)
    producer = Producer(args, conf.kafka_bootstrap_servers, args.topic or conf.input_topic)
    producer.transform = conf.mapping
    try:
        asyncio.run(run_stoppable(producer.run, producer.stop))
    except KafkaError as exc:
        print(f"produce: Kafka at {conf.kafka_bootstrap_servers}: {failure(exc)}", file=sys.stderr)
        return 1
    for text in producer.bad_lines:
        print(f"produce: {text}", file=sys.stderr)
    print(producer.summary(), file=sys.stderr)
    if producer.failed or producer.unconfirmed:
        return 1
    return 130 if producer.stopping else 0
