"""The engagement metrics, computed at scrape time.

Active-user and follower gauges are derived from the state of the partitions this
worker holds at the moment of the scrape, so a rebalance never leaves a stale
series behind. Counters and the lag histogram are plain in-process tallies that
the ingest stage bumps per event (a dict increment is far cheaper than a
prometheus_client ``inc()``), turned into metric families here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from agents.labels import CommunityLabels
from streams import metric_names as names
from streams.clock import Clock
from streams.events import REASONS
from streams.gauges import Gauges, gauge_rows
from streams.lateness import DELAY_BUCKETS, LateEvents
from streams.state import WorkerState

#: Label naming the worker's app id on every sample of its ``/metrics``.
APP_LABEL = "app"

LAG_BUCKETS: tuple[float, ...] = (
    0.1,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    900,
    3600,
    21600,
    86400,
    604800,
)


class IngestStats:
    """Counts kept by the ingest stage; one instance per worker process."""

    def __init__(self, labels: CommunityLabels) -> None:
        self.labels = labels
        self.events: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.invalid: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.lag_buckets = [0] * (len(LAG_BUCKETS) + 1)
        self.lag_sum = 0.0
        # Fed by the state stage (it sees events in the order they are applied).
        self.late = LateEvents()

    def add(
        self, counts: dict[tuple[str, str, str], int], lag_buckets: list[int], lag_sum: float
    ) -> None:
        """Merge one poll's tallies (names go through the label caps here, so each
        counter series only ever grows)."""
        events, labels, platforms = self.events, self.labels, self.labels.platforms
        for (platform, community, event_type), n in counts.items():
            events[(platforms(platform), labels(community), event_type)] += n
        for i, n in enumerate(lag_buckets):
            self.lag_buckets[i] += n
        self.lag_sum += lag_sum

    def count_invalid(self, reason: str) -> None:
        self.invalid[reason] += 1


class EngagementCollector(Collector):
    """prometheus_client custom collector over the worker's live state."""

    def __init__(
        self,
        state: WorkerState,
        stats: IngestStats,
        clock: Clock,
        windows: dict[str, int],
    ) -> None:
        self.state = state
        self.stats = stats
        self.clock = clock
        self.windows = windows

    def collect(self) -> Iterator[Metric]:
        labels = self.stats.labels
        rows = gauge_rows(
            self.state.partitions.values(),
            self.clock.now_ms(),
            self.windows,
            labels,
            labels.platforms,
        )
        yield self._active_users(rows)
        yield from self._lifecycle(rows)
        yield self._followers(rows)
        yield from self._ingest_counters()
        yield self._lag()
        yield from self._late()
        yield self._watermark()

    def _active_users(self, rows: Gauges) -> Metric:
        family = GaugeMetricFamily(
            names.ACTIVE_USERS,
            names.HELP[names.ACTIVE_USERS],
            labels=names.LABELS[names.ACTIVE_USERS],
        )
        for key, value in rows.active_rows():
            family.add_metric(list(key), value)
        return family

    def _lifecycle(self, rows: Gauges) -> Iterator[Metric]:
        by_field = rows.lifecycle_rows()
        for field, name in names.LIFECYCLE.items():
            family = GaugeMetricFamily(name, names.HELP[name], labels=names.LABELS[name])
            for key, value in by_field[field]:
                family.add_metric(list(key), value)
            yield family

    def _late(self) -> Iterator[Metric]:
        late = self.stats.late
        counter = CounterMetricFamily(
            names.LATE_EVENTS, names.HELP[names.LATE_EVENTS], labels=names.LABELS[names.LATE_EVENTS]
        )
        for platform, n in sorted(late.counts.items()):
            counter.add_metric([platform], n)
        yield counter
        yield _histogram(names.LATE_EVENT_DELAY, DELAY_BUCKETS, late.buckets, late.delay_sum_s)

    def _followers(self, rows: Gauges) -> Metric:
        family = GaugeMetricFamily(
            names.FOLLOWERS, names.HELP[names.FOLLOWERS], labels=names.LABELS[names.FOLLOWERS]
        )
        for pair, value in rows.follower_rows():
            family.add_metric(list(pair), value)
        return family

    def _ingest_counters(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            names.EVENTS, names.HELP[names.EVENTS], labels=names.LABELS[names.EVENTS]
        )
        for key, value in sorted(self.stats.events.items()):
            events.add_metric(list(key), value)
        yield events
        invalid = CounterMetricFamily(
            names.INVALID_EVENTS,
            names.HELP[names.INVALID_EVENTS],
            labels=names.LABELS[names.INVALID_EVENTS],
        )
        for reason, value in self.stats.invalid.items():
            invalid.add_metric([reason], value)
        yield invalid

    def _lag(self) -> Metric:
        return _histogram(names.EVENT_LAG, LAG_BUCKETS, self.stats.lag_buckets, self.stats.lag_sum)

    def _watermark(self) -> Metric:
        family = GaugeMetricFamily(names.WATERMARK, names.HELP[names.WATERMARK])
        watermark = self.clock.watermark_ms()
        if watermark is not None:
            family.add_metric([], watermark / 1000)
        return family


def _histogram(
    name: str, bounds: tuple[float, ...], counts: list[int], total: float
) -> HistogramMetricFamily:
    """A histogram family from per-bucket (not cumulative) counts, the last one +Inf."""
    cumulative, buckets = 0, []
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        cumulative += count
        buckets.append((_bound_label(bound), cumulative))
    return HistogramMetricFamily(name, names.HELP[name], buckets=buckets, sum_value=total)


def _bound_label(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class AppLabelled(Collector):
    """Every sample of ``source`` with ``app="<app id>"`` added.

    Several apps scraped by one Prometheus job would otherwise be indistinguishable
    and silently summed by the recording rules (``sum without (instance, job)``).
    Applied to the whole registry, so Faust's offset gauges (consumer lag per app)
    carry it too.
    """

    def __init__(self, source: Collector, app_id: str) -> None:
        self.source = source
        self.app_id = app_id

    def collect(self) -> Iterator[Metric]:
        extra = {APP_LABEL: self.app_id}
        for family in self.source.collect():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            out.samples = [_with(sample, extra) for sample in family.samples]
            yield out


def _with(sample: Sample, extra: dict[str, str]) -> Sample:
    return sample._replace(labels={**extra, **sample.labels})
