"""The scrape-time collector: names, labels, the community cap, the clocks."""

from __future__ import annotations

import bisect
import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents.ingest_counters import apply
from agents.labels import CommunityLabels
from agents.metrics import LAG_BUCKETS, EngagementCollector, IngestStats
from commands.watch import build_table, parse
from streams.clock import Clock
from streams.events import DEFAULT_ACTIVE_TYPES, REASONS
from streams.state import WorkerState

WINDOWS = {"5m": 300_000, "1h": 3_600_000}
T = 1_800_000_000_000


def scrape(state: WorkerState, stats: IngestStats, clock: Clock) -> dict:
    registry = CollectorRegistry()
    registry.register(EngagementCollector(state, stats, clock, WINDOWS))
    out: dict = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def count_event(stats: IngestStats, platform: str, community: str, kind: str, lag_s: float) -> None:
    """One event of input partition 0, as the ingest stage tallies and commits a poll."""
    tally = stats.tally()
    buckets = [0] * (len(LAG_BUCKETS) + 1)
    buckets[bisect.bisect_left(LAG_BUCKETS, lag_s)] = 1
    tally.add({(platform, community, kind): 1}, buckets, lag_s)
    stats.partitions[0] = apply(tally, stats.counters(0))[0]


def count_invalid(stats: IngestStats, reason: str) -> None:
    tally = stats.tally()
    tally.count_invalid(reason)
    stats.partitions[0] = apply(tally, stats.counters(0))[0]


def make_state() -> WorkerState:
    state = WorkerState(DEFAULT_ACTIVE_TYPES)
    part = state.assign(0)
    for i, community in enumerate(["a", "b", "c", "c"]):
        part.apply("tw", community, f"u{i}", T - 60_000 * i, "like")
    part.apply("tw", "c", "u9", T - 2 * 3_600_000, "follow")
    return state


def test_cap_folds_later_communities_into_other() -> None:
    state = make_state()
    stats = IngestStats(CommunityLabels(cap=2))
    samples = scrape(state, stats, Clock("event", state.watermark_ms))
    active = {
        dict(k)["community"]: v
        for (name, k), v in samples.items()
        if name == "engagement_active_users" and dict(k)["window"] == "5m"
    }
    # a and b keep their names; c (two active users in 5m) is shown as _other
    assert active == {"*": 4, "a": 1, "b": 1, "_other": 2}
    followers = {
        dict(k)["community"]: v
        for (name, k), v in samples.items()
        if name == "engagement_followers"
    }
    assert followers == {"*": 1, "_other": 1}


def test_every_reason_is_exposed_and_counters_count() -> None:
    state = make_state()
    stats = IngestStats(CommunityLabels(cap=10))
    count_event(stats, "tw", "a", "like", 0.2)
    count_event(stats, "tw", "a", "like", 400.0)
    count_invalid(stats, "not_json")
    samples = scrape(state, stats, Clock("event", state.watermark_ms))
    invalid = {
        dict(k)["reason"]: v
        for (name, k), v in samples.items()
        if name == "engagement_invalid_events_total"
    }
    assert invalid == {reason: (1.0 if reason == "not_json" else 0.0) for reason in REASONS}
    p0 = (("partition", "0"),)
    key = (("community", "a"), ("partition", "0"), ("platform", "tw"), ("type", "like"))
    assert samples[("engagement_events_total", key)] == 2
    assert samples[("engagement_event_lag_seconds_count", p0)] == 2
    assert samples[("engagement_event_lag_seconds_bucket", (("le", "0.5"), *p0))] == 1
    assert samples[("engagement_event_lag_seconds_sum", p0)] == 400.2
    assert samples[("engagement_watermark_seconds", ())] == T / 1000


def test_event_clock_is_monotonic_and_wall_clock_is_now() -> None:
    marks = [T, T - 10]
    clock = Clock("event", lambda: marks.pop(0))
    assert clock.now_ms() == T
    assert clock.now_ms() == T  # a lower watermark (partition revoked) never moves it back
    assert Clock("event", lambda: None).now_ms() is None
    wall = Clock("wall", lambda: None).now_ms()
    assert wall is not None and abs(wall - time.time() * 1000) < 5_000


def test_watch_table_from_exposition_text() -> None:
    state = make_state()
    stats = IngestStats(CommunityLabels(cap=10))
    registry = CollectorRegistry()
    registry.register(
        EngagementCollector(state, stats, Clock("event", state.watermark_ms), WINDOWS)
    )
    active, followers = parse(generate_latest(registry).decode())
    assert active[("tw", "c")] == {"5m": 2, "1h": 2}
    assert followers[("tw", "c")] == 1
    table = build_table(active, followers, ["5m", "1h"], top=3, title="t")
    assert table.row_count == 3


def test_every_sample_of_the_page_carries_the_app_label() -> None:
    """Two apps scraped by one job stay apart: app=<app id> on every sample of the
    registry (our families, counters' _created, histogram buckets, other collectors)."""
    from prometheus_client import Counter

    from agents.metrics import AppLabelled

    state = make_state()
    stats = IngestStats(CommunityLabels(cap=10))
    count_event(stats, "tw", "a", "like", 0.2)
    registry = CollectorRegistry()
    registry.register(
        EngagementCollector(state, stats, Clock("event", state.watermark_ms), WINDOWS)
    )
    Counter("other_total", "another collector", ["x"], registry=registry).labels("1").inc()
    text = generate_latest(AppLabelled(registry, "shop")).decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    names = {s.name for s in samples}
    assert {"engagement_active_users", "engagement_event_lag_seconds_bucket"} <= names
    assert {"other_total", "engagement_watermark_seconds"} <= names
    assert all(s.labels["app"] == "shop" for s in samples)
    plain = generate_latest(registry).decode()
    assert (
        'app="' not in plain
        and text.replace('app="shop",', "").replace('{app="shop"}', "") == plain
    )


def test_lifecycle_and_late_events_are_exposed() -> None:
    state = make_state()
    stats = IngestStats(CommunityLabels(cap=10))
    part = state.partitions[0]
    # u9 follows c (T - 2h) and is active in it now; u8 was active in c 2h ago (dormant
    # in 1h), u7 only viewed c (new, not active)
    part.apply("tw", "c", "u9", T, "like")
    part.apply("tw", "c", "u8", T - 2 * 3_600_000 + 1, "like")
    part.apply("tw", "c", "u7", T - 10, "view")
    # one batch as the state stage sees it: in order, behind the clock by 0, 2 and 1500 ms
    stats.late.observe([[T, "tw"], [T - 2, "tw"], [T - 1_500, "ig"], [T + 5, "tw"]], T)
    samples = scrape(state, stats, Clock("event", state.watermark_ms))

    def gauge(name: str, window: str, community: str = "c") -> float:
        key = (("community", community), ("platform", "tw"), ("window", window))
        return samples[(name, key)]

    assert gauge("engagement_active_followers", "5m") == 1
    assert gauge("engagement_new_users", "5m") == 3  # u2, u3 (likes at T-2m, T-3m), u7
    assert gauge("engagement_new_users", "1h") == 3
    assert gauge("engagement_returning_users", "5m") == 1  # u9: first seen T - 2h
    assert gauge("engagement_dormant_users", "1h") == 1  # u8
    assert gauge("engagement_dormant_users", "5m") == 0
    assert gauge("engagement_new_users", "1h", "*") == 5  # u0, u1, u2, u3, u7
    assert samples[("engagement_late_events_total", (("platform", "tw"),))] == 1
    assert samples[("engagement_late_events_total", (("platform", "ig"),))] == 1
    assert samples[("engagement_late_event_delay_seconds_count", ())] == 2
    assert samples[("engagement_late_event_delay_seconds_bucket", (("le", "0.001"),))] == 0
    assert samples[("engagement_late_event_delay_seconds_bucket", (("le", "0.01"),))] == 1
    assert samples[("engagement_late_event_delay_seconds_sum", ())] == 1.502
