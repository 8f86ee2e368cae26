"""The incremental state against the brute-force oracle, plus the algebra of merge.

Alphabets are tiny so users collide across communities, platforms and partitions;
timestamps cluster near window edges so the (now - W, now] bounds are hit exactly.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.events import ALL_COMMUNITIES, DEFAULT_ACTIVE_TYPES, EVENT_TYPES, Event
from streams.state import (
    SEP,
    PartitionState,
    UserRecord,
    WorkerState,
    merge,
    split_key,
)
from tests.oracle import (
    event_clock,
    expected_active,
    expected_followers,
    expected_lifecycle,
    make_key,
)

MINUTE = 60_000
DAY = 86_400_000
WINDOWS = {
    "1ms": 1,
    "5ms": 5,
    "5m": 5 * MINUTE,
    "1h": 60 * MINUTE,
    "1d": DAY,
    "7d": 7 * DAY,
    "30d": 30 * DAY,
}
LONGEST = max(WINDOWS.values())
TYPES = sorted(EVENT_TYPES)
PLATFORMS = ["x", "y"]
COMMUNITIES = ["a", "b", "c"]
USERS = ["u1", "u2", "u3", "u4", "u5"]
PARTITIONS = 3

settings.register_profile(
    "state", deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("state")

# Times: a dense cluster (ties, 1 ms windows) plus points around every window edge
# measured from a few anchors, and some spread over 40 days (expiry, big windows).
_T0 = 40 * DAY
_anchors = [_T0, _T0 + 7, _T0 + 3 * DAY]
_edges = sorted(
    {
        a - k * w + d
        for a in _anchors
        for w in WINDOWS.values()
        for k in (1, 2)  # the edges of (t - W, t] and of (t - 2W, t - W] (dormant)
        for d in (-1, 0, 1)
        if a - k * w + d >= 0
    }
    | set(_anchors)
)
timestamps = st.one_of(
    st.integers(_T0, _T0 + 12),
    st.sampled_from(_edges),
    st.integers(0, _T0 + 3 * DAY),
)
types = st.sampled_from(TYPES)
# Follow-heavy mix so that ties and late follows are frequent.
types_mixed = st.one_of(types, st.sampled_from(["follow", "unfollow"]))

raw_events = st.tuples(
    st.sampled_from(PLATFORMS),
    st.sampled_from(COMMUNITIES),
    st.sampled_from(USERS),
    timestamps,
    types_mixed,
)


@st.composite
def event_lists(draw: st.DrawFn, min_size: int = 0, max_size: int = 60) -> list[Event]:
    """A list, then some duplicates, then a shuffle: late, out-of-order and repeated."""
    base = draw(st.lists(raw_events, min_size=min_size, max_size=max_size))
    dups = draw(st.lists(st.sampled_from(base), max_size=len(base))) if base else []
    rows = base + dups
    rows = draw(st.permutations(rows))
    return [Event(f"e{i}", ts, p, c, u, t) for i, (p, c, u, ts, t) in enumerate(rows)]


@st.composite
def query_times(draw: st.DrawFn, events: Sequence[Event]) -> int:
    """Now: the event clock, an edge of some window from some event, or anywhere."""
    times = [e.ts_ms for e in events] or [_T0]
    t = draw(st.sampled_from(times))
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return max(times)
    if choice == 1:
        k = draw(st.sampled_from([1, 2]))  # an event on the edge of (t-W, t] or (t-2W, t-W]
        return t + k * draw(st.sampled_from(list(WINDOWS.values()))) + draw(st.integers(-1, 1))
    if choice == 2:
        return t + draw(st.integers(-2, 2))
    return draw(st.integers(0, _T0 + 40 * DAY))


partitionings = st.fixed_dictionaries({u: st.integers(0, PARTITIONS - 1) for u in USERS})


def build(
    events: Iterable[Event],
    partition_of: dict[str, int],
    active_types: frozenset[str] = DEFAULT_ACTIVE_TYPES,
) -> WorkerState:
    worker = WorkerState(active_types)
    for p in range(PARTITIONS):
        worker.assign(p)
    apply_all(worker, partition_of, events)
    return worker


def apply_all(worker: WorkerState, partition_of: dict[str, int], events: Iterable[Event]) -> None:
    for e in events:
        worker.partitions[partition_of[e.user_id]].apply(
            e.platform, e.community, e.user_id, e.ts_ms, e.type
        )


def nonzero_active(counts: dict) -> dict:
    return {k: v for k, v in counts.items() if any(v.values())}


def nonzero_lifecycle(counts: dict) -> dict:
    return {k: v for k, v in counts.items() if any(any(c) for c in v.values())}


def nonzero(counts: dict) -> dict:
    return {k: v for k, v in counts.items() if v}


def fold(events: Iterable[Event], active_types: frozenset[str] = DEFAULT_ACTIVE_TYPES) -> dict:
    records: dict[str, UserRecord] = {}
    for e in events:
        key = make_key(e.platform, e.community, e.user_id)
        records[key] = merge(records.get(key), e.ts_ms, e.type, active_types)
    return records


# -- against the oracle -----------------------------------------------------------------


@given(st.data(), event_lists(), partitionings)
def test_state_equals_oracle(data: st.DataObject, events: list[Event], partition_of) -> None:
    worker = build(events, partition_of)
    for _ in range(3):
        now = data.draw(query_times(events))
        assert worker.active_counts(now, WINDOWS) == expected_active(events, now, WINDOWS)
        assert worker.lifecycle_counts(now, WINDOWS) == expected_lifecycle(events, now, WINDOWS)
    assert worker.follower_counts() == expected_followers(events)
    assert worker.watermark_ms() == event_clock(events)
    assert len(worker) == len({make_key(e.platform, e.community, e.user_id) for e in events})


@given(st.data(), event_lists(), st.sets(st.sampled_from(TYPES)))
def test_state_equals_oracle_any_active_types(
    data: st.DataObject, events: list[Event], active: set[str]
) -> None:
    active_types = frozenset(active)
    worker = build(events, dict.fromkeys(USERS, 0), active_types)
    now = data.draw(query_times(events))
    assert worker.active_counts(now, WINDOWS) == expected_active(events, now, WINDOWS, active_types)
    assert worker.lifecycle_counts(now, WINDOWS) == expected_lifecycle(
        events, now, WINDOWS, active_types
    )
    assert worker.follower_counts() == expected_followers(events)


@given(event_lists())
def test_apply_agrees_with_merge(events: list[Event]) -> None:
    """apply (inlined, in place) reports a change exactly when merge makes a new record."""
    state = PartitionState(DEFAULT_ACTIVE_TYPES)
    records: dict[str, UserRecord] = {}
    for e in events:
        key = make_key(e.platform, e.community, e.user_id)
        before = records.get(key)
        after = merge(before, e.ts_ms, e.type, DEFAULT_ACTIVE_TYPES)
        records[key] = after
        changed = state.apply(e.platform, e.community, e.user_id, e.ts_ms, e.type)
        assert changed == (key if after is not before else None)
        assert state.records[key] == after
        assert state.records.wire(key) == after.to_wire()  # the changelog writer's read
    assert state.records == records
    assert state.records.wire(make_key("p", "c", "nobody")) is None


# -- merge algebra ------------------------------------------------------------------------

one_key_events = st.lists(st.tuples(timestamps, types_mixed), min_size=1, max_size=30)


@given(one_key_events, st.randoms(use_true_random=False))
def test_merge_order_independent_and_idempotent(rows, rnd: random.Random) -> None:
    def run(seq):
        record = None
        for ts, t in seq:
            record = merge(record, ts, t, DEFAULT_ACTIVE_TYPES)
        return record

    reference = run(rows)
    shuffled = rows + [rnd.choice(rows) for _ in range(len(rows))]
    rnd.shuffle(shuffled)
    assert run(shuffled) == reference
    # Every event already folded in is a no-op, reported by identity.
    for ts, t in rows:
        assert merge(reference, ts, t, DEFAULT_ACTIVE_TYPES) is reference
    # The closed form of the rules.
    assert reference.first_seen_ms == min(ts for ts, _ in rows)
    actives = [ts for ts, t in rows if t in DEFAULT_ACTIVE_TYPES]
    assert reference.last_active_ms == (max(actives) if actives else None)
    follows = [(ts, t == "unfollow") for ts, t in rows if t in ("follow", "unfollow")]
    if follows:
        ts, is_unfollow = max(follows)
        assert (reference.follow_ts_ms, reference.following) == (ts, not is_unfollow)
    else:
        assert (reference.follow_ts_ms, reference.following) == (None, False)


def test_merge_does_not_mutate() -> None:
    record = UserRecord(10, 10, None, False)
    new = merge(record, 20, "follow", DEFAULT_ACTIVE_TYPES)
    assert record == UserRecord(10, 10, None, False)
    assert new == UserRecord(10, 20, 20, True)


@pytest.mark.parametrize(
    ("sequence", "following"),
    [
        ([(5, "follow"), (5, "unfollow")], False),  # tie: unfollow wins
        ([(5, "unfollow"), (5, "follow")], False),  # whatever the arrival order
        ([(9, "unfollow"), (3, "follow")], False),  # late, older follow stays ignored
        ([(3, "unfollow"), (9, "follow")], True),
        ([(1, "unfollow")], False),  # unfollow of a non-follower is recorded, count 0
        ([(4, "follow"), (4, "follow")], True),
    ],
)
def test_follow_last_writer_wins(sequence, following: bool) -> None:
    state = PartitionState(DEFAULT_ACTIVE_TYPES)
    for ts, t in sequence:
        state.apply("x", "a", "u", ts, t)
    assert state.records[make_key("x", "a", "u")].following is following
    assert state.follower_counts() == {("x", "a"): int(following), ("x", "*"): int(following)}


def test_window_bounds_exclusive_below_inclusive_above() -> None:
    state = PartitionState(DEFAULT_ACTIVE_TYPES)
    state.apply("x", "a", "u1", 100, "post")
    state.apply("x", "a", "u2", 95, "like")
    state.apply("x", "a", "u3", 101, "post")  # after now: not counted
    state.apply("x", "a", "u4", 50, "view")  # not active: no last_active
    counts = state.active_counts(100, {"5ms": 5, "6ms": 6, "1ms": 1})
    assert counts[("x", "a")] == {"5ms": 1, "6ms": 2, "1ms": 1}
    # u3's newest activity (101) is in the future at now=100: not active in "*" either.
    assert counts[("x", ALL_COMMUNITIES)] == {"5ms": 1, "6ms": 2, "1ms": 1}


def test_late_event_never_moves_last_active_back() -> None:
    state = PartitionState(DEFAULT_ACTIVE_TYPES)
    key = make_key("x", "a", "u")
    assert state.apply("x", "a", "u", 100, "post") == key
    assert state.apply("x", "a", "u", 50, "post") == key  # first_seen moves back
    assert state.apply("x", "a", "u", 60, "post") is None
    assert state.records[key] == UserRecord(50, 100, None, False)


def test_all_communities_counts_users_once() -> None:
    state = PartitionState(DEFAULT_ACTIVE_TYPES)
    for community in COMMUNITIES:
        state.apply("x", community, "u", 10, "post")
        state.apply("x", community, "u", 10, "follow")
    assert state.active_counts(10, {"1ms": 1})[("x", "*")] == {"1ms": 1}
    assert state.follower_counts()[("x", "*")] == 1


# -- wire, keys ---------------------------------------------------------------------------


@given(
    st.sampled_from(PLATFORMS + ["p" * 32, "é"]),
    st.text(min_size=1).filter(lambda s: SEP not in s),
    st.text(min_size=1).filter(lambda s: SEP not in s),
)
def test_key_round_trip(platform: str, community: str, user: str) -> None:
    assert split_key(make_key(platform, community, user)) == (platform, community, user)


@given(event_lists(min_size=1))
def test_wire_round_trip(events: list[Event]) -> None:
    import orjson

    for record in fold(events).values():
        assert UserRecord.from_wire(orjson.loads(orjson.dumps(record.to_wire()))) == record


# -- expiry, rebuild, delete, revoke --------------------------------------------------------


@given(st.data(), event_lists(), partitionings, st.integers(2 * LONGEST, 2 * LONGEST + 2 * DAY))
def test_expiry_keeps_counts(data: st.DataObject, events, partition_of, horizon: int) -> None:
    """A horizon of twice the longest window keeps every count at now, dormant and "*"
    (a user's first seen over communities) included; a user goes whole or not at all."""
    worker = build(events, partition_of)
    now = data.draw(query_times(events))
    active_before = worker.active_counts(now, WINDOWS)
    lifecycle_before = worker.lifecycle_counts(now, WINDOWS)
    followers_before = worker.follower_counts()
    for state in worker.partitions.values():
        expired = set(state.expired_keys(now, horizon))
        for key in expired:
            record = state.records[key]
            assert not record.following
            assert record.newest_ms() <= now - horizon
            state.delete(key)
        users_left = {(split_key(k)[0], split_key(k)[2]) for k in state.records}
        for key, record in state.records.items():
            assert (
                record.following
                or record.newest_ms() > now - horizon
                or any(
                    r.following or r.newest_ms() > now - horizon
                    for k, r in state.records.items()
                    if (split_key(k)[0], split_key(k)[2]) == (split_key(key)[0], split_key(key)[2])
                )
            ), key
        assert not {(split_key(k)[0], split_key(k)[2]) for k in expired} & users_left
    assert nonzero_active(worker.active_counts(now, WINDOWS)) == nonzero_active(active_before)
    assert nonzero_lifecycle(worker.lifecycle_counts(now, WINDOWS)) == nonzero_lifecycle(
        lifecycle_before
    )
    assert nonzero(worker.follower_counts()) == nonzero(followers_before)


@given(event_lists(), st.integers(0, 2 * DAY), st.integers(1, 7))
def test_expiry_in_steps_finds_the_same_keys(events, horizon: int, budget: int) -> None:
    """The worker scans in steps (the event loop served between them): same keys, one
    step per ``budget`` records."""
    state = build(events, dict.fromkeys(USERS, 0)).partitions[0]
    now = max((e.ts_ms for e in events), default=_T0)
    steps = state.expired_key_steps(now, horizon, budget)
    turns = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            keys = done.value
            break
        turns += 1
    assert keys == state.expired_keys(now, horizon)
    assert turns == len(state) // budget


def test_expiry_at_one_window_would_lose_dormant_users() -> None:
    """Why the horizon doubled: a user last active in (t - 2W, t - W] is dormant."""
    state = PartitionState(DEFAULT_ACTIVE_TYPES)
    state.apply("x", "a", "u", 100, "post")
    windows = {"50ms": 50}
    assert state.lifecycle_counts(160, windows)[("x", "a")]["50ms"] == (0, 0, 0, 1)
    assert state.expired_keys(160, 50) == [make_key("x", "a", "u")]
    assert state.expired_keys(160, 100) == []


@given(st.data(), event_lists(), partitionings, st.randoms(use_true_random=False))
def test_load_rebuilds_same_indexes(data: st.DataObject, events, partition_of, rnd) -> None:
    worker = build(events, partition_of)
    rebuilt = WorkerState(DEFAULT_ACTIVE_TYPES)
    for p, state in worker.partitions.items():
        fresh = rebuilt.assign(p)
        items = list(state.records.items())
        rnd.shuffle(items)
        for key, record in items:
            fresh.load(key, UserRecord.from_wire(record.to_wire()))
        assert fresh.records == state.records
        newest = [r.newest_ms() for r in state.records.values()]
        assert fresh.watermark_ms() == (max(newest) if newest else None)
    for _ in range(3):
        now = data.draw(query_times(events))
        assert rebuilt.active_counts(now, WINDOWS) == worker.active_counts(now, WINDOWS)
        assert rebuilt.lifecycle_counts(now, WINDOWS) == worker.lifecycle_counts(now, WINDOWS)
    assert rebuilt.follower_counts() == worker.follower_counts()


@given(st.data(), event_lists(), event_lists(), partitionings)
def test_load_then_apply_equals_apply_all(data: st.DataObject, first, second, partition_of):
    """Recovery: records restored from the table, then the stream resumes."""
    before = build(first, partition_of)
    resumed = WorkerState(DEFAULT_ACTIVE_TYPES)
    for p, state in before.partitions.items():
        fresh = resumed.assign(p)
        for key, record in state.records.items():
            fresh.load(key, UserRecord.from_wire(record.to_wire()))
    for e in second:
        resumed.partitions[partition_of[e.user_id]].apply(
            e.platform, e.community, e.user_id, e.ts_ms, e.type
        )
    events = first + second
    now = data.draw(query_times(events))
    assert resumed.active_counts(now, WINDOWS) == expected_active(events, now, WINDOWS)
    assert resumed.lifecycle_counts(now, WINDOWS) == expected_lifecycle(events, now, WINDOWS)
    assert resumed.follower_counts() == expected_followers(events)


@given(st.data(), event_lists(), event_lists(), partitionings, st.integers(1, 6))
def test_bulk_load_and_stepwise_flush_equal_load_and_flush(
    data: st.DataObject, first, second, partition_of, budget: int
) -> None:
    """A rebuild's path (``load_wire`` then ``flush_steps``, a few records per step)
    against ``load`` one by one and ``flush``: the same records, watermark and counts,
    with keys loaded twice (the later replaces the earlier) and tombstones."""
    old, new = build(first, partition_of), build(second, partition_of)
    one, bulk = WorkerState(DEFAULT_ACTIVE_TYPES), WorkerState(DEFAULT_ACTIVE_TYPES)
    for p in range(PARTITIONS):
        items: list[tuple[str, list[int | None] | None]] = [
            (key, record.to_wire())
            for source in (old, new)
            for key, record in source.partitions[p].records.items()
        ]
        items.append((make_key("x", "a", "gone"), None))
        by_one = one.assign(p)
        for key, wire in items:
            if wire is not None:
                by_one.load(key, UserRecord.from_wire(wire))
        by_one.flush()
        in_bulk = bulk.assign(p)
        assert in_bulk.load_wire(items) == len(items) - 1
        steps = sum(1 for _ in in_bulk.flush_steps(budget))
        groups = {key.rpartition(SEP)[0] for key, _wire in items[:-1]}
        assert (steps == 0) == (not groups) and steps <= len(groups)
        assert in_bulk.records == by_one.records
        assert in_bulk.watermark_ms() == by_one.watermark_ms()
    events = first + second
    for _ in range(3):
        now = data.draw(query_times(events))
        assert bulk.active_counts(now, WINDOWS) == one.active_counts(now, WINDOWS)
        assert bulk.lifecycle_counts(now, WINDOWS) == one.lifecycle_counts(now, WINDOWS)
    assert bulk.follower_counts() == one.follower_counts()


def test_bulk_load_refuses_out_of_range_times() -> None:
    state = PartitionState(DEFAULT_ACTIVE_TYPES)
    with pytest.raises(ValueError, match="out of range"):
        state.load_wire([(make_key("x", "a", "u"), [1, 2**60, None, False])])


def test_load_replaces_existing_key() -> None:
    state = PartitionState(DEFAULT_ACTIVE_TYPES)
    state.apply("x", "a", "u", 10, "follow")
    state.load(make_key("x", "a", "u"), UserRecord(5, 7, 8, False))
    assert state.active_counts(10, {"5ms": 5}) == {("x", "a"): {"5ms": 1}, ("x", "*"): {"5ms": 1}}
    assert state.follower_counts() == {("x", "a"): 0, ("x", "*"): 0}
    assert len(state) == 1


@given(st.data(), event_lists(), partitionings)
def test_delete_is_as_if_the_key_never_had_events(data: st.DataObject, events, partition_of):
    worker = build(events, partition_of)
    keys = sorted({make_key(e.platform, e.community, e.user_id) for e in events})
    doomed = set(data.draw(st.lists(st.sampled_from(keys), unique=True))) if keys else set()
    for key in doomed:
        _platform, _community, user = split_key(key)
        worker.partitions[partition_of[user]].delete(key)
        worker.partitions[partition_of[user]].delete(key)  # twice: no-op
    kept = [e for e in events if make_key(e.platform, e.community, e.user_id) not in doomed]
    now = data.draw(query_times(events))
    assert worker.active_counts(now, WINDOWS) == expected_active(kept, now, WINDOWS)
    assert worker.lifecycle_counts(now, WINDOWS) == expected_lifecycle(kept, now, WINDOWS)
    assert worker.follower_counts() == expected_followers(kept)


@given(st.data(), event_lists(), partitionings, st.integers(0, PARTITIONS - 1))
def test_revoke_removes_partition(data: st.DataObject, events, partition_of, gone: int) -> None:
    worker = build(events, partition_of)
    worker.revoke(gone)
    worker.revoke(gone)  # twice: no-op
    kept = [e for e in events if partition_of[e.user_id] != gone]
    now = data.draw(query_times(events))
    assert worker.active_counts(now, WINDOWS) == expected_active(kept, now, WINDOWS)
    assert worker.lifecycle_counts(now, WINDOWS) == expected_lifecycle(kept, now, WINDOWS)
    assert worker.follower_counts() == expected_followers(kept)
    # Re-assignment starts empty, ready for load().
    assert len(worker.assign(gone)) == 0


def test_empty_worker() -> None:
    worker = WorkerState(DEFAULT_ACTIVE_TYPES)
    assert worker.active_counts(0, WINDOWS) == {}
    assert worker.follower_counts() == {}
    assert worker.watermark_ms() is None
    worker.assign(0)
    assert worker.watermark_ms() is None
    worker.partitions[0].apply("x", "a", "u", 0, "view")
    assert worker.watermark_ms() == 0
    assert worker.active_counts(0, WINDOWS) == {}


@given(
    st.data(),
    st.lists(
        st.tuples(st.sampled_from("abcdef"), st.integers(0, 30), st.sampled_from(TYPES)),
        max_size=40,
    ),
)
def test_delete_recomputes_user_max_for_all_communities(data: st.DataObject, rows) -> None:
    """One user in many communities: deleting the community that holds their newest
    activity must fall back to the next newest, which is what "*" counts."""
    events = [Event(f"e{i}", ts, "x", c, "u", t) for i, (c, ts, t) in enumerate(rows)]
    state = PartitionState(DEFAULT_ACTIVE_TYPES)
    for e in events:
        state.apply(e.platform, e.community, e.user_id, e.ts_ms, e.type)
    keys = sorted(state.records)
    doomed = set(data.draw(st.lists(st.sampled_from(keys), unique=True))) if keys else set()
    for key in doomed:
        state.delete(key)
    kept = [e for e in events if make_key(e.platform, e.community, e.user_id) not in doomed]
    windows = {f"{w}ms": w for w in range(1, 32)}
    for now in range(0, 32):
        assert state.active_counts(now, windows) == expected_active(kept, now, windows)
        assert state.lifecycle_counts(now, windows) == expected_lifecycle(kept, now, windows)


def test_delete_newest_community_falls_back() -> None:
    state = PartitionState(DEFAULT_ACTIVE_TYPES)
    state.apply("x", "a", "u", 10, "post")
    state.apply("x", "b", "u", 20, "post")
    state.apply("x", "c", "u", 30, "post")
    state.delete(make_key("x", "c", "u"))
    assert state.active_counts(30, {"15ms": 15})[("x", "*")] == {"15ms": 1}
    state.delete(make_key("x", "b", "u"))
    assert state.active_counts(30, {"15ms": 15})[("x", "*")] == {"15ms": 0}
    state.delete(make_key("x", "a", "u"))
    assert state.active_counts(30, {"15ms": 15}) == {}


def test_worked_example_of_the_docs() -> None:
    """docs/metrics.md, "A worked example": the same events, the same numbers."""
    day = DAY
    t = 40 * day
    state = PartitionState(DEFAULT_ACTIVE_TYPES)
    for user, ts, kind in [
        ("ana", 2 * day, "follow"),
        ("ana", 39 * day, "like"),
        ("ben", 5 * day, "follow"),
        ("ben", 30 * day, "like"),
        ("cat", 37 * day, "like"),
        ("dan", 38 * day, "view"),
        ("eve", 3 * day, "follow"),
        ("fay", 35 * day + day // 2, "unfollow"),
        ("fay", 35 * day + day // 2, "follow"),
        ("gus", 33 * day, "like"),
    ]:
        state.apply("x", "acme", user, ts, kind)
    windows = {"7d": 7 * day, "30d": 30 * day}
    assert state.active_counts(t, windows)[("x", "acme")] == {"7d": 3, "30d": 5}
    assert state.follower_counts()[("x", "acme")] == 3
    lifecycle = state.lifecycle_counts(t, windows)[("x", "acme")]
    assert lifecycle["7d"] == (1, 3, 1, 2)  # active followers, new, returning, dormant
    assert lifecycle["30d"].active_followers == 2  # ghost followers: 3 - 2 = 1 (eve)


@given(st.data(), event_lists(min_size=1), partitionings)
def test_cached_counts_follow_the_clock_and_new_events(data: st.DataObject, events, partition_of):
    """The lifecycle counts are cached per community until the clock brings an element
    onto a window edge or the community changes: a rising clock, with events applied
    between the queries, must still give the oracle's numbers at every step."""
    worker = build([], partition_of)
    times = sorted(data.draw(st.lists(query_times(events), min_size=2, max_size=8)))
    cut = sorted(data.draw(st.lists(st.integers(0, len(events)), min_size=len(times))))
    applied = 0
    for now, upto in zip(times, cut, strict=False):
        apply_all(worker, partition_of, events[applied:upto])
        applied = max(applied, upto)
        seen = events[:applied]
        assert worker.lifecycle_counts(now, WINDOWS) == expected_lifecycle(seen, now, WINDOWS)
        # the same instant again, then one millisecond later: from the cache or not
        assert worker.lifecycle_counts(now, WINDOWS) == expected_lifecycle(seen, now, WINDOWS)
        assert worker.lifecycle_counts(now + 1, WINDOWS) == expected_lifecycle(
            seen, now + 1, WINDOWS
        )


@given(st.data(), event_lists(min_size=1), partitionings)
def test_counts_moved_by_deletes_and_reloads_between_queries(
    data: st.DataObject, events, partition_of
) -> None:
    """Between two queries a group's cached counts are moved by its member changes
    (streams/count_deltas.py) instead of counted again: deletions, reloads of a
    record (its old view out, its new in) and new events, then a query at a later
    time, must still give the oracle's numbers."""
    worker = build([], partition_of)
    times = sorted(data.draw(st.lists(query_times(events), min_size=2, max_size=6)))
    cut = sorted(data.draw(st.lists(st.integers(0, len(events)), min_size=len(times))))
    dropped: set[int] = set()  # events of a key deleted after them
    applied = 0
    for now, upto in zip(times, cut, strict=False):
        apply_all(worker, partition_of, events[applied:upto])
        applied = max(applied, upto)
        keys = sorted({make_key(e.platform, e.community, e.user_id) for e in events[:applied]})
        touch: bool = data.draw(st.booleans())
        if keys and touch:
            key = data.draw(st.sampled_from(keys))
            part = worker.partitions[partition_of[split_key(key)[2]]]
            if data.draw(st.booleans()):
                part.delete(key)
                dropped.update(
                    i
                    for i, e in enumerate(events[:applied])
                    if make_key(e.platform, e.community, e.user_id) == key
                )
            else:  # the same record read back: replaced, not added twice
                record = part.records.get(key)
                if record is not None:
                    part.load(key, record)
        seen = [e for i, e in enumerate(events[:applied]) if i not in dropped]
        assert worker.active_counts(now, WINDOWS) == expected_active(seen, now, WINDOWS)
        assert worker.lifecycle_counts(now, WINDOWS) == expected_lifecycle(seen, now, WINDOWS)


# -- packed records ---------------------------------------------------------------------

YEAR_1_MS = -62_135_596_800_000
YEAR_9999_END_MS = 253_402_300_799_999


@given(
    st.integers(YEAR_1_MS, YEAR_9999_END_MS),
    st.none() | st.integers(YEAR_1_MS, YEAR_9999_END_MS),
    st.none() | st.integers(YEAR_1_MS, YEAR_9999_END_MS),
    st.booleans(),
)
def test_packed_record_round_trip(first: int, last, follow_ts, following: bool) -> None:
    """Every time of years 1-9999 and every None survives the packed form."""
    state = PartitionState(DEFAULT_ACTIVE_TYPES)
    record = UserRecord(first, last, follow_ts, following)
    state.load("x\x1fa\x1fu", record)
    assert state.records["x\x1fa\x1fu"] == record
    if record.newest_ms() >= 0:  # the watermark starts at 1970
        assert state.watermark_ms() == record.newest_ms()


def test_records_are_copies_and_out_of_range_times_are_refused() -> None:
    state = PartitionState(DEFAULT_ACTIVE_TYPES)
    state.apply("x", "a", "u", 10, "post")
    copy = state.records["x\x1fa\x1fu"]
    copy.last_active_ms = 99
    assert state.records == {"x\x1fa\x1fu": UserRecord(10, 10, None, False)}
    with pytest.raises(ValueError, match="out of range"):
        state.apply("x", "a", "u", 1 << 60, "post")
    with pytest.raises(ValueError, match="out of range"):
        state.load("x\x1fa\x1fv", UserRecord(-(1 << 60), None, None, False))
    assert len(state) == 1


def test_records_share_the_user_id_and_leave_nothing_behind() -> None:
    """Memory (issue 16): a user's id is stored once for all their communities, and
    a community whose last record goes leaves no empty container behind."""
    state = PartitionState(DEFAULT_ACTIVE_TYPES)
    for community in COMMUNITIES:
        state.apply("x", community, "".join(["u", "1"]), 10, "post")  # a fresh str each
    ids = [next(iter(records)) for records in state._by_group.values()]
    assert len(ids) == len(COMMUNITIES) and all(i is ids[0] for i in ids)
    state.flush()
    assert [next(iter(users)) for users in state._users.values()] == ["u1"]
    assert next(iter(state._users["x"])) is ids[0]  # "*" keeps no key of its own
    for key in list(state.records):
        state.delete(key)
    state.flush()
    assert len(state) == 0 and not state._by_group and not state._users
    assert state.lifecycle_counts(10, {"1ms": 1}) == {}
