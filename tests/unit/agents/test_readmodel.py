"""The read model without Redis: snapshot encoding and summing, the status document,
the top-users tally, its flush plan and the trimming rule."""

from __future__ import annotations

import argparse

import pytest

from agents.readmodel import (
    Snapshot,
    check_day,
    decode_snapshot,
    encode_snapshot,
    snapshot_key,
    snapshot_pattern,
    status_document,
    sum_snapshots,
    top_document,
    top_key,
    utc_day,
)
from agents.redis_snapshots import build_snapshots, snapshot_ttl_ms
from agents.top_users import DAY_MS, TopUsersTally, plan
from commands.status import build_lifecycle_table, build_table, warnings
from streams.durations import parse_windows
from streams.events import DEFAULT_ACTIVE_TYPES
from streams.state import WorkerState
from streams.topics import partition_for_user
from tests.eventgen import make_traffic
from tests.oracle import (
    event_clock,
    expected_active,
    expected_followers,
    expected_lifecycle,
    fields,
    top_users_after_flush,
)

WINDOWS = parse_windows("5m,1h,1d,7d,30d")
NOW = 1_780_000_000_000


def _state_from(events: list[dict], partitions: int) -> WorkerState:
    state = WorkerState(DEFAULT_ACTIVE_TYPES)
    for p in range(partitions):
        state.assign(p)
    for event in events:
        platform, community, user, ts_ms, kind = fields(event)
        state.partitions[partition_for_user(user, partitions)].apply(
            platform, community, user, ts_ms, kind
        )
    return state


def test_snapshots_round_trip_and_sum_to_the_oracle() -> None:
    traffic = make_traffic(seed=3, count=3000, now_ms=NOW)
    state = _state_from(traffic.valid, 4)
    now = event_clock(traffic.valid)
    assert now is not None
    snaps = build_snapshots(state, now, WINDOWS, 4, written_ms=123)
    decoded = [decode_snapshot(encode_snapshot(s)) for s in snaps]
    assert decoded == snaps
    totals = sum_snapshots(reversed(decoded))
    assert totals.active == expected_active(traffic.valid, now, WINDOWS)
    assert totals.followers == expected_followers(traffic.valid)
    assert totals.lifecycle == expected_lifecycle(traffic.valid, now, WINDOWS)
    assert totals.partitions_present == [0, 1, 2, 3] and totals.complete
    # status rows: the audience per window, ghosts and non-follower engagers from it
    doc = status_document(totals, "app")
    followers = expected_followers(traffic.valid)
    for row in doc["communities"]:
        pc = (row["platform"], row["community"])
        want = expected_lifecycle(traffic.valid, now, WINDOWS).get(pc, {})
        for window, n in want.items():
            audience = row["audience"][window]
            assert (
                audience["active_followers"],
                audience["new_users"],
                audience["returning_users"],
                audience["dormant_users"],
            ) == n
            assert audience["non_follower_active"] == row["active"][window] - n[0]
        if pc in want or pc in followers:
            ghosts = followers.get(pc, 0) - want.get("30d", (0,))[0]
            assert row["ghost_followers"] == ghosts
    table = build_lifecycle_table(doc)
    assert table.row_count == len(doc["communities"]) * len(WINDOWS)
    assert totals.as_of_ms == totals.newest_ms == now
    assert list(totals.windows) == list(WINDOWS)


def test_missing_partitions_are_reported_and_empty_redis_is_not_an_error() -> None:
    traffic = make_traffic(seed=4, count=500, now_ms=NOW)
    snaps = build_snapshots(_state_from(traffic.valid, 4), NOW, WINDOWS, 4, written_ms=1)
    doc = status_document(sum_snapshots([snaps[0], snaps[2]]), "app")
    assert doc["partitions"] == {
        "expected": 4,
        "present": [0, 2],
        "missing": [1, 3],
        "complete": False,
    }
    assert "only 2 of 4 partitions" in warnings(doc)[0]
    empty = status_document(sum_snapshots([]), "app")
    assert empty["communities"] == [] and empty["as_of_ms"] is None
    assert "no snapshots" in warnings(empty)[0]


def test_status_document_rows_ratios_and_filters() -> None:
    w = {"1d": DAY_MS, "7d": 7 * DAY_MS, "30d": 30 * DAY_MS}
    a = Snapshot(
        0,
        2,
        NOW,
        1,
        w,
        {("x", "acme"): {"1d": 2, "7d": 4, "30d": 8}, ("x", "*"): {"1d": 2, "7d": 4, "30d": 8}},
        {("x", "acme"): 4, ("x", "*"): 4},
    )
    b = Snapshot(
        1,
        2,
        NOW - 5,
        2,
        w,
        {("x", "acme"): {"1d": 1, "7d": 1, "30d": 2}, ("x", "*"): {"1d": 1, "7d": 1, "30d": 2}},
        {("x", "beta"): 0, ("x", "*"): 0},
    )
    doc = status_document(sum_snapshots([a, b]), "app")
    assert doc["as_of_ms"] == NOW - 5 and doc["newest_ms"] == NOW and doc["written_ms"] == 1
    assert doc["windows"] == ["1d", "7d", "30d"]
    assert [(r["platform"], r["community"]) for r in doc["communities"]] == [
        ("x", "*"),
        ("x", "acme"),
        ("x", "beta"),
    ]
    acme = doc["communities"][1]
    assert acme["active"] == {"1d": 3, "7d": 5, "30d": 10} and acme["followers"] == 4
    assert acme["active_per_follower"] == {"1d": 0.75, "7d": 1.25, "30d": 2.5}
    assert acme["stickiness"] == {"dau_mau": 0.3, "dau_wau": 0.6}
    beta = doc["communities"][2]  # followers only: zero activity, ratios undefined
    assert beta["active"] == {"1d": 0, "7d": 0, "30d": 0}
    assert beta["active_per_follower"] == {"1d": None, "7d": None, "30d": None}
    assert beta["stickiness"] == {"dau_mau": None, "dau_wau": None}
    only = status_document(sum_snapshots([a, b]), "app", ["beta"], "x")
    assert [r["community"] for r in only["communities"]] == ["beta"]
    assert status_document(sum_snapshots([a, b]), "app", [], "y")["communities"] == []
    build_table(doc)  # renders without a terminal


def test_keys_are_unambiguous_and_patterns_literal() -> None:
    assert top_key("app", "2026-01-02", "a:b", "c") != top_key("app", "2026-01-02", "a", "b:c")
    assert snapshot_key("em*app", 3) == "em:em*app:part:3"
    assert snapshot_pattern("em*app") == "em:em\\*app:part:*"
    assert utc_day(0) == "1970-01-01" and utc_day(DAY_MS - 1) == "1970-01-01"
    assert check_day("2026-02-28") == "2026-02-28"
    with pytest.raises(ValueError):
        check_day("2026-02-30")
    assert snapshot_ttl_ms(1.0) == 10_000 and snapshot_ttl_ms(5.0) == 15_000


def test_tally_counts_active_events_by_utc_day_and_derives_all_communities() -> None:
    tally = TopUsersTally(frozenset({"like", "post"}))
    day0 = 20_000 * DAY_MS
    tally(
        0,
        [
            [day0 + 5, "x", "acme", "u1", "like"],
            [day0 + 6, "x", "acme", "u1", "like"],
            [day0 + 7, "x", "acme", "u1", "view"],
            [day0 - 1, "x", "acme", "u1", "post"],
            [day0 + 8, "x", "beta", "u1", "post"],
            [day0 + 9, "y", "acme", "u2", "like"],
        ],
    )
    sets = {(d.day, d.platform, d.community): d.increments for d in plan(tally.take())}
    today, yesterday = utc_day(day0), utc_day(day0 - 1)
    assert sets == {
        (yesterday, "x", "acme"): {"u1": 1},
        (yesterday, "x", "*"): {"u1": 1},
        (today, "x", "acme"): {"u1": 2},
        (today, "x", "beta"): {"u1": 1},
        (today, "x", "*"): {"u1": 3},
        (today, "y", "acme"): {"u2": 1},
        (today, "y", "*"): {"u2": 1},
    }
    assert tally.pending == {}


def test_tally_buffer_is_bounded_and_restores_failed_writes() -> None:
    tally = TopUsersTally(frozenset({"like"}), max_pending=2)
    tally(0, [[1, "x", "c", "u1", "like"], [1, "x", "c", "u2", "like"]])
    tally(0, [[1, "x", "c", "u3", "like"], [1, "x", "c", "u4", "view"]])  # full: dropped
    assert len(tally.pending) == 2 and tally.dropped == 1
    taken = tally.take()
    tally(0, [[1, "x", "c", "u9", "like"]])
    tally.restore(taken)  # one slot left: u1 merged in, u2 dropped
    assert len(tally.pending) == 2 and tally.dropped == 2
    assert sum(tally.pending.values()) == 2


def test_trimming_keeps_the_top_n_like_zremrangebyrank() -> None:
    current: dict[str, float] = {}
    current = top_users_after_flush(current, {"a": 5, "b": 1, "c": 3}, top_n=2)
    assert current == {"a": 5, "c": 3}
    current = top_users_after_flush(current, {"b": 4, "d": 3}, top_n=2)  # b restarts at 4
    assert current == {"a": 5, "b": 4}
    assert top_users_after_flush({}, {"x": 1, "y": 1, "z": 1}, top_n=2) == {"y": 1, "z": 1}


def test_top_document_lists_users_per_platform() -> None:
    doc = top_document("app", "acme", "2026-01-02", 2, {"y": [("u2", 3.0)], "x": []})
    assert doc["platforms"] == [
        {"platform": "x", "users": []},
        {"platform": "y", "users": [{"user_id": "u2", "score": 3}]},
    ]


def test_status_and_top_commands_are_registered() -> None:
    from commands.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["status", "acme", "--json", "--app-id", "a"])
    assert isinstance(args, argparse.Namespace) and args.communities == ["acme"]
    assert args.json and args.app_id == "a"
    top = parser.parse_args(["top", "acme", "--day", "2026-01-02", "--limit", "3"])
    assert top.community == "acme" and top.limit == 3
    assert parser.parse_args(["api", "--port", "1"]).port == 1


def test_top_payloads_chunk_and_carry_keys_increments_and_index(monkeypatch) -> None:
    import orjson

    from agents import redis_snapshots
    from agents.top_users import TOP_TTL_S, SetDelta

    monkeypatch.setattr(redis_snapshots, "CHUNK", 3)
    sets = [
        SetDelta("2026-01-02", "x", "acme", {"u1": 2, "u2": 1}),
        SetDelta("2026-01-02", "x", "*", {"u1": 2, "u2": 1}),
        SetDelta("2026-01-03", "y", "b:c", {"u3": 1}),
    ]
    payloads = [orjson.loads(p) for p in redis_snapshots.top_payloads("app", sets, 5)]
    assert len(payloads) == 2  # 4 increments reach the chunk size of 3
    keep, ttl, chunk, index = payloads[0]
    assert (keep, ttl) == (5, TOP_TTL_S)
    assert chunk == [
        [top_key("app", "2026-01-02", "x", "acme"), ["u1", 2, "u2", 1]],
        [top_key("app", "2026-01-02", "x", "*"), ["u1", 2, "u2", 1]],
    ]
    assert index == [
        ["em:app:topidx:2026-01-02", '["x","acme"]'],
        ["em:app:topidx:2026-01-02", '["x","*"]'],
    ]
    assert payloads[1][2] == [["em:app:top:2026-01-03:y:b%3Ac", ["u3", 1]]]


def test_snapshot_hash_fields_and_rows_without_some_counts() -> None:
    """One field per row plus meta; a row a partition has no active (or follower, or
    lifecycle) count for stays out of that count, as in the state."""
    snap = Snapshot(
        0, 1, NOW, 1, {"1d": DAY_MS}, {("x", "a"): {"1d": 1}}, {("x", "a"): 1, ("x", "b"): 0}
    )
    fields = encode_snapshot(snap)
    assert set(fields) == {b"meta", b'["x","a"]', b'["x","b"]'}
    assert fields[b'["x","b"]'] == b"[null,0,null]"
    back = decode_snapshot(fields)
    assert back == snap and back.lifecycle == {}
    row = status_document(sum_snapshots([back]), "app")["communities"][0]
    assert row["audience"]["1d"]["new_users"] == 0
    assert row["audience"]["1d"]["non_follower_active"] == 1
    with pytest.raises(ValueError, match="meta"):
        decode_snapshot({b'["x","a"]': fields[b'["x","a"]']})


def test_rows_are_copied_to_their_size() -> None:
    """A whole snapshot holds every row until Redis has it: each row's bytes are
    their content, not an ``orjson.dumps`` buffer of ~4 KiB (issue 16's memory)."""
    import tracemalloc

    from agents.readmodel import row_field, row_value
    from streams.state import Lifecycle

    field = row_field(("instagram", "acme"))
    value = row_value(["5m", "1h"], {"5m": 3, "1h": 7}, 2, {"1h": Lifecycle(1, 2, 3, 4)})
    assert field == b'["instagram","acme"]'
    assert value == b"[[3,7],2,[[0,0,0,0],[1,2,3,4]]]"
    tracemalloc.start()
    try:
        rows = [row_value(["5m"], {"5m": n}, n, None) for n in range(1_000)]
        per_row = tracemalloc.get_traced_memory()[0] / len(rows)
    finally:
        tracemalloc.stop()
    assert per_row < 200, per_row  # orjson's own output: ~4,100 B each
