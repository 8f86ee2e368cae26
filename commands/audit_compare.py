"""The audit's comparison, pure: recomputed series against live ones.

:mod:`commands.audit` reads the input topic, Redis and the workers' ``/metrics``;
this module turns both sides into series (``name{labels}`` -> value, a series absent
on one side counting 0) and compares them: each Redis snapshot's partition at the
clock the snapshot carries, and the workers' ``/metrics`` summed, against every
partition at its owner's clock (event clock) or between the values recomputed just
before and just after the scrapes (wall clock). The arithmetic is the back-fill's
(:func:`commands.backfill.partition_states`) and the collector's
(:func:`streams.gauges.gauge_rows`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agents.labels import CommunityLabels
from commands.backfill import Row, escape, partition_states
from streams import metric_names as names
from streams.gauges import Gauges, gauge_rows
from streams.state import PartitionState

#: series name with labels -> value; a series absent on one side counts 0 there
Series = dict[str, int]
#: the families compared: every gauge computed from the state (a family that
#: streams.gauges.gauge_rows adds belongs here, with its rows in to_series)
AUDITED = (names.ACTIVE_USERS, *names.LIFECYCLE.values(), names.FOLLOWERS)


def series_name(metric: str, labels: Iterable[str]) -> str:
    label_names = names.LABELS[metric]
    text = ",".join(f'{n}="{escape(v)}"' for n, v in zip(label_names, labels, strict=True))
    return f"{metric}{{{text}}}"


def to_series(gauges: Gauges) -> Series:
    out = {series_name(names.ACTIVE_USERS, key): n for key, n in gauges.active_rows()}
    for field_name, rows in gauges.lifecycle_rows().items():
        metric = names.LIFECYCLE[field_name]
        out.update((series_name(metric, key), n) for key, n in rows)
    out.update((series_name(names.FOLLOWERS, pair), n) for pair, n in gauges.follower_rows())
    return out


def add_series(total: Series, part: Series) -> None:
    for name, n in part.items():
        total[name] = total.get(name, 0) + n


@dataclass
class Difference:
    series: str
    live: int
    expected: int | tuple[int, int]  # a pair: the values just before and after a scrape


@dataclass
class SourceReport:
    """One live source (the Redis snapshots, or the workers' /metrics) against the input."""

    source: str
    series: int = 0
    differences: list[Difference] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # e.g. a partition without snapshot

    @property
    def equal(self) -> bool:
        return not self.differences and not self.problems


def compare(
    source: str, live: Series, expected: Series, later: Series | None = None
) -> SourceReport:
    """Every series of either side; ``later`` (wall clock) widens ``expected`` to the
    range between the two recomputations."""
    report = SourceReport(source)
    names = sorted(set(live) | set(expected) | set(later or {}))
    report.series = len(names)
    for name in names:
        got, want = live.get(name, 0), expected.get(name, 0)
        if later is None:
            if got != want:
                report.differences.append(Difference(name, got, want))
            continue
        other = later.get(name, 0)
        if not min(want, other) <= got <= max(want, other):
            report.differences.append(
                Difference(name, got, (want, other) if want != other else want)
            )
    return report


def render(reports: list[SourceReport], header: str) -> str:
    lines = [header]
    for r in reports:
        lines.append(f"{r.source}: {r.series} series, {len(r.differences)} differ")
        lines.extend(f"  {p}" for p in r.problems)
        for d in r.differences:
            want = (
                d.expected if isinstance(d.expected, int) else f"{d.expected[0]}..{d.expected[1]}"
            )
            lines.append(f"  {d.series}: live {d.live}, expected {want}")
    equal = all(r.equal for r in reports)
    lines.append("audit: all equal" if equal else "audit: DIFFERENCES")
    return "\n".join(lines)


def document(reports: list[SourceReport], info: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": "engagement-monitor/audit/1",
        **info,
        "equal": all(r.equal for r in reports),
        "sources": [
            {
                "source": r.source,
                "series": r.series,
                "problems": r.problems,
                "differences": [
                    {"series": d.series, "live": d.live, "expected": d.expected}
                    for d in r.differences
                ],
            }
            for r in reports
        ],
    }


@dataclass
class Expected:
    """The recomputed state: one :class:`PartitionState` per by-user partition."""

    states: dict[int, PartitionState]
    windows: dict[str, int]
    labels: CommunityLabels
    active_types: frozenset[str]

    def partition(self, p: int) -> PartitionState:
        return self.states.get(p) or PartitionState(self.active_types)

    def rows_at(self, p: int, now_ms: int | None, capped: bool) -> Series:
        """One partition's series at ``now_ms`` (None: the event clock has no time
        yet, so only followers, as the worker's snapshot has)."""
        state = self.partition(p)
        if capped:
            labels = self.labels
            return to_series(gauge_rows([state], now_ms, self.windows, labels, labels.platforms))
        return to_series(gauge_rows([state], now_ms, self.windows))


def expected_state(
    rows: list[Row], partitions: int, windows: dict[str, int], types: frozenset[str], cap: int
) -> Expected:
    labels = CommunityLabels(cap)
    states = partition_states(rows, types, partitions)
    if rows:  # ranked by activity at the event clock, as the workers rank the snapshots
        longest = max(windows, key=lambda w: windows[w])
        clock = max(row[0] for row in rows)
        counts = gauge_rows(states.values(), clock, {longest: windows[longest]})
        labels.rank_counts(counts.active, counts.followers, longest)
    return Expected(states, windows, labels, types)


def snapshot_series(snap: Any) -> Series:
    gauges = Gauges()
    gauges.add_active(snap.active)
    gauges.add_lifecycle(snap.lifecycle)
    gauges.add_followers(snap.followers)
    return to_series(gauges)


def audit_redis(expected: Expected, snapshots: list[Any], partitions: int) -> SourceReport:
    """Sum of the snapshots against the sum of each partition at its snapshot's clock."""
    live: Series = {}
    want: Series = {}
    held = {s.partition for s in snapshots}
    for snap in snapshots:
        add_series(live, snapshot_series(snap))
        add_series(want, expected.rows_at(snap.partition, snap.now_ms, capped=False))
    report = compare(f"redis ({len(snapshots)} partition snapshots)", live, want)
    for p in sorted(set(range(partitions)) - held):
        if expected.states.get(p) is not None and len(expected.states[p]):
            report.problems.append(f"partition {p} has no snapshot in Redis")
    return report


def audit_metrics(
    expected: Expected,
    scraped: list[tuple[str, Series, int | None]],
    clocks: dict[int, int | None],
    partitions: int,
    wall: tuple[int, int] | None,
) -> SourceReport:
    """The workers' /metrics summed, against every partition at its clock (``clocks``,
    event clock) or at the scrape times (``wall``: before, after)."""
    live: Series = {}
    for _url, series, _watermark in scraped:
        add_series(live, series)
    name = "metrics (" + ", ".join(url for url, _s, _w in scraped) + ")"
    if wall is not None:
        before: Series = {}
        after: Series = {}
        for p in range(partitions):
            add_series(before, expected.rows_at(p, wall[0], capped=True))
            add_series(after, expected.rows_at(p, wall[1], capped=True))
        return compare(name, live, before, after)
    want: Series = {}
    for p in range(partitions):
        add_series(want, expected.rows_at(p, clocks.get(p), capped=True))
    return compare(name, live, want)


def metric_series(text: str) -> tuple[Series, int | None]:
    """The gauges of one /metrics page, and its watermark (ms)."""
    from prometheus_client.parser import text_string_to_metric_families

    series: Series = {}
    watermark = None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in AUDITED:
                labels = [s.labels[n] for n in names.LABELS[s.name]]
                series[series_name(s.name, labels)] = int(s.value)
            elif s.name == names.WATERMARK:
                watermark = round(s.value * 1000)
    return series, watermark
