"""``dlq resend FILE``: corrected dead letters back into the input topic.

Every line goes through the worker's own validation (the same limits and input
mapping) before anything is sent: a line that would be refused again is reported
with its reason and line number and is not sent, so a half-corrected file never
puts the same bad message back into the DLQ. Valid lines are sent byte for byte,
with the event time as the record timestamp (as ``produce`` does).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from agents.kafka_admin import require_topic
from agents.kafka_security import client_kwargs
from streams.deadletters import message_of
from streams.events import InvalidEvent, parse_event

_SHOW_BAD = 20


def check_lines(
    lines: list[bytes], now_ms: int, conf: Any
) -> tuple[list[tuple[bytes, int]], list[str]]:
    """([(message, event time ms)] to send, ["line N: reason: detail"] refused)."""
    good: list[tuple[bytes, int]] = []
    bad: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        message = message_of(line)
        try:
            event = parse_event(message, now_ms, conf.limits, conf.mapping)
        except InvalidEvent as exc:
            bad.append(f"line {number}: {exc}")
            continue
        assert message is not None  # parse_event refuses a null value
        good.append((message, event.ts_ms))
    return good, bad


async def send(conf: Any, messages: list[tuple[bytes, int]]) -> None:
    from aiokafka import AIOKafkaProducer

    await require_topic(conf.kafka_bootstrap_servers, conf.input_topic)
    producer = AIOKafkaProducer(
        bootstrap_servers=conf.kafka_bootstrap_servers, acks="all", linger_ms=5, **client_kwargs()
    )
    await producer.start()
    try:
        batch = [
            await producer.send(conf.input_topic, value, timestamp_ms=ts_ms)
            for value, ts_ms in messages
        ]
        for future in batch:
            await future
    finally:
        await producer.stop()


async def resend(args: argparse.Namespace, conf: Any) -> int:
    try:
        with open(args.file, "rb") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read {args.file}: {exc.strerror}") from None
    good, bad = check_lines(lines, int(time.time() * 1000), conf)
    for text in bad[:_SHOW_BAD]:
        print(f"dlq resend: {text}", file=sys.stderr)
    if len(bad) > _SHOW_BAD:
        print(f"dlq resend: … {len(bad) - _SHOW_BAD} more refused lines", file=sys.stderr)
    if good and not args.dry_run:
        await send(conf, good)
    verb = "would send" if args.dry_run else "sent"
    print(
        f"dlq resend: {verb} {len(good)} to {conf.input_topic}, refused {len(bad)} "
        "(still invalid; not sent)",
        file=sys.stderr,
    )
    return 1 if bad else 0
