"""Replay throughput: ``replay --speed max`` of a SNAP-format file vs a raw producer.

    .venv/bin/python bench/replay_bench.py [--lines 1000000] [--runs 3] [--file F]

Writes a synthetic SNAP temporal edge list (``user_a user_b unix_seconds RT|MT|RE``,
sorted by time, gzip-compressed like the published data) to a temp folder — or uses
``--file`` — then, ``--runs`` times each, in the same process and against the same
broker:

- replays it at max speed into a fresh topic (the full path: read, gunzip, parse,
  encode the contract JSON, batch, send, wait for the acks);
- sends the same number of pre-encoded, identical payloads with aiokafka's
  ``create_batch``/``send_batch`` (the raw producer ceiling on this machine).

Prints the median events/s of each and their ratio. The broker comes from
KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092). Topics are named bench-replay-*.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.kafka_admin import ensure_topics  # noqa: E402
from agents.kafka_out import DEFAULT_BATCH_BYTES, DEFAULT_LINGER_MS  # noqa: E402
from agents.kafka_security import client_kwargs  # noqa: E402
from commands.replay import Replay, add_arguments  # noqa: E402
from streams import settings  # noqa: E402
from streams.events import Limits  # noqa: E402

KINDS = ("RT", "RT", "RT", "RT", "MT", "MT", "RE")  # the Higgs mix is mostly retweets


def write_snap_file(path: Path, lines: int, seed: int = 1) -> None:
    """Synthetic SNAP lines: Zipf-ish users, a week of time, sorted by time."""
    rng = random.Random(seed)
    start = 1_341_100_800  # 2012-07-01T00:00:00Z, like the Higgs data
    span = 7 * 86_400
    stamps = sorted(start + int(rng.random() * span) for _ in range(lines))
    with gzip.open(path, "wt", compresslevel=1) as out:
        for ts in stamps:
            user_a = int(rng.paretovariate(1.2) * 10) % 450_000
            user_b = int(rng.paretovariate(1.0) * 3) % 450_000
            out.write(f"{user_a} {user_b} {ts} {rng.choice(KINDS)}\n")


def count_lines(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as source:
        return sum(1 for _ in source)


async def run_replay(bootstrap: str, path: Path, topic: str) -> float:
    """Events/s of one ``replay --speed max --format snap`` run (acks included)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--file", str(path), "--format", "snap", "--speed", "max", "--to-topic", topic, "--quiet"]
    )
    # 2012 events: no age limit (the worker's 400d default would refuse them all)
    replay = Replay(args, bootstrap, topic, topic + ".dlq", Limits(max_event_age_ms=None))
    tally = await replay.run()
    if tally.failed or tally.bad:
        raise RuntimeError(f"replay run failed: {tally.summary()}")
    return tally.sent / tally.seconds


async def run_baseline(bootstrap: str, count: int, topic: str) -> float:
    """Events/s of a raw aiokafka producer sending ``count`` identical pre-encoded
    payloads with create_batch/send_batch, round-robin over the partitions."""
    from aiokafka import AIOKafkaProducer

    payload = (
        b'{"event_id":"snap-123456","ts":"2012-07-04T12:00:00.000Z","platform":"twitter",'
        b'"community":"12345","user_id":"67890","type":"share"}'
    )
    await ensure_topics(bootstrap, {topic: 4})
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=DEFAULT_LINGER_MS,
        max_batch_size=DEFAULT_BATCH_BYTES,
        max_request_size=2 * DEFAULT_BATCH_BYTES,
        **client_kwargs(),
    )
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        started = time.monotonic()
        sent, turn, futures = 0, 0, []
        while sent < count:
            batch = producer.create_batch()
            while sent < count and batch.append(
                timestamp=1_341_403_200_000, key=None, value=payload
            ):
                sent += 1
            futures.append(await producer.send_batch(batch, topic, partition=partitions[turn % 4]))
            turn += 1
        await asyncio.gather(*futures)
        return count / (time.monotonic() - started)
    finally:
        await producer.stop()


async def main_async(args: argparse.Namespace) -> None:
    bootstrap = settings.from_env().kafka_bootstrap_servers
    with tempfile.TemporaryDirectory(prefix="replay-bench-") as tmp:
        path = Path(args.file) if args.file else Path(tmp) / "snap.txt.gz"
        if not args.file:
            print(f"writing {args.lines:,} SNAP lines to {path} …", file=sys.stderr)
            write_snap_file(path, args.lines)
        lines = count_lines(path)
        print(f"{path}: {lines:,} lines, {path.stat().st_size / 1e6:.1f} MB", file=sys.stderr)
        replay_rates, raw_rates = [], []
        for run in range(args.runs):
            tag = uuid.uuid4().hex[:8]
            raw_rates.append(await run_baseline(bootstrap, lines, f"bench-replay-raw-{tag}"))
            replay_rates.append(await run_replay(bootstrap, path, f"bench-replay-{tag}"))
            print(
                f"run {run + 1}: replay {replay_rates[-1]:,.0f} events/s, "
                f"raw send_batch {raw_rates[-1]:,.0f} msg/s",
                file=sys.stderr,
            )
    replay, raw = statistics.median(replay_rates), statistics.median(raw_rates)
    print(
        f"replay --speed max (snap file, {lines:,} lines): {replay:,.0f} events/s "
        f"(median of {args.runs})"
    )
    print(
        f"raw aiokafka send_batch, pre-encoded payloads: {raw:,.0f} msg/s (median of {args.runs})"
    )
    print(f"ratio replay/raw: {replay / raw:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--file", help="a SNAP file to replay instead of a synthetic one")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
