"""commands/audit_compare: each partition at its snapshot's clock, the sum
over the workers' /metrics, and the comparison (absent = 0, wall-clock bounds)."""

from __future__ import annotations

import random

from agents.readmodel import Snapshot
from commands.audit_compare import (
    Difference,
    audit_metrics,
    audit_redis,
    compare,
    document,
    expected_state,
    metric_series,
    render,
    series_name,
)
from commands.backfill import Row
from streams.durations import parse_windows
from streams.events import DEFAULT_ACTIVE_TYPES
from streams.metric_names import LIFECYCLE
from streams.state import Lifecycle
from streams.topics import partition_for_user
from tests.oracle import expected_active, expected_followers, expected_lifecycle

WINDOWS = parse_windows("5m,1h,1d")
T = 1_700_000_000_000


def rows(seed: int, n: int = 600) -> list[Row]:
    rng = random.Random(seed)
    kinds = ["like", "view", "follow", "unfollow", "post"]
    return [
        (
            T - rng.randrange(2 * 86_400_000),
            rng.choice(["twitter", "instagram"]),
            f"c{rng.randrange(4)}",
            f"u{rng.randrange(80)}",
            rng.choice(kinds),
        )
        for _ in range(n)
    ]


def oracle_series(events: list[Row], now_ms: int) -> dict[str, int]:
    dicts = [
        {"ts_ms": ts, "platform": p, "community": c, "user_id": u, "type": k}
        for ts, p, c, u, k in events
    ]
    out = {
        series_name("engagement_active_users", (p, c, w)): n
        for (p, c), counts in expected_active(dicts, now_ms, WINDOWS).items()
        for w, n in counts.items()
    }
    for (p, c), counts in expected_lifecycle(dicts, now_ms, WINDOWS).items():
        for w, row in counts.items():
            for i, metric in enumerate(LIFECYCLE.values()):
                out[series_name(metric, (p, c, w))] = row[i]
    for (p, c), n in expected_followers(dicts).items():
        out[series_name("engagement_followers", (p, c))] = n
    return out


def snapshot(events: list[Row], partition: int, now_ms: int) -> Snapshot:
    """What a worker holding ``partition`` writes, from the oracle (not the state)."""
    mine = [e for e in events if partition_for_user(e[3], 4) == partition]
    dicts = [
        {"ts_ms": ts, "platform": p, "community": c, "user_id": u, "type": k}
        for ts, p, c, u, k in mine
    ]
    return Snapshot(
        partition,
        4,
        now_ms,
        now_ms,
        WINDOWS,
        expected_active(dicts, now_ms, WINDOWS),
        expected_followers(dicts),
        {
            pc: {w: Lifecycle(*n) for w, n in counts.items()}
            for pc, counts in expected_lifecycle(dicts, now_ms, WINDOWS).items()
        },
    )


def test_redis_snapshots_at_their_own_clocks_equal_and_a_changed_count_is_named() -> None:
    events = rows(1)
    expected = expected_state(events, 4, WINDOWS, DEFAULT_ACTIVE_TYPES, 1000)
    clocks = {0: T, 1: T - 600_000, 2: T - 7_200_000, 3: T}  # two workers, two clocks
    snaps = [snapshot(events, p, clocks[p]) for p in range(4)]
    report = audit_redis(expected, snaps, 4)
    assert report.equal and report.series > 20
    snaps[2].followers[("twitter", "c1")] += 1
    report = audit_redis(expected, snaps, 4)
    [diff] = report.differences
    name = 'engagement_followers{platform="twitter",community="c1"}'
    assert isinstance(diff.expected, int) and diff.series == name
    assert diff.live == diff.expected + 1
    missing = audit_redis(expected, snaps[:3], 4)
    assert missing.problems == ["partition 3 has no snapshot in Redis"]


def test_metrics_summed_over_workers_against_the_partition_clocks() -> None:
    events = rows(2)
    expected = expected_state(events, 4, WINDOWS, DEFAULT_ACTIVE_TYPES, 1000)
    whole = oracle_series(events, T)
    # one worker holding everything at clock T: its page is the oracle
    report = audit_metrics(expected, [("w", whole, T)], dict.fromkeys(range(4), T), 4, None)
    assert report.equal and report.series == len(whole)
    # two workers: the sum of their pages
    half = {name: 0 for name in whole}
    other = {name: n for name, n in whole.items()}
    report = audit_metrics(
        expected, [("a", half, T), ("b", other, T)], dict.fromkeys(range(4), T), 4, None
    )
    assert report.equal
    # wall clock: a value between the recomputations before and after the scrapes
    later = oracle_series(events, T + 3_600_000)
    mixed = {name: max(whole.get(name, 0), later.get(name, 0)) for name in whole | later}
    report = audit_metrics(expected, [("w", mixed, None)], {}, 4, (T, T + 3_600_000))
    assert report.equal
    beyond = {**mixed, series_name("engagement_followers", ("twitter", "*")): 10**6}
    report = audit_metrics(expected, [("w", beyond, None)], {}, 4, (T, T + 3_600_000))
    assert [d.series for d in report.differences] == [
        series_name("engagement_followers", ("twitter", "*"))
    ]


def test_compare_counts_an_absent_series_as_zero_and_reports_both_values() -> None:
    report = compare("x", {"a": 1, "b": 0, "c": 2}, {"a": 1, "c": 3, "d": 0})
    assert report.series == 4
    assert report.differences == [Difference("c", 2, 3)]
    text = render([report], "header")
    assert "c: live 2, expected 3" in text and text.endswith("audit: DIFFERENCES")
    doc = document([report], {"app_id": "a"})
    assert doc["equal"] is False
    assert doc["sources"][0]["differences"] == [{"series": "c", "live": 2, "expected": 3}]


def test_metric_page_parsing() -> None:
    page = (
        "# TYPE engagement_active_users gauge\n"
        'engagement_active_users{platform="x",community="c \\"q\\"",window="5m"} 3.0\n'
        "# TYPE engagement_followers gauge\n"
        'engagement_followers{platform="x",community="*"} 7.0\n'
        "# TYPE engagement_watermark_seconds gauge\n"
        "engagement_watermark_seconds 1.700000000123e+09\n"
    )
    series, watermark = metric_series(page)
    assert series == {
        'engagement_active_users{platform="x",community="c \\"q\\"",window="5m"}': 3,
        'engagement_followers{platform="x",community="*"}': 7,
    }
    assert watermark == 1_700_000_000_123
