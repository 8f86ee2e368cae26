"""backfill's pure parts: the sweep equals the oracle at every step, and the
OpenMetrics text is grouped the way promtool needs it."""

from __future__ import annotations

import io
import random

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from commands.backfill import Family, Sweep, escape, format_seconds, step_times, write_openmetrics
from streams.durations import parse_windows
from streams.events import DEFAULT_ACTIVE_TYPES
from streams.metric_names import LIFECYCLE
from tests.oracle import expected_active, expected_followers, expected_lifecycle

WINDOWS = parse_windows("5m,1h,1d")
TYPES = ["like", "comment", "view", "follow", "unfollow", "post", "click"]


def random_rows(seed: int, n: int, start: int, span: int) -> list[tuple]:
    rng = random.Random(seed)
    return [
        (
            start + rng.randrange(span),
            rng.choice(["twitter", "instagram"]),
            f"c{rng.randrange(6)}",
            f"u{rng.randrange(40)}",
            rng.choice(TYPES),
        )
        for _ in range(n)
    ]


def as_events(rows: list[tuple]) -> list[dict]:
    return [
        {"ts_ms": ts, "platform": p, "community": c, "user_id": u, "type": t}
        for ts, p, c, u, t in rows
    ]


def test_sweep_equals_the_oracle_at_every_step() -> None:
    start, step = 1_700_000_000_000, 600_000
    rows = random_rows(1, 1500, start - 86_400_000, 2 * 86_400_000)
    steps = step_times(start, start + 86_400_000, step)
    sweep = Sweep(WINDOWS, DEFAULT_ACTIVE_TYPES, community_cap=1000)
    sweep.run(list(rows), steps)
    for index in (0, 1, 37, len(steps) - 1):
        t = steps[index]
        upto = as_events([r for r in rows if r[0] <= t])
        want = {
            (p, c, w): n
            for (p, c), counts in expected_active(upto, t, WINDOWS, DEFAULT_ACTIVE_TYPES).items()
            for w, n in counts.items()
        }
        got = {
            key: s.values[index - s.first]
            for key, s in sweep.active.series.items()
            if index >= s.first
        }
        assert got == want
        got_f = {
            key: s.values[index - s.first]
            for key, s in sweep.followers.series.items()
            if index >= s.first
        }
        assert got_f == expected_followers(upto)
        lifecycle = expected_lifecycle(upto, t, WINDOWS, DEFAULT_ACTIVE_TYPES)
        for i, field in enumerate(LIFECYCLE):
            got_l = {
                key: s.values[index - s.first]
                for key, s in sweep.lifecycle[field].series.items()
                if index >= s.first
            }
            assert got_l == {
                (p, c, w): n[i] for (p, c), counts in lifecycle.items() for w, n in counts.items()
            }, field
    assert [f.name for f in sweep.families()] == [
        "engagement_active_users",
        *LIFECYCLE.values(),
        "engagement_followers",
    ]


def test_community_cap_folds_late_communities_into_other() -> None:
    rows = [(1000 + i, "twitter", f"c{i}", f"u{i}", "like") for i in range(4)]
    sweep = Sweep(WINDOWS, DEFAULT_ACTIVE_TYPES, community_cap=2)
    sweep.run(rows, [10_000])
    got = {k[1]: s.values[0] for k, s in sweep.active.series.items() if k[2] == "5m"}
    assert got == {"c0": 1, "c1": 1, "_other": 2, "*": 4}


def test_openmetrics_text_is_grouped_sorted_and_parses() -> None:
    active, followers = Family("engagement_active_users"), Family("engagement_followers")
    steps = [60_000, 120_000, 180_500]
    active.put(1, ("twitter", 'we"ird\\', "5m"), 3)  # appears at the second step
    active.put(2, ("twitter", 'we"ird\\', "5m"), 4)
    for i in range(3):
        active.put(i, ("twitter", "a", "5m"), i)
        followers.put(i, ("twitter", "a"), 10 + i)
    out = io.StringIO()
    assert write_openmetrics(out, [active, followers], steps) == 8
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0].startswith("# HELP engagement_active_users ")
    assert lines[1] == "# TYPE engagement_active_users gauge"
    assert lines[2:5] == [
        'engagement_active_users{platform="twitter",community="a",window="5m"} 0 60',
        'engagement_active_users{platform="twitter",community="a",window="5m"} 1 120',
        'engagement_active_users{platform="twitter",community="a",window="5m"} 2 180.500',
    ]
    assert lines[5] == (
        'engagement_active_users{platform="twitter",community="we\\"ird\\\\",window="5m"} 3 120'
    )
    assert lines[-1] == "# EOF"
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = families["engagement_active_users"].samples
    assert {s.labels["community"] for s in samples} == {"a", 'we"ird\\'}
    assert [float(s.timestamp) for s in samples if s.labels["community"] == "a"] == [60, 120, 180.5]
    assert [s.value for s in families["engagement_followers"].samples] == [10, 11, 12]


def test_helpers() -> None:
    assert format_seconds(1_700_000_000_000) == "1700000000"
    assert format_seconds(1_700_000_000_007) == "1700000000.007"
    assert escape('a\n"b"\\') == 'a\\n\\"b\\"\\\\'
    assert step_times(0, 120_000, 60_000) == [0, 60_000, 120_000]
    assert step_times(0, 119_999, 60_000) == [0, 60_000]


def test_openmetrics_series_carry_the_app_label_like_the_live_worker() -> None:
    followers = Family("engagement_followers")
    followers.put(0, ("twitter", "a"), 5)
    out = io.StringIO()
    write_openmetrics(out, [followers], [60_000], app_id='sh"op')
    [family] = [f for f in text_string_to_metric_families(out.getvalue())]
    assert [s.labels for s in family.samples] == [
        {"app": 'sh"op', "platform": "twitter", "community": "a"}
    ]
