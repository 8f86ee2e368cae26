"""``engagement-monitor backfill``: the gauges as they were, as OpenMetrics for promtool.

Prometheus only has the gauges from the moment it scraped a worker. To show
recomputed history (after a rebuild, or for a period before the monitor ran), this
command reads the input topic's events with ts <= ``--to`` — from every event ever
by default, because the follower gauge is not windowed (a follow from last year still
counts); ``--history 30d`` keeps only the longest window before ``--from``, which keeps
every active-user gauge exact but counts only the follows made in it — and evaluates
the gauges with the event clock at every ``--step``: the value at step t is computed
over exactly the events with ts <= t, which is what an event-clock worker that
consumed the topic shows when its clock is at t.

Events are chosen by their event time, never by Kafka record timestamps (produce
time, append time, event time or a mix; a late event sits anywhere): every partition
is read to its end offset, each value judged by the worker's own function and limits
(:class:`commands.sources.TopicSource`); ``--trust-timestamps`` lets the record
timestamps skip the records before ``--from - --history`` where that is safe.

Offline there is one process and all users, so one :class:`PartitionState` holds
everything; events are applied in event-time order (a sweep), which gives at each
step the same records the live worker would hold after applying those events in
any order (the merge is order independent). Names and labels are the live ones,
with the same label caps (:class:`agents.labels.CommunityLabels`: ranked by activity
at each step here, every 10 s live — equal under the caps and in steady state).

The output is grouped as promtool wants it: one family after the other, each
series' samples together in ascending time, ``# EOF`` at the end. Values are kept
in memory until written: 4 bytes per sample (30 days at 1m for 500 series is about
90 MB); use a coarser ``--step`` or shorter ranges for more.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from array import array
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from agents.kafka_security import failure
from agents.labels import CommunityLabels, worker_labels
from commands.progress import Progress
from commands.sources import TimeRange, TopicSource, parse_time_bound
from streams import metric_names as names
from streams import settings as settings_mod
from streams.durations import parse_duration_ms
from streams.events import Limits
from streams.gauges import gauge_rows
from streams.state import PartitionState
from streams.topics import partition_for_user

SETTINGS = (
    "kafka_bootstrap_servers",
    "app_id",
    "input_topic",
    "input_mapping",
    "windows",
    "active_types",
    "community_cap",
    "platform_cap",
    "label_allowlist",
    "future_tolerance",
    "max_event_age",
    "max_message_bytes",
)
#: (ts_ms, platform, community, user_id, type)
Row = tuple[int, str, str, str, str]
_ABSENT = -1  # a series has no sample at this step (it appeared later)


# Series store and the OpenMetrics writer (pure) ---------------------------------


@dataclass
class Series:
    """Values of one label set, one slot per step from ``first`` on."""

    first: int
    values: array = field(default_factory=lambda: array("i"))

    def put(self, step: int, value: int) -> None:
        missing = step - self.first - len(self.values)
        if missing > 0:
            self.values.extend([_ABSENT] * missing)
        self.values.append(value)


class Family:
    """One metric family's series, filled step by step."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.series: dict[tuple[str, ...], Series] = {}

    def put(self, step: int, labels: tuple[str, ...], value: int) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = Series(step)
        series.put(step, value)


def escape(value: str) -> str:
    """Label-value escaping of the exposition formats: backslash, quote, newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_seconds(ts_ms: int) -> str:
    """OpenMetrics timestamps are seconds; keep integer ms exact."""
    seconds, ms = divmod(ts_ms, 1000)
    return str(seconds) if ms == 0 else f"{seconds}.{ms:03d}"


def write_openmetrics(
    out: TextIO, families: Iterable[Family], steps: list[int], app_id: str | None = None
) -> int:
    """Write the families (contiguous, series sorted, samples ascending in time) and
    ``# EOF``; return the number of samples. ``app_id`` labels every series ``app``,
    as the live worker does, so backfilled and scraped samples are one series."""
    written = 0
    const = f'app="{escape(app_id)}",' if app_id is not None else ""
    stamps = [format_seconds(t) for t in steps]
    for family in families:
        out.write(f"# HELP {family.name} {names.HELP.get(family.name, family.name)}\n")
        out.write(f"# TYPE {family.name} gauge\n")
        label_names = names.LABELS.get(family.name, ())
        for labels in sorted(family.series):
            series = family.series[labels]
            text = ",".join(f'{n}="{escape(v)}"' for n, v in zip(label_names, labels, strict=True))
            prefix = f"{family.name}{{{const}{text}}} "
            for offset, value in enumerate(series.values):
                if value != _ABSENT:
                    out.write(f"{prefix}{value} {stamps[series.first + offset]}\n")
                    written += 1
    out.write("# EOF\n")
    return written


# The sweep (pure) ----------------------------------------------------------------


def step_times(start_ms: int, end_ms: int, step_ms: int) -> list[int]:
    """start, start + step, … while <= end."""
    if step_ms <= 0:
        raise ValueError("--step must be positive")
    if end_ms < start_ms:
        raise ValueError("--to must not be before --from")
    return list(range(start_ms, end_ms + 1, step_ms))


def partition_states(
    rows: list[Row], active_types: frozenset[str], partitions: int
) -> dict[int, PartitionState]:
    """The state of every by-user partition once a worker has applied ``rows`` (the
    merge is order independent, so any order gives the worker's records)."""
    states: dict[int, PartitionState] = {}
    for ts_ms, platform, community, user_id, kind in rows:
        p = partition_for_user(user_id, partitions)
        state = states.get(p)
        if state is None:
            state = states[p] = PartitionState(active_types)
        state.apply(platform, community, user_id, ts_ms, kind)
    return states


class Sweep:
    """Applies time-sorted events up to each step and records the gauges there."""

    def __init__(
        self,
        windows: dict[str, int],
        active_types: frozenset[str],
        community_cap: int,
        labels: CommunityLabels | None = None,
    ) -> None:
        self.windows = windows
        self.state = PartitionState(active_types)
        self.labels = CommunityLabels(community_cap) if labels is None else labels
        self.active = Family(names.ACTIVE_USERS)
        self.followers = Family(names.FOLLOWERS)
        self.lifecycle = {key: Family(name) for key, name in names.LIFECYCLE.items()}

    def families(self) -> list[Family]:
        """Every family, in the collector's order."""
        return [self.active, *self.lifecycle.values(), self.followers]

    def run(self, rows: list[Row], steps: list[int], progress: Any = None) -> None:
        rows = sorted(rows)
        apply, labels = self.state.apply, self.labels
        i = 0
        for index, t in enumerate(steps):
            while i < len(rows) and rows[i][0] <= t:
                ts_ms, platform, community, user_id, kind = rows[i]
                labels(community)
                apply(platform, community, user_id, ts_ms, kind)
                i += 1
            self.record(index, t)
            if progress is not None:
                progress.update(index + 1)

    def record(self, index: int, t: int) -> None:
        """The collector's gauge rows (:func:`streams.gauges.gauge_rows`) at step ``t``,
        after ranking the names by activity at ``t`` as the workers do."""
        longest = max(self.windows, key=lambda w: self.windows[w])
        counts = gauge_rows([self.state], t, {longest: self.windows[longest]})
        self.labels.rank_counts(counts.active, counts.followers, longest)
        rows = gauge_rows([self.state], t, self.windows, self.labels, self.labels.platforms)
        for key, value in rows.active_rows():
            self.active.put(index, key, value)
        for name, series in rows.lifecycle_rows().items():
            family = self.lifecycle[name]
            for key, value in series:
                family.put(index, key, value)
        for pair, n in rows.follower_rows():
            self.followers.put(index, pair, n)


# Reading the topic -------------------------------------------------------------


async def read_rows(
    source: TopicSource,
    progress: Any = None,
    refused: Container[tuple[int, int]] = frozenset(),
) -> list[Row]:
    """The events of the source's range that the worker would apply (what it
    refuses, and what is outside the range, is counted in ``source.tally``).

    ``refused``: (partition, offset) of records the workers refused as
    ``future_timestamp`` when they read them (the audit takes them from the DLQ) —
    no longer ahead of the clock now, but never applied."""
    rows: list[Row] = []
    append = rows.append
    tally = source.tally
    async for decoded in source.batches():
        if progress is not None:
            progress.total = source.total
        for e, _reason, record in decoded:
            if e is None:
                continue
            if refused and (record.partition, record.offset) in refused:
                tally.in_range -= 1
                tally.invalid["future_timestamp"] += 1
                continue
            append((e.ts_ms, e.platform, e.community, e.user_id, e.type))
        if progress is not None:
            progress.update(source.read, outside=source.skipped)
    return rows


def topic_source(
    conf: Any, time_range: TimeRange, now_ms: int, trust: bool = False, **kw: Any
) -> TopicSource:
    """The input topic, read with the worker's settings (limits, future tolerance,
    input mapping)."""
    limits: Limits = conf.limits
    return TopicSource(
        conf.kafka_bootstrap_servers,
        conf.input_topic,
        time_range,
        now_ms=now_ms,
        limits=limits,
        transform=conf.mapping,
        trust_timestamps=trust,
        **kw,
    )


# CLI ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from",
        dest="start",
        metavar="TIME",
        required=True,
        help="first step: RFC 3339, epoch s/ms, or relative (--from=-2d)",
    )
    parser.add_argument(
        "--to",
        dest="end",
        metavar="TIME",
        required=True,
        help="last step (inclusive); keep it 3h+ in the past, see docs",
    )
    parser.add_argument("--step", default="1m", help="time between samples (default: 1m)")
    parser.add_argument(
        "--history",
        default="all",
        metavar="DURATION",
        help="events read before --from: all (default; followers need every "
        "follow ever made) or a duration such as 30d (faster; exact "
        "active-user gauges, followers only from follows in it)",
    )
    parser.add_argument(
        "--output", "-o", default="-", metavar="FILE", help="OpenMetrics file (default: stdout)"
    )
    parser.add_argument(
        "--trust-timestamps",
        action="store_true",
        help="no record is stamped earlier than its event time minus the future tolerance: "
        "read each partition from the first record stamped at or after --from - --history "
        "minus the tolerance (default: every record)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    settings_mod.add_arguments(parser, names=SETTINGS)


async def backfill(args: argparse.Namespace, conf: Any, out: TextIO) -> str:
    """Read, sweep, write; return the summary line."""
    now_ms = int(time.time() * 1000)
    start, end = parse_time_bound(args.start, now_ms), parse_time_bound(args.end, now_ms)
    steps = step_times(start, end, parse_duration_ms(args.step))
    windows = conf.window_ms
    first = None if args.history == "all" else start - parse_duration_ms(args.history)
    source = topic_source(conf, TimeRange(first, end + 1), now_ms, args.trust_timestamps)
    reading = Progress("backfill: reading", unit="records", enabled=not args.quiet)
    rows = await read_rows(source, reading)
    reading.close()
    sweep = Sweep(windows, conf.active_type_set, conf.community_cap, worker_labels(conf))
    sweeping = Progress("backfill: steps", total=len(steps), unit="steps", enabled=not args.quiet)
    sweep.run(rows, steps, sweeping)
    sweeping.close()
    samples = write_openmetrics(out, sweep.families(), steps, conf.app_id)
    return f"backfill: {source.tally.summary()}; {len(steps)} steps, {samples} samples"


def run(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    conf = settings_mod.from_args(args)
    out = sys.stdout if args.output == "-" else open(args.output, "w")  # noqa: SIM115
    try:
        summary = asyncio.run(backfill(args, conf, out))
    except KafkaError as exc:
        print(f"backfill: Kafka at {conf.kafka_bootstrap_servers}: {failure(exc)}", file=sys.stderr)
        return 1
    finally:
        if out is not sys.stdout:
            out.close()
    print(summary, file=sys.stderr)
    return 0
