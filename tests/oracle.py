"""A brute-force oracle of the pipeline's counts, written from the rules alone.

It deliberately shares no code with ``streams/state.py`` (no records, no indexes,
no incremental updates): it re-reads the whole event list for every answer, so a
bug in the incremental logic cannot hide in both. Unit tests compare the state to
it; integration tests compare published metrics to it (event clock:
``now_ms = event_clock(events)``).

Input events are valid events: :class:`streams.events.Event` objects, or mappings
with ``platform``, ``community``, ``user_id``, ``type`` and either ``ts_ms`` (int)
or ``ts`` (anything :func:`streams.events.parse_timestamp_ms` accepts).

Which keys appear (the same rules as the state):

* :func:`expected_active`: every (platform, community) with at least one event of an
  active type (zero counts included), plus (platform, "*") for each such platform.
* :func:`expected_lifecycle`: every (platform, community) with at least one event,
  plus (platform, "*") for each such platform.
* :func:`expected_followers`: every (platform, community) with at least one follow
  or unfollow event (zero counts included), plus (platform, "*") for each such
  platform.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from streams.events import ALL_COMMUNITIES, DEFAULT_ACTIVE_TYPES, Event, parse_timestamp_ms

Key = tuple[str, str]
Fields = tuple[str, str, str, int, str]  # platform, community, user_id, ts_ms, type


def make_key(platform: str, community: str, user_id: str) -> str:
    """A user's key in the state, its table and its changelog, written from the state
    model in docs/ (``platform \\x1f community \\x1f user_id``), not from the state's
    code, so a change of the key form there fails the tests."""
    return f"{platform}\x1f{community}\x1f{user_id}"


def fields(event: Event | Mapping[str, Any]) -> Fields:
    """The five fields the counts depend on, from an Event or a mapping."""
    if isinstance(event, Event):
        return event.platform, event.community, event.user_id, event.ts_ms, event.type
    if "ts_ms" in event:
        ts_ms = int(event["ts_ms"])
    else:
        ts_ms = parse_timestamp_ms(event["ts"])
    return event["platform"], event["community"], event["user_id"], ts_ms, event["type"]


def event_clock(events: Iterable[Event | Mapping[str, Any]]) -> int | None:
    """The event-time clock: the newest ts of all (valid) events, None if there are none."""
    times = [fields(e)[3] for e in events]
    return max(times) if times else None


def expected_active(
    events: Iterable[Event | Mapping[str, Any]],
    now_ms: int,
    windows: Mapping[str, int],
    active_types: frozenset[str] = DEFAULT_ACTIVE_TYPES,
) -> dict[Key, dict[str, int]]:
    """{(platform, community): {label: users active in (now - W, now]}}, incl. "*".

    A user's last-active time in a community is the max ts of their active events
    there (so late events never move it back); in "*" it is the max over all the
    platform's communities. Users are counted, not events.
    """
    rows = [fields(e) for e in events]
    last: dict[tuple[str, str, str], int] = {}  # (platform, community, user) -> last active
    for platform, community, user, ts_ms, kind in rows:
        if kind in active_types:
            k = (platform, community, user)
            if k not in last or ts_ms > last[k]:
                last[k] = ts_ms
    # "*": the newest last-active over all of a user's communities of the platform.
    last_all: dict[tuple[str, str], int] = {}
    for (platform, _community, user), ts_ms in last.items():
        k2 = (platform, user)
        if k2 not in last_all or ts_ms > last_all[k2]:
            last_all[k2] = ts_ms

    out: dict[Key, dict[str, int]] = {}
    for platform, community, _user in last:
        out[(platform, community)] = {label: 0 for label in windows}
        out[(platform, ALL_COMMUNITIES)] = {label: 0 for label in windows}
    for label, width in windows.items():
        for (platform, community, _user), ts_ms in last.items():
            if now_ms - width < ts_ms <= now_ms:
                out[(platform, community)][label] += 1
        for (platform, _user), ts_ms in last_all.items():
            if now_ms - width < ts_ms <= now_ms:
                out[(platform, ALL_COMMUNITIES)][label] += 1
    return out


def follow_state(events: Iterable[Event | Mapping[str, Any]]) -> dict[tuple[str, str, str], bool]:
    """(platform, community, user) -> following, for every triple with a follow/unfollow.

    The winner is the event with the greatest (ts, is_unfollow): last writer by event
    time, an unfollow winning a tie at the same millisecond.
    """
    winner: dict[tuple[str, str, str], tuple[int, bool]] = {}
    for platform, community, user, ts_ms, kind in (fields(e) for e in events):
        if kind not in ("follow", "unfollow"):
            continue
        candidate = (ts_ms, kind == "unfollow")
        k = (platform, community, user)
        if k not in winner or candidate > winner[k]:
            winner[k] = candidate
    return {k: not is_unfollow for k, (_ts, is_unfollow) in winner.items()}


def expected_followers(events: Iterable[Event | Mapping[str, Any]]) -> dict[Key, int]:
    """{(platform, community): followers}, incl. (platform, "*"): users following at least
    one of the platform's communities."""
    state = follow_state(events)
    out: dict[Key, int] = {}
    followers_all: dict[str, set[str]] = {}
    for (platform, community, user), following in state.items():
        out.setdefault((platform, community), 0)
        followers_all.setdefault(platform, set())
        if following:
            out[(platform, community)] += 1
            followers_all[platform].add(user)
    for platform, users in followers_all.items():
        out[(platform, ALL_COMMUNITIES)] = len(users)
    return out


def top_users_after_flush(
    current: dict[str, float], increments: dict[str, int], top_n: int
) -> dict[str, float]:
    """What Redis must hold for one top-users set after a flush of ``increments``
    (ZINCRBY per user, then ZREMRANGEBYRANK keeping the top N by score; ties broken
    like ZREMRANGEBYRANK: the lexicographically smallest go first)."""
    merged = dict(current)
    for user, n in increments.items():
        merged[user] = merged.get(user, 0) + n
    ranked = sorted(merged.items(), key=lambda us: (us[1], us[0]))
    return dict(ranked[-top_n:]) if top_n else {}


def expected_lifecycle(
    events: Iterable[Event | Mapping[str, Any]],
    now_ms: int,
    windows: Mapping[str, int],
    active_types: frozenset[str] = DEFAULT_ACTIVE_TYPES,
) -> dict[Key, dict[str, tuple[int, int, int, int]]]:
    """{(platform, community): {label: (active_followers, new, returning, dormant)}}.

    Straight from the definitions (docs/metrics.md), with L = now - W: a user's first
    seen is the min ts of any of their events, last active the max ts of their active
    events, following the winner of :func:`follow_state`. In "*" the same over all
    of the platform's communities (following: at least one).

    * active_followers: following, last active in (L, now]
    * new: first seen in (L, now]
    * returning: last active in (L, now] and first seen <= L
    * dormant: last active in (now - 2W, L]
    """
    rows = [fields(e) for e in events]
    follows = follow_state(rows_as_events(rows))
    # (platform, community or "*", user) -> [first seen, last active or None, following]
    users: dict[tuple[str, str, str], list[Any]] = {}
    for platform, community, user, ts_ms, kind in rows:
        for group in (community, ALL_COMMUNITIES):
            u = users.setdefault((platform, group, user), [ts_ms, None, False])
            u[0] = min(u[0], ts_ms)
            if kind in active_types and (u[1] is None or ts_ms > u[1]):
                u[1] = ts_ms
    for (platform, community, user), following in follows.items():
        if following:
            users[(platform, community, user)][2] = True
            users[(platform, ALL_COMMUNITIES, user)][2] = True
    out: dict[Key, dict[str, tuple[int, int, int, int]]] = {}
    for platform, group, _user in users:
        out[(platform, group)] = {}
    for (platform, group), counts in out.items():
        members = [v for k, v in users.items() if k[0] == platform and k[1] == group]
        for label, width in windows.items():
            low = now_ms - width

            def active(last: int | None, low: int = low) -> bool:
                return last is not None and low < last <= now_ms

            counts[label] = (
                sum(1 for first, last, following in members if following and active(last)),
                sum(1 for first, _last, _f in members if low < first <= now_ms),
                sum(1 for first, last, _f in members if active(last) and first <= low),
                sum(
                    1
                    for _first, last, _f in members
                    if last is not None and low - width < last <= low
                ),
            )
    return out


def rows_as_events(rows: Iterable[Fields]) -> list[dict[str, Any]]:
    """Field tuples back into the mapping form the other oracle functions take."""
    return [
        {"platform": p, "community": c, "user_id": u, "ts_ms": ts, "type": kind}
        for p, c, u, ts, kind in rows
    ]
