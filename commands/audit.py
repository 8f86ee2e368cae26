"""``engagement-monitor audit``: prove the live numbers against the input topic.

After an incident (a crash, a lost changelog record, a restore) an operator needs
more than "the numbers look plausible". This command recomputes every gauge offline
from the input topic — exactly the records the workers' ingest group has committed,
judged by the worker's own rules, through the back-fill's arithmetic
(:func:`commands.backfill.partition_states`, :func:`commands.backfill.gauge_rows`)
— at the workers' clock, reads the live numbers (the Redis snapshots, and each
worker's ``/metrics`` given with ``--metrics``), and prints the series that differ
with both values. Exit status 0: all equal; 1: some differ; 2: could not audit.

Which clock: each Redis snapshot carries the clock of the worker that wrote it
(event or wall), so each partition is recomputed at exactly that time. ``/metrics``
is summed over the workers given (give all of them: each holds a share of the
partitions); with the event clock each partition is recomputed at the clock its
snapshot reports (or, without the read model, at the one worker's watermark); with
the wall clock at the scrape time, and a series counts as equal if its value lies
between the values recomputed just before and just after the scrapes.

A record the workers refused as ``future_timestamp`` was judged at the time they read
it, not now: the audit takes those from the DLQ and leaves them out.

Live numbers lag the input by a snapshot tick or a scrape: the audit first waits
(``--wait``) until both consumer groups have committed the ends of their topics, and
a difference must persist for ``--settle`` before it is reported. ``--at`` waits for
a chosen wall-clock time first (with the wall clock the numbers depend on when they
are looked at).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from typing import Any

from agents.kafka_admin import require_topic
from agents.kafka_security import client_kwargs, current, failure
from agents.readmodel import connect, read_snapshots
from agents.txn_offsets import records_behind, start_committed_reader
from commands.audit_compare import (
    Expected,
    Series,
    SourceReport,
    audit_metrics,
    audit_redis,
    document,
    expected_state,
    metric_series,
    render,
)
from commands.backfill import read_rows, topic_source
from commands.progress import Progress
from commands.sources import TimeRange, parse_time_bound
from streams import settings
from streams.durations import parse_duration_ms
from streams.security import pseudonymiser, redact_url
from streams.topics import by_user_topic, ingest_group

#: an audit is not latency-bound: a busy Redis (a SCAN over many keys) gets time
REDIS_TIMEOUT_S = 10.0
SETTINGS = (
    "kafka_bootstrap_servers",
    "redis_url",
    "app_id",
    "input_topic",
    "input_mapping",
    "partitions",
    "clock",
    "windows",
    "active_types",
    "community_cap",
    "future_tolerance",
    "max_message_bytes",
    "max_event_age",
    "read_model",
    "dlq_topic",
)
# I/O -------------------------------------------------------------------------------


async def _group_offsets(admin: Any, group: str, topic: str) -> dict[int, int]:
    from aiokafka.errors import GroupCoordinatorNotAvailableError

    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except GroupCoordinatorNotAvailableError:  # the coordinator is still loading
        return {}
    return {
        tp.partition: m.offset for tp, m in offsets.items() if tp.topic == topic and m.offset >= 0
    }


async def _end_offsets(consumer: Any, topic: str) -> dict[int, int]:
    from aiokafka import TopicPartition

    partitions = await consumer._client._wait_on_metadata(topic) or set()  # noqa: SLF001
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()} if tps else {}


async def lag(
    bootstrap: str, app_id: str, input_topic: str
) -> tuple[dict[int, int], dict[str, int]]:
    """(the ingest group's committed input offsets, records not yet committed per
    group): the groups have caught up when the second is all zeros."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs())
    await admin.start()
    consumer = await start_committed_reader(bootstrap)
    try:
        behind: dict[str, int] = {}
        committed: dict[int, int] = {}
        # only topics that exist: naming a missing one in a metadata request creates it
        # (an app id that never ran has no by-user topic, and must not get one here)
        existing = set(await admin.list_topics())
        for group, topic in ((ingest_group(app_id), input_topic), (app_id, by_user_topic(app_id))):
            ends = await _end_offsets(consumer, topic) if topic in existing else {}
            done = await _group_offsets(admin, group, topic)
            gaps = {
                TopicPartition(topic, p): (done.get(p, 0), end)
                for p, end in ends.items()
                if done.get(p, 0) < end
            }
            behind[group] = sum((await records_behind(consumer, gaps)).values())
            if topic == input_topic:
                committed = {p: done.get(p, 0) for p in ends}
        return committed, behind
    finally:
        await consumer.stop()
        await admin.close()


async def wait_caught_up(conf: Any, wait_s: float) -> dict[int, int]:
    """The committed input offsets once no group lags; ValueError after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        committed, behind = await lag(conf.kafka_bootstrap_servers, conf.app_id, conf.input_topic)
        if not any(behind.values()):
            return committed
        if time.monotonic() > deadline:
            text = ", ".join(f"{g} {n}" for g, n in behind.items())
            raise NotCaughtUp(
                f"the workers have not caught up in {wait_s:g}s (records behind: {text})"
            )
        await asyncio.sleep(0.5)


class NotCaughtUp(RuntimeError):
    """Nothing comparable to read: the groups lag, or a live source does not answer."""


def _scrape(url: str, token: str) -> str:
    """One /metrics page; with EM_HTTP_TOKEN set the workers want it as a bearer token."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - given URL
        return str(response.read().decode())


async def read_live(
    conf: Any, urls: list[str]
) -> tuple[list[Any], list[tuple[str, Series, int | None]], tuple[int, int]]:
    """(Redis snapshots, [(url, series, watermark)], wall ms just before and after the scrapes)."""
    snapshots: list[Any] = []
    if conf.read_model != "off":
        client = connect(conf.redis_url, REDIS_TIMEOUT_S)
        try:
            snapshots = await read_snapshots(client, conf.app_id)
        except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
            raise NotCaughtUp(f"cannot read Redis at {redact_url(conf.redis_url)}: {exc}") from None
        finally:
            await client.aclose()
    token = current().http_token if urls else ""
    before = int(time.time() * 1000)
    scraped = []
    for url in urls:
        try:
            page = await asyncio.to_thread(_scrape, url, token)
        except OSError as exc:
            raise NotCaughtUp(f"cannot read {url}: {exc}") from None
        series, watermark = metric_series(page)
        scraped.append((url, series, watermark))
    return snapshots, scraped, (before, int(time.time() * 1000))


async def compare_live(conf: Any, expected: Expected, urls: list[str]) -> list[SourceReport]:
    snapshots, scraped, wall = await read_live(conf, urls)
    partitions = conf.partitions
    reported = {s.partitions for s in snapshots}
    if reported and reported != {partitions}:
        raise ValueError(
            f"the workers' snapshots say {sorted(reported)} partitions: give --partitions"
        )
    reports = []
    if snapshots:
        reports.append(audit_redis(expected, snapshots, partitions))
    if scraped:
        clocks: dict[int, int | None] = {s.partition: s.now_ms for s in snapshots}
        if conf.clock == "event" and not snapshots:
            if len(scraped) > 1:
                raise ValueError(
                    "several workers on the event clock: the audit needs their Redis "
                    "snapshots (each partition's clock)"
                )
            clocks = dict.fromkeys(range(partitions), scraped[0][2])
        window = wall if conf.clock == "wall" else None
        reports.append(audit_metrics(expected, scraped, clocks, partitions, window))
    if not reports:
        raise NotCaughtUp(
            f"nothing to audit: no snapshot of {conf.app_id!r} in Redis and no --metrics"
        )
    return reports


async def refused_as_future(conf: Any) -> set[tuple[int, int]]:
    """(partition, offset) of the input records the workers dead-lettered as
    ``future_timestamp``: the worker judged them at the time it read them, which the
    audit can't know, and a record two minutes ahead then may be in the past now."""
    from aiokafka import TopicPartition

    # the workers write the DLQ in transactions
    consumer = await start_committed_reader(conf.kafka_bootstrap_servers)
    try:
        ends = await _end_offsets(consumer, conf.dlq_topic)
        tps = [TopicPartition(conf.dlq_topic, p) for p, end in ends.items() if end > 0]
        if not tps:
            return set()
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: set[tuple[int, int]] = set()
        left = {tp: ends[tp.partition] for tp in tps}
        while left:
            for records in (await consumer.getmany(*left, timeout_ms=1000)).values():
                found.update(filter(None, (_future_source(r, conf.input_topic) for r in records)))
            for tp in list(left):
                if await consumer.position(tp) >= left[tp]:
                    del left[tp]
        return found
    finally:
        await consumer.stop()


def _future_source(record: Any, input_topic: str) -> tuple[int, int] | None:
    headers = {key: value for key, value in record.headers or ()}
    if headers.get("reason") != b"future_timestamp":
        return None
    if headers.get("source_topic", b"").decode(errors="replace") != input_topic:
        return None
    try:
        return int(headers["source_partition"]), int(headers["source_offset"])
    except (KeyError, ValueError):
        return None


async def recompute(conf: Any, committed: dict[int, int], quiet: bool) -> tuple[Expected, str]:
    """The input topic up to the committed offsets, as the workers applied it."""
    refused = await refused_as_future(conf)
    source = topic_source(conf, TimeRange(), int(time.time() * 1000), stop_offsets=committed)
    reading = Progress("audit: reading", unit="records", enabled=not quiet)
    rows = await read_rows(source, reading, refused)
    reading.close()
    pseudonymise = pseudonymiser(current().user_id_key)  # EM_USER_ID_KEY, as at ingest
    if pseudonymise is not None:
        rows = [(ts, p, c, pseudonymise(u), k) for ts, p, c, u, k in rows]
    expected = expected_state(
        rows, conf.partitions, conf.window_ms, conf.active_type_set, conf.community_cap
    )
    return expected, source.tally.summary()


async def audit(args: argparse.Namespace, conf: Any) -> tuple[list[SourceReport], dict[str, Any]]:
    if args.at:
        at_ms = parse_time_bound(args.at, int(time.time() * 1000))
        await asyncio.sleep(max(0.0, at_ms / 1000 - time.time()))
    # a misspelled topic is an error naming it, and reading never creates it
    await require_topic(conf.kafka_bootstrap_servers, conf.input_topic)
    committed = await wait_caught_up(conf, parse_duration_ms(args.wait) / 1000)
    expected, read = await recompute(conf, committed, args.quiet or args.json)
    deadline = time.monotonic() + settle_seconds(args.settle)
    while True:
        try:
            reports = await compare_live(conf, expected, args.metrics)
        except NotCaughtUp:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(1.0)  # a source did not answer: once more, until --settle
            continue
        if all(r.equal for r in reports) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(1.0)  # a snapshot tick or a scrape behind: look again
    after, _behind = await lag(conf.kafka_bootstrap_servers, conf.app_id, conf.input_topic)
    info = {
        "app_id": conf.app_id,
        "input_topic": conf.input_topic,
        "clock": conf.clock,
        "committed": {str(p): o for p, o in sorted(committed.items())},
        "read": read,
        "input_moved": after != committed,
    }
    if after != committed:
        reports[0].problems.append(
            "the input moved during the audit (stop the producers, or audit again)"
        )
    return reports, info


def settle_seconds(text: str) -> float:
    """``--settle``: a duration, or 0 for one look (a settled state needs no second)."""
    return 0.0 if text.strip() in ("0", "0s") else parse_duration_ms(text) / 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics",
        action="append",
        default=[],
        metavar="URL",
        help="a worker's /metrics URL (repeat for each worker; give all of them)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--at",
        metavar="TIME",
        help="wait for this wall-clock time first (RFC 3339, epoch s, +10m)",
    )
    parser.add_argument(
        "--wait",
        default="60s",
        help="how long to wait for the workers to catch up (default: 60s)",
    )
    parser.add_argument(
        "--settle",
        default="10s",
        help="how long a difference must last to be reported; 0: one look (default: 10s)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    settings.add_arguments(parser, names=SETTINGS)


def run(args: argparse.Namespace) -> int:

    from aiokafka.errors import KafkaError

    conf = settings.from_args(args)
    parse_duration_ms(args.wait), settle_seconds(args.settle)
    try:
        reports, info = asyncio.run(audit(args, conf))
    except NotCaughtUp as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    except KafkaError as exc:
        print(f"audit: Kafka at {conf.kafka_bootstrap_servers}: {failure(exc)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(document(reports, info), indent=2))
    else:
        header = (
            f"audit of {info['app_id']} ({info['clock']} clock): {info['input_topic']} up to the "
            f"committed offsets {info['committed']}: {info['read']}"
        )
        print(render(reports, header))
    return 0 if all(r.equal for r in reports) else 1
