"""LiveCounts: the incrementally kept rows equal a full computation after every step.

The reference is :func:`streams.gauges.gauge_rows` over one partition (itself checked
against tests/oracle.py in test_gauges.py), recomputed from scratch at each step;
the steps mix new events, a clock that crosses window edges (forwards and back),
expiry, a partition rebuilt from its records, revocation and a clock that is
still unset. A reader that applies its feed's changes must hold the same rows.
"""

from __future__ import annotations

import asyncio
import random

from streams.events import DEFAULT_ACTIVE_TYPES, EVENT_TYPES
from streams.gauges import gauge_rows
from streams.live_counts import EMPTY, Changes, LiveCounts, Row
from streams.state import PartitionState, WorkerState
from streams.topics import partition_for_user

WINDOWS = {"5m": 300_000, "1h": 3_600_000, "1d": 86_400_000}
NOW = 1_800_000_000_000
PARTS = 3


def reference(state: WorkerState, now: int | None) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for p, part in state.partitions.items():
        g = gauge_rows([part], now, WINDOWS)
        keys = set(g.active) | set(g.lifecycle) | set(g.followers)
        out[p] = {
            pc: Row(g.active.get(pc), g.lifecycle.get(pc), g.followers.get(pc)) for pc in keys
        }
    return out


def apply_random(state: WorkerState, rng: random.Random, now: int, n: int) -> None:
    types = sorted(EVENT_TYPES)
    for _ in range(n):
        user = f"u{rng.randrange(60)}"
        part = state.partitions.get(partition_for_user(user, PARTS))
        if part is not None:
            ts = now - rng.randrange(2 * 86_400_000) + rng.choice([0, 0, 0, 120_000])
            part.apply(
                rng.choice(["tw", "ig"]), f"c{rng.randrange(5)}", user, ts, rng.choice(types)
            )


def fresh_state() -> PartitionState:
    return PartitionState(DEFAULT_ACTIVE_TYPES)


def apply_changes(copy: dict, changes: list) -> None:
    """What a reader does with its feed: each change's "before" must be what it has."""
    for p, pc, before, after in changes:
        assert copy.get((p, pc), EMPTY) == before
        if after:
            copy[(p, pc)] = after
        else:
            del copy[(p, pc)]


def check(live: LiveCounts, feed: Changes, state: WorkerState, now: int | None, copy: dict) -> None:
    live.update(now)
    want = reference(state, now)
    assert {p: live.rows(p) for p in live.partitions()} == want
    apply_changes(copy, feed.take())
    assert copy == {(p, pc): row for p, rows in want.items() for pc, row in rows.items()}


def watched_state() -> tuple[WorkerState, LiveCounts, Changes, dict]:
    """Every partition assigned, its LiveCounts, a reader's feed and its copy."""
    state = WorkerState(DEFAULT_ACTIVE_TYPES)
    for p in range(PARTS):
        state.assign(p)
    live = LiveCounts(state, WINDOWS)
    return state, live, live.feed(), {}


def test_rows_follow_every_kind_of_change() -> None:
    for seed in range(4):
        rng = random.Random(seed)
        state, live, feed, copy = watched_state()
        check(live, feed, state, None, copy)  # no clock, no records
        now = NOW
        for step in range(60):
            what = rng.random()
            if what < 0.4:
                apply_random(state, rng, now, rng.randrange(1, 40))
            elif what < 0.7:  # the clock moves, often across an edge
                now += rng.choice([1, 999, 60_000, 300_000, 3_600_000, 86_400_000])
            elif what < 0.75:
                now -= 5_000  # a wall clock stepped back
            elif what < 0.85:  # expiry: every record of some users
                part = state.partitions.get(rng.randrange(PARTS))
                for key in list(part.records if part else ())[: rng.randrange(1, 8)]:
                    part.delete(key)  # type: ignore[union-attr]
            elif what < 0.95:  # reassigned: a fresh state rebuilt from the records
                p = rng.randrange(PARTS)
                old = state.partitions.get(p, fresh_state())
                fresh = state.assign(p)
                for key, record in list(old.records.items()):
                    fresh.load(key, record)
            else:  # revoked, later assigned again empty
                p = rng.randrange(PARTS)
                if p in state.partitions:
                    state.revoke(p)
                else:
                    state.assign(p)
            # every fifth step without a clock: only follower counts, kept from the
            # state's follower changes alone
            check(live, feed, state, now if step % 5 else None, copy)


def test_a_reader_that_joins_late_starts_from_every_row() -> None:
    state = WorkerState(DEFAULT_ACTIVE_TYPES)
    for p in range(PARTS):
        state.assign(p)
    apply_random(state, random.Random(9), NOW, 200)
    live = LiveCounts(state, WINDOWS)
    live.update(NOW)
    feed = live.feed()
    rows = {(p, pc): after for p, pc, _before, after in feed.take()}
    want = reference(state, NOW)
    assert rows == {(p, pc): row for p, r in want.items() for pc, row in r.items()}
    assert len(rows) > 10
    live.update(NOW)
    assert feed.take() == []  # nothing changed, nothing reported


def test_every_follow_change_reaches_the_rows() -> None:
    """Follow changes that move no index (an unfollow of a record that never
    followed makes its community show 0 followers) reach the rows too, with and
    without a clock."""
    for clock in (None, NOW + 100):
        state, live, feed, copy = watched_state()
        steps = [
            ("u4", "acme", "like"), ("u4", "beta", "like"), ("u1", "acme", "follow"),
            ("u4", "beta", "unfollow"), ("u2", "acme", "follow"), ("u1", "acme", "unfollow"),
            ("u1", "acme", "follow"), ("u2", "acme", "unfollow"), ("u3", "acme", "like"),
            ("u3", "acme", "follow"), ("u4", "acme", "unfollow"),
        ]  # fmt: skip
        for step, (user, community, kind) in enumerate(steps):
            part = state.partitions[partition_for_user(user, PARTS)]
            part.apply("tw", community, user, NOW + step, kind)
            check(live, feed, state, clock, copy)
        followers: dict = {}
        for rows in reference(state, clock).values():
            for pc, row in rows.items():
                if row.followers is not None:
                    followers[pc] = followers.get(pc, 0) + row.followers
        assert followers[("tw", "acme")] == 2  # u1 and u3
        assert followers[("tw", "beta")] == 0  # shown: u4's unfollow gave it a follow time


def test_a_feed_nobody_takes_is_folded_and_still_exact() -> None:
    """A feed left unread (a worker nobody scrapes) is folded to one change per key
    once it grows past its limit; applying it afterwards still gives every row."""
    for seed in range(3):
        rng = random.Random(seed)
        state, live, _feed, _copy = watched_state()
        idle = live.feed()
        idle.limit = 5  # fold early and often
        lengths = [0]
        now = NOW
        for _ in range(40):
            if rng.random() < 0.6:
                apply_random(state, rng, now, rng.randrange(1, 30))
            else:
                now += rng.choice([1, 60_000, 3_600_000, 86_400_000])
            live.update(now)
            lengths.append(len(idle.pending))
        copy: dict = {}
        apply_changes(copy, idle.take())
        want = reference(state, now)
        assert copy == {(p, pc): row for p, rows in want.items() for pc, row in rows.items()}
        # it did fold: the unread feed shrank at some update
        assert any(b < a for a, b in zip(lengths, lengths[1:], strict=False))


def test_refresh_serves_the_loop_between_partitions_and_stays_exact() -> None:
    """The async refresh lets other tasks run between partitions once its turn is over
    (here at once: the loop is not held for a whole update), and events, revocations
    and reassignments that land while it waits leave the rows and a reader's copy
    exact after the update that follows."""

    async def meanwhile(state: WorkerState, rng: random.Random, now: int, ran: list[int]) -> None:
        """What the stages do while a scrape refreshes: apply events, rebalance."""
        for _ in range(PARTS):
            await asyncio.sleep(0)
            ran.append(1)
            apply_random(state, rng, now, rng.randrange(0, 10))
            if rng.random() < 0.2:
                p = rng.randrange(PARTS)
                if p in state.partitions:
                    state.revoke(p)
                else:
                    state.assign(p)

    async def scenario(seed: int) -> tuple[int, int]:
        rng = random.Random(seed)
        state, live, feed, copy = watched_state()
        now = NOW
        turns = most = 0
        for _ in range(25):
            apply_random(state, rng, now, rng.randrange(1, 30))
            now += rng.choice([1, 60_000, 300_000])
            ran: list[int] = []
            other = asyncio.ensure_future(meanwhile(state, rng, now, ran))
            async with live.lock:
                await live.refresh(now, turn_s=0.0)  # through after every partition
                turns += len(ran)
            await other
            check(live, feed, state, now, copy)  # update(now), then the oracle
            most = max(most, len(copy))
        return turns, most

    for seed in range(5):
        turns, rows = asyncio.run(scenario(seed))
        assert turns >= 10  # the other task ran during the refreshes (0 if none yielded)
        assert rows > 10


def test_refresh_gives_the_rows_and_changes_update_gives() -> None:
    rng = random.Random(3)
    state, live, feed, _ = watched_state()
    twin_state, twin, twin_feed, _ = watched_state()
    for _ in range(20):
        seed = rng.randrange(1 << 30)
        now = NOW + rng.randrange(86_400_000)
        apply_random(state, random.Random(seed), now, 40)
        apply_random(twin_state, random.Random(seed), now, 40)
        live.update(now)
        asyncio.run(twin.refresh(now))
        assert {p: live.rows(p) for p in live.partitions()} == {
            p: twin.rows(p) for p in twin.partitions()
        }
        assert feed.take() == twin_feed.take()
