"""The gauge rows: active users, the audience lifecycle per window, and followers per
(platform, community).

One computation for every place that shows them: the worker's ``/metrics`` collector
(:mod:`agents.metrics`), ``backfill`` (past values), the Redis snapshots
(:mod:`agents.redis_snapshots`, one partition each) and ``status``/the API, which sum
the snapshots (:func:`agents.readmodel.sum_snapshots`). Users are partitioned, so the
counts of different partitions cover disjoint users and simply add up.

``label`` and ``platform_label`` map a name to its exposed label value (the caps of
:class:`agents.labels.CommunityLabels`); names that share a label are summed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from streams.metric_names import STICKINESS
from streams.state import Lifecycle, PartitionState

PC = tuple[str, str]  # (platform, community)


def _same(community: str) -> str:
    return community


@dataclass
class Gauges:
    """{(platform, community label): {window: users}}, the same with a :class:`Lifecycle`
    per window, and {(platform, label): followers}."""

    active: dict[PC, dict[str, int]] = field(default_factory=dict)
    followers: dict[PC, int] = field(default_factory=dict)
    lifecycle: dict[PC, dict[str, Lifecycle]] = field(default_factory=dict)

    def add_active(
        self,
        active: Mapping[PC, Mapping[str, int]],
        label: Callable[[str], str] = _same,
        platform_label: Callable[[str], str] = _same,
    ) -> None:
        for (platform, community), counts in active.items():
            total = self.active.setdefault((platform_label(platform), label(community)), {})
            for window, n in counts.items():
                total[window] = total.get(window, 0) + n

    def add_followers(
        self,
        followers: Mapping[PC, int],
        label: Callable[[str], str] = _same,
        platform_label: Callable[[str], str] = _same,
    ) -> None:
        for (platform, community), n in followers.items():
            key = (platform_label(platform), label(community))
            self.followers[key] = self.followers.get(key, 0) + n

    def add_lifecycle(
        self,
        lifecycle: Mapping[PC, Mapping[str, Lifecycle]],
        label: Callable[[str], str] = _same,
        platform_label: Callable[[str], str] = _same,
    ) -> None:
        for (platform, community), counts in lifecycle.items():
            key = (platform_label(platform), label(community))
            total = self.lifecycle.setdefault(key, {})
            for window, n in counts.items():
                before = total.get(window)
                total[window] = n if before is None else before.plus(n)

    def lifecycle_rows(self) -> dict[str, list[tuple[tuple[str, str, str], int]]]:
        """{Lifecycle field: [((platform, community, window), users), ...]}, sorted."""
        rows = sorted(
            ((p, c, window), n)
            for (p, c), counts in self.lifecycle.items()
            for window, n in counts.items()
        )
        return {name: [(key, n[i]) for key, n in rows] for i, name in enumerate(Lifecycle._fields)}

    def active_rows(self) -> list[tuple[tuple[str, str, str], int]]:
        """((platform, community, window), users), sorted: the exposition order."""
        return sorted(
            ((p, c, window), n)
            for (p, c), counts in self.active.items()
            for window, n in counts.items()
        )

    def follower_rows(self) -> list[tuple[PC, int]]:
        return sorted(self.followers.items())


def gauge_rows(
    partitions: Iterable[PartitionState],
    now_ms: int | None,
    windows: dict[str, int],
    label: Callable[[str], str] = _same,
    platform_label: Callable[[str], str] = _same,
) -> Gauges:
    """The gauges over ``partitions`` at ``now_ms`` (None: no clock yet, followers only).

    Active counts of every partition are labelled before any follower count, so the
    community cap admits communities in the same order wherever this runs.
    """
    parts = list(partitions)
    gauges = Gauges()
    if now_ms is not None:
        for part in parts:
            gauges.add_active(part.active_counts(now_ms, windows), label, platform_label)
        for part in parts:
            gauges.add_lifecycle(part.lifecycle_counts(now_ms, windows), label, platform_label)
    for part in parts:
        gauges.add_followers(part.follower_counts(), label, platform_label)
    return gauges


def ratio(numerator: int | None, denominator: int | None) -> float | None:
    """numerator / denominator rounded to 6 places; None when undefined."""
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 6)


def stickiness(active: Mapping[str, int]) -> dict[str, float | None]:
    """{"dau_mau": 1d / 30d, "dau_wau": 1d / 7d} of one row's window counts."""
    return {
        name: ratio(active.get(num), active.get(den)) for name, (num, den) in STICKINESS.items()
    }
