"""The engagement metrics, computed at scrape time.

Active-user and follower gauges are derived from the state of the partitions this
worker holds at the moment of the scrape, so a rebalance never leaves a stale
series behind. Counters and the lag histogram are per input partition, state the
ingest stage commits with its offsets (:mod:`agents.ingest_counters`): exposed
with a ``partition`` label for the partitions this worker owns, so a moved
partition's series goes on from the same value on its new owner.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from agents.gauge_text import GaugeText
from agents.ingest_counters import PartitionCounters, PollTally
from agents.labelled_totals import LabelledTotals
from agents.labels import CommunityLabels
from streams import metric_names as names
from streams.clock import Clock
from streams.lateness import DELAY_BUCKETS, LateEvents
from streams.live_counts import LiveCounts
from streams.state import Lifecycle, WorkerState

PC = tuple[str, str]

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
    """The counters of the input partitions this worker's ingest stage owns."""

    def __init__(self, labels: CommunityLabels) -> None:
        self.labels = labels
        self.partitions: dict[int, PartitionCounters] = {}
        # Fed by the state stage (it sees events in the order they are applied).
        self.late = LateEvents()

    def tally(self) -> PollTally:
        """A tally for one poll of one partition (see :func:`agents.ingest_counters.apply`)."""
        return PollTally(self.labels, len(LAG_BUCKETS) + 1)

    def counters(self, partition: int) -> PartitionCounters:
        counters = self.partitions.get(partition)
        if counters is None:
            counters = self.partitions[partition] = PartitionCounters(len(LAG_BUCKETS) + 1)
        return counters


class EngagementCollector(Collector):
    """prometheus_client custom collector over the worker's live state.

    The per-community gauges come from one :class:`streams.live_counts.LiveCounts`
    (shared with the read model in the worker) through :class:`LabelledTotals`, so a
    scrape recomputes only what changed. :meth:`collect` yields every family (for
    any registry); the worker's ``/metrics`` page instead serves :meth:`text` for
    the per-community families and the ``events`` counter, and :attr:`rest` (the
    other families) through ``generate_latest``.
    """

    def __init__(
        self,
        state: WorkerState,
        stats: IngestStats,
        clock: Clock,
        windows: dict[str, int],
        live: LiveCounts | None = None,
        app_id: str | None = None,
    ) -> None:
        self.state = state
        self.stats = stats
        self.clock = clock
        self.windows = windows
        self.live = live if live is not None else LiveCounts(state, windows)
        labels = stats.labels
        self.totals = LabelledTotals(self.live, labels, labels.platforms, labels.generations)
        self.gauge_text = GaugeText(self.totals, app_id)
        self.rest = _Rest(self)

    def text(self, only: Collection[str] | None = None) -> str:
        """The per-community families and the events counter, in the text format
        (``only``: the families of these names)."""
        events = {p: counters.events for p, counters in self.stats.partitions.items()}
        return self.gauge_text.text(self.clock.now_ms(), events, only)

    def collect(self) -> Iterator[Metric]:
        totals = self.totals
        totals.update(self.clock.now_ms())
        yield self._active_users(totals.active)
        yield from self._lifecycle(totals.lifecycle)
        yield self._followers(totals.followers)
        yield self._events()
        yield from self.collect_rest()

    def collect_rest(self) -> Iterator[Metric]:
        """Everything but what :meth:`text` renders."""
        yield self._invalid()
        yield self._lag()
        yield from self._late()
        yield self._watermark()

    def _active_users(self, active: dict[PC, dict[str, int]]) -> Metric:
        family = GaugeMetricFamily(
            names.ACTIVE_USERS,
            names.HELP[names.ACTIVE_USERS],
            labels=names.LABELS[names.ACTIVE_USERS],
        )
        for (platform, community), counts in sorted(active.items()):
            for window, value in counts.items():
                family.add_metric([platform, community, window], value)
        return family

    def _lifecycle(self, lifecycle: dict[PC, dict[str, Lifecycle]]) -> Iterator[Metric]:
        rows = sorted(lifecycle.items())
        for i, name in enumerate(names.LIFECYCLE.values()):
            family = GaugeMetricFamily(name, names.HELP[name], labels=names.LABELS[name])
            for (platform, community), counts in rows:
                for window, value in counts.items():
                    family.add_metric([platform, community, window], value[i])
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

    def _followers(self, followers: dict[PC, int]) -> Metric:
        family = GaugeMetricFamily(
            names.FOLLOWERS, names.HELP[names.FOLLOWERS], labels=names.LABELS[names.FOLLOWERS]
        )
        for pair, value in sorted(followers.items()):
            family.add_metric(list(pair), value)
        return family

    def _events(self) -> Metric:
        events = CounterMetricFamily(
            names.EVENTS,
            names.HELP[names.EVENTS],
            labels=[*names.LABELS[names.EVENTS], "partition"],
        )
        for partition, counters in sorted(self.stats.partitions.items()):
            label = str(partition)
            for key, value in sorted(counters.events.items()):
                events.add_metric([*key, label], value)
        return events

    def _invalid(self) -> Metric:
        invalid = CounterMetricFamily(
            names.INVALID_EVENTS,
            names.HELP[names.INVALID_EVENTS],
            labels=[*names.LABELS[names.INVALID_EVENTS], "partition"],
        )
        for partition, counters in sorted(self.stats.partitions.items()):
            for reason, value in counters.invalid.items():
                invalid.add_metric([reason, str(partition)], value)
        return invalid

    def _lag(self) -> Metric:
        family = HistogramMetricFamily(
            names.EVENT_LAG, names.HELP[names.EVENT_LAG], labels=["partition"]
        )
        for partition, counters in sorted(self.stats.partitions.items()):
            buckets = _cumulative(LAG_BUCKETS, counters.lag_buckets)
            family.add_metric([str(partition)], buckets, counters.lag_sum)
        return family

    def _watermark(self) -> Metric:
        family = GaugeMetricFamily(names.WATERMARK, names.HELP[names.WATERMARK])
        watermark = self.clock.watermark_ms()
        if watermark is not None:
            family.add_metric([], watermark / 1000)
        return family


class _Rest(Collector):
    """The collector's families that :meth:`EngagementCollector.text` does not render."""

    def __init__(self, collector: EngagementCollector) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Metric]:
        return self.collector.collect_rest()


def _histogram(
    name: str, bounds: tuple[float, ...], counts: list[int], total: float
) -> HistogramMetricFamily:
    """A histogram family from per-bucket (not cumulative) counts, the last one +Inf."""
    buckets = _cumulative(bounds, counts)
    return HistogramMetricFamily(name, names.HELP[name], buckets=buckets, sum_value=total)


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    cumulative, buckets = 0, []
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        cumulative += count
        buckets.append((_bound_label(bound), float(cumulative)))
    return buckets


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
        return self.collect_only(None)

    def collect_only(self, only: Collection[str] | None) -> Iterator[Metric]:
        """:meth:`collect`, only the families named in ``only`` (or with a sample so
        named) if given."""
        extra = {APP_LABEL: self.app_id}
        for family in self.source.collect():
            if only is not None and not _named(family, only):
                continue
            out = Metric(family.name, family.documentation, family.type, family.unit)
            out.samples = [_with(sample, extra) for sample in family.samples]
            yield out


class Only(Collector):
    """The families of ``source`` named in ``only`` (a scrape's ``name[]``)."""

    def __init__(self, source: AppLabelled, only: Collection[str]) -> None:
        self.source = source
        self.only = only

    def collect(self) -> Iterator[Metric]:
        return self.source.collect_only(self.only)


def _named(family: Metric, only: Collection[str]) -> bool:
    return family.name in only or any(sample.name in only for sample in family.samples)


def _with(sample: Sample, extra: dict[str, str]) -> Sample:
    return sample._replace(labels={**extra, **sample.labels})
