"""The gauge rows every reader shares: sums over partitions, the label cap, the ratios."""

from __future__ import annotations

import random

from streams.events import DEFAULT_ACTIVE_TYPES, EVENT_TYPES
from streams.gauges import Gauges, gauge_rows, ratio, stickiness
from streams.state import PartitionState
from streams.topics import partition_for_user
from tests.oracle import expected_active, expected_followers, expected_lifecycle

WINDOWS = {"5m": 300_000, "1h": 3_600_000, "1d": 86_400_000}
NOW = 1_800_000_000_000


def events(seed: int, n: int = 3_000) -> list[dict]:
    rng = random.Random(seed)
    types = sorted(EVENT_TYPES)
    return [
        {
            "platform": rng.choice(["tw", "ig"]),
            "community": f"c{rng.randrange(6)}",
            "user_id": f"u{rng.randrange(300)}",
            "ts_ms": NOW - rng.randrange(2 * 86_400_000),
            "type": rng.choice(types),
        }
        for _ in range(n)
    ]


def partitioned(rows: list[dict], partitions: int) -> list[PartitionState]:
    parts = [PartitionState(DEFAULT_ACTIVE_TYPES) for _ in range(partitions)]
    for e in rows:
        part = parts[partition_for_user(e["user_id"], partitions)]
        part.apply(e["platform"], e["community"], e["user_id"], e["ts_ms"], e["type"])
    return parts


def test_rows_over_partitions_equal_the_oracle() -> None:
    rows = events(1)
    gauges = gauge_rows(partitioned(rows, 4), NOW, WINDOWS)
    assert gauges.active == expected_active(rows, NOW, WINDOWS)
    assert gauges.followers == expected_followers(rows)
    assert gauges.lifecycle == expected_lifecycle(rows, NOW, WINDOWS)
    # the flat, sorted rows the collector exposes
    flat = gauges.active_rows()
    assert flat == sorted(flat)
    assert len(flat) == sum(len(c) for c in gauges.active.values())


def test_label_cap_sums_communities_that_share_a_label() -> None:
    rows = events(2)

    def label(community: str) -> str:
        return community if community in ("*", "c0", "c1") else "_other"

    gauges = gauge_rows(partitioned(rows, 3), NOW, WINDOWS, label)
    oracle = expected_active(rows, NOW, WINDOWS)
    for platform in ("tw", "ig"):
        want = {
            w: sum(
                c[w] for (p, comm), c in oracle.items() if p == platform and label(comm) == "_other"
            )
            for w in WINDOWS
        }
        assert gauges.active[(platform, "_other")] == want
        assert gauges.active[(platform, "c0")] == oracle[(platform, "c0")]
    followers = expected_followers(rows)
    assert gauges.followers[("tw", "_other")] == sum(
        n for (p, c), n in followers.items() if p == "tw" and label(c) == "_other"
    )
    lifecycle = expected_lifecycle(rows, NOW, WINDOWS)
    assert gauges.lifecycle[("tw", "_other")] == {
        w: tuple(
            sum(
                c[w][i]
                for (p, comm), c in lifecycle.items()
                if p == "tw" and label(comm) == "_other"
            )
            for i in range(4)
        )
        for w in WINDOWS
    }
    by_field = gauges.lifecycle_rows()
    assert [n for _key, n in by_field["dormant_users"]] == [
        gauges.lifecycle[(p, c)][w].dormant_users for (p, c, w), _n in by_field["dormant_users"]
    ]


def test_no_clock_means_followers_only() -> None:
    rows = events(3, 500)
    gauges = gauge_rows(partitioned(rows, 2), None, WINDOWS)
    assert gauges.active == {}
    assert gauges.lifecycle == {}
    assert gauges.followers == expected_followers(rows)


def test_adding_partition_rows_is_the_same_as_computing_them_together() -> None:
    """What status does with the per-partition snapshots."""
    parts = partitioned(events(4), 4)
    summed = Gauges()
    for part in parts:
        one = gauge_rows([part], NOW, WINDOWS)
        summed.add_active(one.active)
        summed.add_lifecycle(one.lifecycle)
        summed.add_followers(one.followers)
    assert summed == gauge_rows(parts, NOW, WINDOWS)


def test_ratios() -> None:
    assert ratio(1, 3) == 0.333333
    assert ratio(None, 3) is None
    assert ratio(3, 0) is None
    assert stickiness({"1d": 3, "7d": 5, "30d": 10}) == {"dau_mau": 0.3, "dau_wau": 0.6}
    assert stickiness({"1d": 3, "30d": 0}) == {"dau_mau": None, "dau_wau": None}
