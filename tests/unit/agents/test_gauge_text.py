"""The /metrics fast path: labelled sums kept by differences and the cached text.

Reference: :func:`streams.gauges.gauge_rows` over every partition with the same
label caps (checked against tests/oracle.py in test_gauges.py), and the text that
prometheus_client renders for the same samples. Steps mix new events, a moving
clock, re-rankings that move names between their own label and ``_other`` (and a
platform into ``_other``), a rebuilt partition and a revoked one.
"""

from __future__ import annotations

import random

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.gauge_text import GAUGES
from agents.ingest_counters import apply
from agents.labels import CommunityLabels, LabelCap
from agents.metrics import EngagementCollector, IngestStats
from streams import metric_names as names
from streams.clock import Clock
from streams.events import DEFAULT_ACTIVE_TYPES, EVENT_TYPES
from streams.gauges import gauge_rows
from streams.state import WorkerState
from streams.topics import partition_for_user

WINDOWS = {"5m": 300_000, "1h": 3_600_000, "1d": 86_400_000}
NOW = 1_800_000_000_000
PARTS = 3


def count(stats: IngestStats, partition: int, platform: str, community: str) -> None:
    """One event of an input partition, as the ingest stage tallies and commits a poll."""
    tally = stats.tally()
    tally.add({(platform, community, "like"): 1}, [0] * len(tally.lag_buckets), 0.0)
    stats.partitions[partition] = apply(tally, stats.counters(partition))[0]


def samples(text: str) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def expected(state: WorkerState, now: int, labels: CommunityLabels, app: str) -> dict:
    """The samples of the per-community families, computed from scratch."""
    g = gauge_rows(state.partitions.values(), now, WINDOWS, labels, labels.platforms)
    out: dict = {}

    def put(name: str, value: int, **kv: str) -> None:
        out[(name, tuple(sorted({"app": app, **kv}.items())))] = float(value)

    for (p, c), counts in g.active.items():
        for w, n in counts.items():
            put(names.ACTIVE_USERS, n, platform=p, community=c, window=w)
    for (p, c), audience in g.lifecycle.items():
        for w, counts4 in audience.items():
            for i, name in enumerate(names.LIFECYCLE.values()):
                put(name, counts4[i], platform=p, community=c, window=w)
    for (p, c), followers in g.followers.items():
        put(names.FOLLOWERS, followers, platform=p, community=c)
    return out


#: scrapes' ``name[]``: mostly whole pages; or mostly the active family, as a probe or
#: a live panel scrapes, so that the audience sums wait through changes, re-rankings,
#: rebuilds and revocations before a whole page reads them
SCRAPES = {
    "mixed": [None, None, *({name} for name in GAUGES)],
    "active": [{names.ACTIVE_USERS}] * 6 + [None],
}


@pytest.mark.parametrize(("mix", "seed", "steps"), [("mixed", 5, 80), ("active", 11, 300)])
def test_fast_text_equals_a_full_computation_at_every_step(mix: str, seed: int, steps: int) -> None:
    rng = random.Random(seed)
    types = sorted(EVENT_TYPES)
    state = WorkerState(DEFAULT_ACTIVE_TYPES)
    for p in range(PARTS):
        state.assign(p)
    labels = CommunityLabels(cap=3, platforms=LabelCap(cap=2))
    stats = IngestStats(labels)
    now = NOW
    collector = EngagementCollector(
        state, stats, Clock("event", lambda: now), WINDOWS, app_id='s"h\\op'
    )
    for step in range(steps):
        what = rng.random()
        if what < 0.5:
            for _ in range(rng.randrange(1, 30)):
                user = f"u{rng.randrange(50)}"
                part = state.partitions.get(partition_for_user(user, PARTS))
                if part is not None:
                    platform = rng.choice(["tw", "ig", "yt"])
                    community = f"c{rng.randrange(8)}"
                    part.apply(platform, community, user, now - rng.randrange(3_600_000),
                               rng.choice(types))  # fmt: skip
                    count(stats, rng.randrange(2), platform, community)
        elif what < 0.7:
            now += rng.choice([1_000, 60_000, 300_000, 3_600_000])
        elif what < 0.85:  # re-rank, as the label task does every 10 s
            g = gauge_rows(state.partitions.values(), now, {"1d": WINDOWS["1d"]})
            labels.rank_counts(g.active, g.followers, "1d")
        elif what < 0.95:
            p = rng.randrange(PARTS)
            old = state.partitions.get(p)
            fresh = state.assign(p)
            for key, record in list(old.records.items()) if old else ():
                fresh.load(key, record)
        else:
            p = rng.randrange(PARTS)
            if p in state.partitions:
                state.revoke(p)
            else:
                state.assign(p)
        # a scrape's name[]: the families it leaves out are rendered when asked for
        only = rng.choice(SCRAPES[mix])
        got = samples(collector.text(only))
        gauges = {k: v for k, v in got.items() if not k[0].startswith(names.EVENTS)}
        want = expected(state, now, labels, 's"h\\op')
        assert gauges == {k: v for k, v in want.items() if only is None or k[0] in only}, step
        if only is not None:
            continue
        counters = {k: v for k, v in got.items() if k[0] == names.EVENTS_TOTAL}
        assert counters == {
            (names.EVENTS_TOTAL, tuple(sorted({"app": 's"h\\op', "platform": p, "community": c,
                                               "type": t, "partition": str(i)}.items()))): float(n)
            for i, counters in stats.partitions.items()
            for (p, c, t), n in counters.events.items()
        }  # fmt: skip
    assert len(labels) == 3 and labels.generation > 3


def test_collect_yields_the_same_samples_as_the_fast_text() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from agents.metrics import AppLabelled

    state = WorkerState(DEFAULT_ACTIVE_TYPES)
    part = state.assign(0)
    for i in range(40):
        part.apply("tw", f"c{i % 7}", f"u{i}", NOW - 70_000 * i, "like" if i % 3 else "follow")
    stats = IngestStats(CommunityLabels(cap=4))
    for _ in range(3):
        count(stats, 1, "tw", "c1")
    clock = Clock("event", state.watermark_ms)
    collector = EngagementCollector(state, stats, clock, WINDOWS, app_id="shop")
    registry = CollectorRegistry()
    registry.register(collector)
    full = samples(generate_latest(AppLabelled(registry, "shop")).decode())
    page = CollectorRegistry()
    page.register(collector.rest)
    fast = samples(generate_latest(AppLabelled(page, "shop")).decode() + collector.text())
    assert fast == full
    assert len([k for k in full if k[0] == names.ACTIVE_USERS]) > 10


def test_a_filtered_scrape_shows_only_its_families_at_their_current_values() -> None:
    """``/metrics?name[]=…``: what a latency probe or a federation reads. The sums are
    brought up to date as for a whole scrape, so the values are the same."""
    from prometheus_client import CollectorRegistry, generate_latest

    from agents.metrics import AppLabelled, Only

    state = WorkerState(DEFAULT_ACTIVE_TYPES)
    part = state.assign(0)
    stats = IngestStats(CommunityLabels(cap=10))
    collector = EngagementCollector(
        state, stats, Clock("event", lambda: NOW), WINDOWS, app_id="shop"
    )
    registry = CollectorRegistry()
    registry.register(collector.rest)
    want = {names.ACTIVE_USERS, names.INVALID_EVENTS_TOTAL}
    for step in range(5):
        for i in range(7):
            part.apply("tw", f"c{i % 3}", f"u{step}-{i}", NOW - 1_000 * i, "like")
        count(stats, 0, "tw", "c1")
        only = samples(
            generate_latest(Only(AppLabelled(registry, "shop"), want)).decode()
            + collector.text(want)
        )
        assert {name for name, _labels in only} <= want
        assert any(name == names.INVALID_EVENTS_TOTAL for name, _labels in only)
        active = {k: v for k, v in expected(state, NOW, stats.labels, "shop").items()
                  if k[0] == names.ACTIVE_USERS}  # fmt: skip
        assert {k: v for k, v in only.items() if k[0] == names.ACTIVE_USERS} == active
        assert active[(names.ACTIVE_USERS, (("app", "shop"), ("community", "c0"),
                                            ("platform", "tw"), ("window", "5m")))] == 3 * (
            step + 1
        )  # fmt: skip
    whole = samples(collector.text())
    assert {k: v for k, v in whole.items() if k[0] == names.ACTIVE_USERS} == active
    assert any(k[0] == names.EVENTS_TOTAL for k in whole)


def test_counts_are_written_as_prometheus_client_writes_them() -> None:
    from prometheus_client.utils import floatToGoString

    from agents.gauge_text import _number

    values = [*range(0, 2_000), *range(999_000, 1_001_000), 12_345_678, -3, 2.5, 10**17]
    assert [_number(n) for n in values] == [floatToGoString(n) for n in values]
