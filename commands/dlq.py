"""``engagement-monitor dlq``: read the dead-letter topic, and re-send corrected messages.

    dlq stats  [--bucket 1h]              counts by reason, and by reason per time bucket
    dlq show   [--reason R] [--limit 5]   samples: headers and the bytes, rendered safely
    dlq export [--reason R] -o FILE       JSONL, one line per record (edit, then resend)
    dlq resend FILE                       validate each line as the worker does; send the
                                          valid ones to the input topic, report the rest

Reading never creates a topic: a misspelled ``--dlq-topic`` is an error naming it.
Records are read from the beginning (or ``--from``) up to the end offsets seen at
start; ``--from``/``--to`` select by record time (when the message was dead-lettered).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TextIO

from agents.kafka_admin import require_topic
from agents.kafka_security import failure
from agents.txn_offsets import start_committed_reader
from commands.dlq_resend import resend
from commands.sources import TimeRange, parse_time_bound
from streams import settings
from streams.deadletters import DeadLetter, Tally, export_line, from_record, iso, safe_text
from streams.durations import parse_duration_ms

SETTINGS = (
    "kafka_bootstrap_servers",
    "input_topic",
    "dlq_topic",
    "input_mapping",
    "max_message_bytes",
    "future_tolerance",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from commands.cli import accept_relative_times  # cli imports this module

    parser.description = (
        "Read the dead-letter topic (counts, samples, JSONL export) and re-send corrected "
        "messages through the worker's validation. Reading never creates a topic."
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    stats = sub.add_parser("stats", help="counts by reason and by time")
    stats.add_argument("--bucket", default="1h", help="time bucket (default: %(default)s)")
    show = sub.add_parser("show", help="sample records: headers and bytes, safely rendered")
    show.add_argument("--limit", type=int, default=5, help="records shown (default: 5)")
    show.add_argument("--width", type=int, default=200, help="characters of each value shown")
    export = sub.add_parser("export", help="write the records as JSONL")
    export.add_argument("-o", "--output", default="-", metavar="FILE", help="default: stdout")
    resend = sub.add_parser("resend", help="validate a corrected file and send it to the input")
    resend.add_argument("file", help="JSONL: lines of `dlq export` (edited) or plain events")
    resend.add_argument("--dry-run", action="store_true", help="validate only, send nothing")
    for p in (stats, show, export):
        accept_relative_times(p)
        p.add_argument("--reason", help="only records with this reason header")
        p.add_argument("--from", dest="start", metavar="TIME", help="records from (-2h, RFC 3339)")
        p.add_argument("--to", dest="end", metavar="TIME", help="records before")
    for p in (stats, show, export, resend):
        settings.add_arguments(p, names=SETTINGS)


async def read_letters(bootstrap: str, topic: str, span: TimeRange) -> AsyncIterator[DeadLetter]:
    """The topic's records in [from, to), partition by partition, up to today's end."""
    from aiokafka import TopicPartition

    partitions = await require_topic(bootstrap, topic)
    # the workers write dead letters in transactions: an aborted one was never sent
    consumer = await start_committed_reader(bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        if span.start_ms is not None:
            found = await consumer.offsets_for_times({tp: span.start_ms for tp in tps})
            starts = {tp: (found[tp].offset if found[tp] else ends[tp]) for tp in tps}
        for tp in tps:
            async for letter in _partition(consumer, tp, starts[tp], ends[tp], span):
                yield letter
    finally:
        await consumer.stop()


async def _partition(
    consumer: Any, tp: Any, start: int, end: int, span: TimeRange
) -> AsyncIterator[DeadLetter]:
    """Records before ``end``. Done when the position reaches it, not at the record
    at ``end - 1``: a transactional partition ends with a commit marker, which
    takes an offset and is never returned."""
    if start >= end:
        return
    consumer.seek(tp, start)
    while await consumer.position(tp) < end:
        batch = await consumer.getmany(tp, timeout_ms=1000)
        for record in batch.get(tp, []):
            if record.offset >= end:
                return
            if span.contains(record.timestamp):
                yield from_record(
                    tp.partition, record.offset, record.timestamp, record.headers, record.value
                )


def _span(args: argparse.Namespace) -> TimeRange:
    now = int(time.time() * 1000)
    start = parse_time_bound(args.start, now) if args.start else None
    end = parse_time_bound(args.end, now) if args.end else None
    return TimeRange(start, end)


async def _letters(args: argparse.Namespace, conf: Any) -> AsyncIterator[DeadLetter]:
    async for letter in read_letters(conf.kafka_bootstrap_servers, conf.dlq_topic, _span(args)):
        if args.reason is None or letter.reason == args.reason:
            yield letter


async def stats(args: argparse.Namespace, conf: Any, out: TextIO) -> int:
    tally = Tally(parse_duration_ms(args.bucket))
    async for letter in _letters(args, conf):
        tally.add(letter)
    total = sum(tally.by_reason.values())
    out.write(f"{conf.dlq_topic}: {total} dead letters\n")
    for reason, n in tally.by_reason.most_common():
        out.write(f"  {reason:<18} {n:>8}\n")
    if total:
        out.write(f"by {args.bucket} (record time, UTC):\n")
    for start, counts in tally.rows():
        parts = ", ".join(f"{r} {n}" for r, n in sorted(counts.items()))
        out.write(f"  {start}  {sum(counts.values()):>6}  {parts}\n")
    return 0


async def show(args: argparse.Namespace, conf: Any, out: TextIO) -> int:
    shown = 0
    async for letter in _letters(args, conf):
        if shown >= args.limit:
            break
        shown += 1
        out.write(f"#{shown} partition {letter.partition} offset {letter.offset} at ")
        out.write(f"{iso(letter.timestamp_ms)}\n")
        for name, value in letter.headers.items():
            out.write(f"  {safe_text(name.encode(), 40)}: {safe_text(value.encode(), 200)}\n")
        out.write(f"  value: {safe_text(letter.value, args.width)}\n")
    if not shown:
        out.write(f"{conf.dlq_topic}: no dead letters match\n")
    return 0


async def export(args: argparse.Namespace, conf: Any, out: TextIO) -> int:
    n = 0
    async for letter in _letters(args, conf):
        out.write(export_line(letter).decode() + "\n")
        n += 1
    print(f"dlq export: {n} records from {conf.dlq_topic}", file=sys.stderr)
    return 0


ACTIONS: dict[str, Callable[[argparse.Namespace, Any, TextIO], Any]] = {
    "stats": stats,
    "show": show,
    "export": export,
}


def run(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    conf = settings.from_args(args)
    try:
        if args.action == "resend":
            return int(asyncio.run(resend(args, conf)))
        if args.action == "export" and args.output != "-":
            with open(args.output, "w", encoding="utf-8") as out:
                return int(asyncio.run(ACTIONS["export"](args, conf, out)))
        return int(asyncio.run(ACTIONS[args.action](args, conf, sys.stdout)))
    except KafkaError as exc:
        print(f"dlq: Kafka at {conf.kafka_bootstrap_servers}: {failure(exc)}", file=sys.stderr)
        return 1
