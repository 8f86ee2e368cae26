"""Pure state of the core pipeline: per-user records and the counts derived from them.

Nothing here does I/O, so the rules (exact windows, last-writer-wins follows,
idempotence, order independence) are tested against a brute-force oracle without
Kafka. The Faust layer owns the changelog-backed table; this module owns the
in-memory indexes that make a scrape cheap, rebuilt from the table on assignment.

Why the indexes look the way they do (docs/metrics.md defines the numbers):

* Every count for any window is a difference of bisections in a few sorted arrays
  per (platform, community) (:class:`_Group`, :mod:`streams.sorted_ints`):
  last-active times (paired with the first-seen time), first-seen times split by
  whether the record has a last-active time, and last-active times of the records
  following now. Windows cost nothing on the hot path and can be added without new state.
* The all-communities total ("*") counts *users*, not (user, community) pairs, so
  it keeps the same lists per platform over each user's view: the min first-seen,
  the max last-active over their communities, and whether they follow any.
* A record is one packed int, not an object (see ``_pack``): a third of the
  memory, and nothing for the garbage collector to walk.
* Follower counts are plain counters: follow state changes are rare and the
  counts are not windowed.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from streams.count_deltas import (
    NEVER,
    View,
    count_deltas,
)
from streams.events import ALL_COMMUNITIES
from streams.sorted_ints import SortedInts

SEP = "\x1f"  # validation forbids control characters in fields, so joins are unambiguous

_FOLLOW = "follow"
_UNFOLLOW = "unfollow"

PC = tuple[str, str]  # (platform, community) or (platform, user_id)


def split_key(key: str) -> tuple[str, str, str]:
    platform, community, user_id = key.split(SEP)
    return platform, community, user_id


@dataclass(slots=True)
class UserRecord:
    """Per (platform, community, user): the value stored in the changelog-backed table.

    A :class:`PartitionState` keeps its records packed into ints (see ``_pack``)
    and hands out these as fresh copies (:class:`Records`); serialise with
    :meth:`to_wire` when writing.
    """

    first_seen_ms: int  # min ts of any event of this user in this community
    last_active_ms: int | None  # max ts of an *active* event (None: never active)
    follow_ts_ms: int | None  # ts of the winning follow/unfollow event (None: none seen)
    following: bool  # state set by that winning event

    def to_wire(self) -> list[int | None]:
        """A positional list: about a third of the bytes of a JSON object per changelog record."""
        return [self.first_seen_ms, self.last_active_ms, self.follow_ts_ms, int(self.following)]

    @classmethod
    def from_wire(cls, value: list[int | None]) -> UserRecord:
        first, last, follow_ts, following = value
        assert first is not None
        return cls(int(first), last, follow_ts, bool(following))

    def newest_ms(self) -> int:
        """The newest time the record knows of; what expiry and the watermark look at."""
        newest = self.first_seen_ms
        if self.last_active_ms is not None and self.last_active_ms > newest:
            newest = self.last_active_ms
        if self.follow_ts_ms is not None and self.follow_ts_ms > newest:
            newest = self.follow_ts_ms
        return newest


# What :func:`fold` reports changed, as bits: the first three change what the
# indexes hold, the last two what the follower counters hold.
FIRST_SEEN = 1
LAST_ACTIVE = 2
FOLLOWING = 4
FOLLOW_TS = 8
FIRST_FOLLOW = 16  # follow_ts was None before: the record now counts in follower_counts


def fold(record: UserRecord, ts_ms: int, event_type: str, active_types: frozenset[str]) -> int:
    """Fold one event into ``record`` in place; the definition of the rules
    (:meth:`PartitionState.apply` applies the same rules to packed records, checked
    against this by the unit tests).

    Returns what changed as bits (0: nothing, a duplicate or a late event that loses
    everywhere). Every field is a max or a min over a totally ordered key (the follow
    winner is the greatest ``(ts, is_unfollow)``), which is what makes the fold
    idempotent and order independent. An unfollow wins a tie so that "follow then
    unfollow in the same millisecond" never leaves a phantom follower, whatever the
    arrival order.
    """
    changed = 0
    if ts_ms < record.first_seen_ms:
        record.first_seen_ms = ts_ms
        changed = FIRST_SEEN
    if event_type in active_types:
        last = record.last_active_ms
        if last is None or ts_ms > last:
            record.last_active_ms = ts_ms
            changed |= LAST_ACTIVE
    if event_type == _FOLLOW or event_type == _UNFOLLOW:
        is_unfollow = event_type == _UNFOLLOW
        follow_ts = record.follow_ts_ms
        if (
            follow_ts is None
            or ts_ms > follow_ts
            or (ts_ms == follow_ts and is_unfollow and record.following)
        ):
            changed |= FOLLOW_TS if follow_ts is not None else FOLLOW_TS | FIRST_FOLLOW
            if record.following == is_unfollow:
                changed |= FOLLOWING
            record.follow_ts_ms = ts_ms
            record.following = not is_unfollow
    return changed


def merge(
    record: UserRecord | None, ts_ms: int, event_type: str, active_types: frozenset[str]
) -> UserRecord:
    """:func:`fold` without mutation, for callers that keep records as values.

    Returns the *same object* when the event changes nothing, so
    ``merge(r, ...) is r`` tells the caller there is nothing to write; otherwise a
    new record, and ``record`` is left untouched.
    """
    if record is None:
        new = UserRecord(ts_ms, None, None, False)
        fold(new, ts_ms, event_type, active_types)
        return new
    new = UserRecord(
        record.first_seen_ms, record.last_active_ms, record.follow_ts_ms, record.following
    )
    return new if fold(new, ts_ms, event_type, active_types) else record


class Lifecycle(NamedTuple):
    """The audience behind one (platform, community) and window; see docs/metrics.md."""

    active_followers: int  # following now, last active in (t - W, t]
    new_users: int  # first seen in (t - W, t]
    returning_users: int  # last active in (t - W, t], first seen <= t - W
    dormant_users: int  # last active in (t - 2W, t - W]

    def plus(self, other: Lifecycle) -> Lifecycle:
        return _new_tuple(
            Lifecycle,
            (self[0] + other[0], self[1] + other[1], self[2] + other[2], self[3] + other[3]),
        )


# NamedTuple's own constructor is a Python-level function; scrapes build tens of
# thousands of these, and tuple.__new__ is the C constructor underneath it.
_new_tuple = tuple.__new__


# The insertions one flush brings to a group's indexes: active (last-active, and the
# first-seen paired with it), first_active, first_idle, active_followers.
_Adds = tuple[list[int], list[int], list[int], list[int], list[int]]


class _Group:
    """The sorted indexes of one (platform, community), or of one platform's users ("*").

    Counts in any window are differences of bisections (see :meth:`lifecycle`), so
    windows cost nothing on the hot path and can be added without new state.
    """

    __slots__ = ("active", "first_active", "first_idle", "active_followers", "cached", "moved")

    def __init__(self) -> None:
        # last-active of every member with one, paired with its first-seen (the
        # returning users ahead of the clock are read back from it)
        self.active = SortedInts(paired=True)
        self.first_active = SortedInts()  # first-seen of every member with a last-active
        self.first_idle = SortedInts()  # first-seen of every member without one
        self.active_followers = SortedInts()  # last-active of the members following
        # The last lifecycle counts: (windows, computed at, valid before, counts, and the
        # active counts, which the same bisections give); see :meth:`counts`.
        self.cached: _Cached | None = None
        # The member changes since ``cached`` was computed, which the next read counts
        # in (:func:`_moved`); past SHIFT_LIMIT the cache is dropped instead. None when
        # there are none: an empty list per group would cost 56 B each.
        self.moved: list[tuple[View | None, View | None]] | None = None

    def __bool__(self) -> bool:
        return bool(self.first_active or self.first_idle)

    def update(self, changes: list[tuple[View | None, View | None]]) -> None:
        """Replace each member's old view by its new one (None: not a member): removals
        one by one, insertions in one batch per index. One change per member; a new
        member (the common case while records are created) is inlined."""
        if self.cached is not None:
            moved = self.moved
            if moved is None and len(changes) <= SHIFT_LIMIT:
                self.moved = list(changes)
            elif moved is not None and len(moved) + len(changes) <= SHIFT_LIMIT:
                moved.extend(changes)
            else:
                self.cached, self.moved = None, None
        adds: _Adds = ([], [], [], [], [])
        active, active_first, first_active, idle, followers = adds
        for old, new in changes:
            if old is None:
                if new is None:
                    continue
                first, last, following = new
                if last is None:
                    idle.append(first)
                else:
                    active.append(last)
                    active_first.append(first)
                    first_active.append(first)
                    if following:
                        followers.append(last)
            else:
                self._patch(old, new, adds)
        if active:
            self.active.update(active, active_first)
        if first_active:
            self.first_active.update(first_active)
        if idle:
            self.first_idle.update(idle)
        if followers:
            self.active_followers.update(followers)

    def _patch(self, old: View, new: View | None, adds: _Adds) -> None:
        """One member's change in :meth:`update`: removals now, insertions into ``adds``."""
        first0, last0, following0 = old
        if new is None:
            first1 = last1 = None
            following1 = False
        else:
            first1, last1, following1 = new
        if last0 != last1 or (last0 is not None and first0 != first1):
            if last0 is not None:
                self.active.remove(last0, first0)
            if last1 is not None:
                adds[0].append(last1)
                adds[1].append(first1)  # type: ignore[arg-type]
        if first0 != first1 or (last0 is None) != (last1 is None):
            if first0 is not None:
                (self.first_idle if last0 is None else self.first_active).remove(first0)
            if first1 is not None:
                adds[3 if last1 is None else 2].append(first1)
        follower0 = last0 if following0 else None
        follower1 = last1 if following1 else None
        if follower0 != follower1:
            if follower0 is not None:
                self.active_followers.remove(follower0)
            if follower1 is not None:
                adds[4].append(follower1)

    def active_in(self, now_ms: int, bounds: list[tuple[str, int]]) -> dict[str, int]:
        """{label: members last active in (now - W, now]} for each (label, now - W)."""
        at_most = self.active.bisect_left
        upper = at_most(now_ms + 1)
        return {label: upper - at_most(low + 1) for label, low in bounds}

    def lifecycle(self, now_ms: int, bounds: list[Bounds], key: Any) -> dict[str, Lifecycle]:
        """Every lifecycle count for each window (``key`` names the windows), cached.

        The counts only change when the lists change or when the clock brings some
        element onto a window edge; :meth:`_lifecycle` says when that next happens, so
        a scrape or snapshot recomputes only the communities whose edge was crossed or
        that changed by more than a few members (a quiet community costs a comparison;
        a few changes move the cached counts, :func:`_moved`).
        """
        return self.counts(now_ms, bounds, key)[1]

    def counts(
        self, now_ms: int, bounds: list[Bounds], key: Any
    ) -> tuple[dict[str, int], dict[str, Lifecycle]]:
        """(active counts, lifecycle counts) of each window, cached as :meth:`lifecycle`
        says: the active counts fall out of the same bisections."""
        cached = self.cached
        if cached is not None and cached[0] == key and cached[1] <= now_ms < cached[2]:
            if self.moved:
                cached = self.cached = _moved(cached, self.moved, now_ms)
                self.moved = None
                if now_ms < cached[2]:
                    return cached[4], cached[3]
            else:
                return cached[4], cached[3]
        self.moved = None
        active, counts, valid_until = self._lifecycle(now_ms, bounds)
        self.cached = (key, now_ms, valid_until, counts, active)
        return active, counts

    def _lifecycle(
        self, now_ms: int, bounds: list[Bounds]
    ) -> tuple[dict[str, int], dict[str, Lifecycle], int]:
        """The active and lifecycle counts from bisections alone, and the first time
        after now at which any of them changes (an element reaching a window edge).

        Active in (L, t] is #{last <= t} - #{last <= L}: two of the bisections below.

        Returning users are active in (L, t] (L = t - W) and first seen <= L. Because
        first seen <= last active, "first seen > L" implies "last active > L", so
        #{first <= L < last} = #{last > L} - #{first > L, has a last}; the members
        last active after t (events ahead of the clock) are then taken out one by one.
        The followers' last-active times are a subset of the active ones, so their edges
        never come first and are not looked at.
        """
        active, active_at, n_active = self.active.view()
        first, first_at, n_first = self.first_active.view()
        # Empty lists (no follower, no idle member: common in small communities) cost
        # no bisection at all.
        followers = self.active_followers.view()[0] if self.active_followers else None
        idle = self.first_idle.view() if self.first_idle else None
        upper = bounds[0][1]
        soon = _NEVER  # the next time a count changes
        i = active(upper)
        ahead: list[int] = []
        if i < n_active:
            soon = active_at(i)
            ahead = self.active.values_from(i)
        first_upper = first(upper)
        if first_upper < n_first and first_at(first_upper) < soon:
            soon = first_at(first_upper)
        followers_upper = followers(upper) if followers else 0
        if idle:
            idle_upper = idle[0](upper)
            if idle_upper < idle[2] and idle[1](idle_upper) < soon:
                soon = idle[1](idle_upper)
            first_upper += idle_upper
        out = {}
        active_out = {}
        for label, low, before in bounds[1:]:
            width = now_ms - low
            first_low = first(low + 1)
            active_low, active_before = active(low + 1), active(before)
            edges = [
                active_at(active_low) + width if active_low < n_active else _NEVER,
                active_at(active_before) + 2 * width if active_before < n_active else _NEVER,
                first_at(first_low) + width if first_low < n_first else _NEVER,
                soon,
            ]
            returning = n_active - active_low - (n_first - first_low)
            if ahead:
                returning -= sum(1 for seen in ahead if seen <= low)
            new = first_upper - first_low
            if idle:
                idle_low = idle[0](low + 1)
                if idle_low < idle[2]:
                    edges.append(idle[1](idle_low) + width)
                new -= idle_low
            soon = min(edges)
            active_out[label] = i - active_low
            out[label] = _new_tuple(
                Lifecycle,
                (
                    followers_upper - followers(low + 1) if followers else 0,
                    new,
                    returning,
                    active_low - active_before,
                ),
            )
        return active_out, out, soon


_NEVER = NEVER

#: (windows, computed at, valid before, lifecycle counts, active counts): see
#: :meth:`_Group.counts`.
_Cached = tuple[Any, int, int, dict[str, "Lifecycle"], dict[str, int]]

#: Up to this many member changes between two reads, a read moves a group's cached
#: counts by :func:`streams.count_deltas.count_deltas` (a few µs a change); past it
#: the cache is dropped and the read counts the group again (10–40 µs).
SHIFT_LIMIT = 8


def _moved(cached: _Cached, moved: list[tuple[View | None, View | None]], now_ms: int) -> _Cached:
    """The cached counts with the ``moved`` members' changes counted in at ``now_ms``.

    The cache's own members reach no edge before its end, so their share of the
    counts is the same at ``now_ms`` as when they were counted; the changes are
    counted at ``now_ms`` itself (events usually arrive ahead of the last count's
    clock), and the result holds until the cache's end or the first edge an arriving
    member reaches, whichever comes first. New dicts: readers may hold the old ones.
    """
    key, _at, until, counts, active = cached
    widths, places = _window_order(key)
    deltas, soon = count_deltas(now_ms, widths, moved)
    if deltas is None:  # the same counts: the same dicts, which readers compare cheaply
        return (key, now_ms, min(until, soon), counts, active)
    active_d, followers_d, new_d, returning_d, dormant_d = deltas
    new_counts: dict[str, Lifecycle] = {}
    new_active: dict[str, int] = {}
    for label, i in places:
        c = counts[label]
        followers, new, returning, dormant = followers_d[i], new_d[i], returning_d[i], dormant_d[i]
        if followers or new or returning or dormant:
            c = _new_tuple(
                Lifecycle, (c[0] + followers, c[1] + new, c[2] + returning, c[3] + dormant)
            )
        new_counts[label] = c  # an unchanged window's the same tuple: readers skip it
        new_active[label] = active[label] + active_d[i]
    return (key, now_ms, min(until, soon), new_counts, new_active)


_ORDERS: dict[Any, tuple[list[int], list[tuple[str, int]]]] = {}


def _window_order(key: Any) -> tuple[list[int], list[tuple[str, int]]]:
    """A windows key's widths ascending (as :func:`count_deltas` takes them), and each
    label in the key's own order with its place among them (dicts keep the order)."""
    got = _ORDERS.get(key)
    if got is None:
        ranked = sorted(range(len(key)), key=lambda i: key[i][1])
        place = {i: r for r, i in enumerate(ranked)}
        widths = [key[i][1] for i in ranked]
        got = _ORDERS[key] = (widths, [(label, place[i]) for i, (label, _w) in enumerate(key)])
    return got


#: (label, low, bisection key of the window before: low - width + 1); the first entry
#: is ("", now + 1, 0): what :meth:`_Group.lifecycle` bisects with.
Bounds = tuple[str, int, int]


def lifecycle_bounds(now_ms: int, windows: dict[str, int]) -> list[Bounds]:
    """The bisection keys of every window, computed once per count rather than per group."""
    out: list[Bounds] = [("", now_ms + 1, 0)]
    for label, width in windows.items():
        low = now_ms - width
        out.append((label, low, low - width + 1))
    return out


def _update_groups(groups: dict[Any, _Group], changes: dict[Any, list[Any]]) -> None:
    """Apply each group's changes (:meth:`_Group.update`); drop groups left empty."""
    for name, group_changes in changes.items():
        group = groups.get(name)
        if group is None:
            group = groups[name] = _Group()
        group.update(group_changes)
        if not group:
            del groups[name]


def _widen(view: View | None, record: View) -> View:
    """A user's view in "*" with one more record: min first-seen, max last-active."""
    if view is None:
        return record
    first, last, following = view
    if record[0] < first:
        first = record[0]
    if record[1] is not None and (last is None or record[1] > last):
        last = record[1]
    return (first, last, following)


# A record is kept as one int rather than a :class:`UserRecord`: about 50 bytes
# instead of ~180 (an object, three boxed times, a bool), and an int is not tracked
# by the garbage collector, whose full passes over a million record objects cost
# as much as the index upkeep itself. Each time is stored as ``ts + _OFF`` in a
# ``_W``-bit field, 0 standing for None: first seen | last active << _W | follow ts
# << 2 _W | following << 3 _W. Validated events are 1970-9999; the fields hold any
# time within about ±570,000 years of 1970.
_W = 56
_M = (1 << _W) - 1
_OFF = 1 << (_W - 2)
_W2 = 2 * _W
_W3 = 3 * _W
_LOW2 = (1 << _W2) - 1


def _pack(first: int, last: int | None, follow_ts: int | None, following: object) -> int:
    """A record's wire fields (:meth:`UserRecord.to_wire`) as one packed int."""
    return (
        (first + _OFF)
        | (0 if last is None else last + _OFF) << _W
        | (0 if follow_ts is None else follow_ts + _OFF) << _W2
        | bool(following) << _W3
    )


def _wire(v: int) -> list[int | None]:
    """A packed record as :meth:`UserRecord.to_wire` gives it."""
    last, follow_ts = v >> _W & _M, v >> _W2 & _M
    return [
        (v & _M) - _OFF,
        last - _OFF if last else None,
        follow_ts - _OFF if follow_ts else None,
        v >> _W3,
    ]


def _unpack(v: int) -> UserRecord:
    return UserRecord.from_wire(_wire(v))


def _indexed(v: int) -> View:
    """What the indexes hold for a packed record: (first seen, last active, following)."""
    last = v >> _W & _M
    return ((v & _M) - _OFF, last - _OFF if last else None, bool(v >> _W3))


def _pack_view(view: View) -> int:
    """A view as one int that :func:`_indexed` reads back (a user's view in "*")."""
    first, last, following = view
    return (first + _OFF) | (0 if last is None else last + _OFF) << _W | following << _W3


def _newest(v: int) -> int:
    """:meth:`UserRecord.newest_ms` of a packed record (an absent time is 0, below all)."""
    return max(v & _M, v >> _W & _M, v >> _W2 & _M) - _OFF


def _fold_follow(v: int, t: int, is_unfollow: bool) -> tuple[int, int]:
    """:func:`fold`'s follow rule on a packed record (``t``: the offset time): the
    greatest (ts, is_unfollow) wins."""
    follow_ts = v >> _W2 & _M
    following = v >> _W3
    if t > follow_ts or (t == follow_ts and is_unfollow and following):
        changed = FOLLOW_TS if follow_ts else FOLLOW_TS | FIRST_FOLLOW
        if following == is_unfollow:
            changed |= FOLLOWING
        return (v & _LOW2) | t << _W2 | (not is_unfollow) << _W3, changed
    return v, 0


class Records(Mapping[str, UserRecord]):
    """A partition's records as :class:`UserRecord` values, read-only: each read
    unpacks a fresh copy (changing it changes nothing; :meth:`PartitionState.load`
    replaces a record)."""

    __slots__ = ("_by_group",)

    def __init__(self, by_group: dict[str, dict[str, int]]) -> None:
        self._by_group = by_group

    def __getitem__(self, key: str) -> UserRecord:
        v = _get(self._by_group, key)
        if v is None:
            raise KeyError(key)
        return _unpack(v)

    def get(self, key: str, default: Any = None) -> Any:
        v = _get(self._by_group, key)
        return default if v is None else _unpack(v)

    def wire(self, key: str) -> list[int | None] | None:
        """``self[key].to_wire()`` straight from the packed record (None: no record),
        without the UserRecord in between: the changelog writer's read, once per
        changed key and batch."""
        v = _get(self._by_group, key)
        return None if v is None else _wire(v)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and _get(self._by_group, key) is not None

    def __iter__(self) -> Iterator[str]:
        return (key for key, _v in _items(self._by_group))

    def __len__(self) -> int:
        return sum(len(records) for records in self._by_group.values())


def _get(by_group: dict[str, dict[str, int]], key: str) -> int | None:
    """The packed record of a full key, None if there is none."""
    group, _, user_id = key.rpartition(SEP)
    records = by_group.get(group)
    return None if records is None else records.get(user_id)


def _items(by_group: dict[str, dict[str, int]]) -> Iterator[tuple[str, int]]:
    """(full key, packed record) of every record."""
    for group, records in by_group.items():
        for user_id, v in records.items():
            yield f"{group}{SEP}{user_id}", v


class PartitionState:
    """Records of one partition of the by-user topic, plus the derived in-memory indexes.

    Counts are per (platform, community), and community "*" (``ALL_COMMUNITIES``)
    holds per-platform all-communities totals over *users*: a user's first seen in
    "*" is the min over their communities of that platform, their last active the
    max, and they follow "*" if they follow at least one of its communities.

    Which keys the counts report (so that the oracle and dashboards agree):

    * ``active_counts``: every (platform, community) with at least one held record
      whose last_active is set, and (platform, "*") for every platform with one.
    * ``lifecycle_counts``: every (platform, community) with at least one held
      record, and (platform, "*") for every platform with one.
    * ``follower_counts``: every (platform, community) with at least one held record
      whose follow_ts is set (even if nobody follows any more), and (platform, "*")
      for every platform with one.

    A (platform, community) therefore disappears when its last such record is
    deleted (expiry, revocation); publishers should treat a missing key as 0.

    The indexes are maintained lazily: ``apply``, ``load`` and ``delete`` only note,
    per changed key, the view the indexes still hold, and the next count (or
    :meth:`flush`) patches the sorted lists once per key. That keeps sorted-list
    work off the hot path, coalesces the many events of a busy user between two
    scrapes into one update, and lets a rebuild after assignment insert each
    community's times in one batch. Follower counters are plain integers and stay
    eager.
    """

    __slots__ = (
        "active_types",
        "records",
        "_by_group",
        "_pending",
        "_groups",
        "_users",
        "_platforms",
        "_follow_refs",
        "_followers",
        "_user_follows",
        "_platform_followers",
        "_platform_refs",
        "_follow_changed",
        "_max_ts",
        "_changed",
    )

    def __init__(self, active_types: frozenset[str]) -> None:
        self.active_types = frozenset(active_types)
        # "platform SEP community" -> {user id: packed record (see _pack)}: the key's
        # long prefix is stored once per community and each user id once per
        # partition (interned), not in a full key per record. ``records`` reads them
        # by full key, as UserRecords.
        self._by_group: dict[str, dict[str, int]] = {}
        self.records = Records(self._by_group)
        # "platform SEP community" -> {user id: the packed record whose view the
        # indexes hold (None: not indexed)}, for the records whose view may have
        # changed since the last flush: grouped as the records are, so a flush
        # splits no key and looks each group up once.
        self._pending: dict[str, dict[str, int | None]] = {}
        # (platform, community) -> the indexes of its records.
        self._groups: dict[PC, _Group] = {}
        # platform -> {user id: the view indexed in "*", packed like a record without
        # a follow time (see _pack_view)}: keyed by the interned id the records
        # share, so a user costs no key of their own.
        self._users: dict[str, dict[str, int]] = {}
        # platform -> the indexes of its users ("*").
        self._platforms: dict[str, _Group] = {}
        # (platform, community) -> records with follow_ts set / records following.
        self._follow_refs: dict[PC, int] = {}
        self._followers: dict[PC, int] = {}
        # (platform, user) -> communities followed (only while > 0).
        self._user_follows: dict[PC, int] = {}
        # platform -> users following at least one of its communities.
        self._platform_followers: dict[str, int] = {}
        # platform -> its communities with a _follow_refs entry ("*" is in
        # follower_counts() while > 0).
        self._platform_refs: dict[str, int] = {}
        # (platform, community) and (platform, "*") whose follower_counts() entry may
        # have changed (or appeared, or gone) since the last take_follow_changed().
        self._follow_changed: dict[PC, None] = {}
        self._max_ts = -1
        # (platform, community) and (platform, "*") whose indexes changed since the last
        # take_changed(), in the order they changed (a dict as an ordered set).
        self._changed: dict[PC, None] = {}

    def __len__(self) -> int:
        return len(self.records)

    def watermark_ms(self) -> int | None:
        """Newest event time applied, or record time loaded; None before the first."""
        return None if self._max_ts < 0 else self._max_ts

    # -- hot path ---------------------------------------------------------------------

    def apply(
        self, platform: str, community: str, user_id: str, ts_ms: int, event_type: str
    ) -> str | None:
        """Merge one event into its packed record, in place; return the key if the
        record changed (so the caller writes it to the changelog), else None.

        The rules of :func:`fold` on the packed fields (an absent time is 0, below
        every stored time, so "none yet or older" is one comparison); the two are
        checked against each other by the unit tests.
        """
        if ts_ms > self._max_ts:
            self._max_ts = ts_ms
        t = ts_ms + _OFF
        if not 0 < t <= _M:
            raise ValueError(f"timestamp out of range: {ts_ms}")
        group = f"{platform}{SEP}{community}"
        records = self._by_group.get(group)
        if records is None:
            records = self._by_group[group] = {}
        old = records.get(user_id)
        if old is None:
            v, changed = t, FIRST_SEEN
        else:
            v, changed = old, 0
            if t < v & _M:
                v += t - (v & _M)
                changed = FIRST_SEEN
        if event_type in self.active_types:
            last = v >> _W & _M
            if t > last:
                v += (t - last) << _W
                changed |= LAST_ACTIVE
        if event_type == _FOLLOW or event_type == _UNFOLLOW:
            v, follow_changed = _fold_follow(v, t, event_type == _UNFOLLOW)
            changed |= follow_changed
        if not changed:
            return None
        if old is None:
            records[sys.intern(user_id)] = v  # one copy of the id for all its records
        else:
            records[user_id] = v
        key = f"{group}{SEP}{user_id}"
        if old is None or changed & (FIRST_SEEN | LAST_ACTIVE | FOLLOWING):
            pending = self._pending.get(group)
            if pending is None:
                self._pending[group] = {user_id: old}
            elif user_id not in pending:
                pending[user_id] = old
        if changed & (FOLLOWING | FIRST_FOLLOW):
            pc = (platform, community)
            if changed & FIRST_FOLLOW:
                self._add_follow_ref(pc)
            if changed & FOLLOWING:
                self._count_follow(pc, (platform, user_id), 1 if v >> _W3 else -1)
        return key

    def _add_follow_ref(self, pc: PC) -> None:
        refs = self._follow_refs.get(pc, 0)
        self._follow_refs[pc] = refs + 1
        if not refs:  # the key appears in follower_counts(), at 0
            platform = pc[0]
            self._platform_refs[platform] = self._platform_refs.get(platform, 0) + 1
            self._follow_changed[pc] = None
            self._follow_changed[(platform, ALL_COMMUNITIES)] = None

    def _drop_follow_ref(self, pc: PC) -> None:
        refs = self._follow_refs[pc] - 1
        if refs:
            self._follow_refs[pc] = refs
            return
        del self._follow_refs[pc]
        self._followers.pop(pc, None)
        platform = pc[0]
        left = self._platform_refs[platform] - 1
        if left:
            self._platform_refs[platform] = left
        else:
            del self._platform_refs[platform]
        self._follow_changed[pc] = None
        self._follow_changed[(platform, ALL_COMMUNITIES)] = None

    def _count_follow(self, pc: PC, pu: PC, delta: int) -> None:
        self._followers[pc] = self._followers.get(pc, 0) + delta
        self._follow_changed[pc] = None
        before = self._user_follows.get(pu, 0)
        after = before + delta
        if after:
            self._user_follows[pu] = after
        else:
            del self._user_follows[pu]
        if (before == 0) != (after == 0):
            platform = pc[0]
            self._platform_followers[platform] = self._platform_followers.get(platform, 0) + (
                1 if after else -1
            )
            self._follow_changed[(platform, ALL_COMMUNITIES)] = None

    # -- the lazy indexes ---------------------------------------------------------------

    def flush(self) -> None:
        """Bring the indexes up to date with the records.

        Called by every count; call it directly to move the work elsewhere (e.g. right
        after rebuilding a partition). Cost: a few sorted-list removals per changed
        key, batched insertions per index, and the same per changed user for "*".
        """
        pending = self._pending
        if not pending:
            return
        self._pending = {}
        # (platform, user) -> the widened view of their changed records (the view
        # indexed in "*" is widened by it once per user, in _flush_users)
        touched: dict[PC, View] = {}
        recompute: set[PC] = set()
        self._flush_groups(pending, touched, recompute)
        self._flush_users(touched, self._user_views(recompute) if recompute else {})

    def flush_steps(self, budget: int) -> Iterator[None]:
        """:meth:`flush` in steps, for a rebuild: the pending groups, whole, about
        ``budget`` records per step, then "*" once for all (a step yields None). The
        partition must not be changed or counted until the steps are exhausted.

        Flushing every few thousand loaded records instead re-sorted the growing lists
        and patched the users of "*" again at each flush: the rebuild of 1M records
        took 20 s instead of 13 s (docs/benchmarks.md, session 7)."""
        pending, self._pending = self._pending, {}
        touched: dict[PC, View] = {}
        recompute: set[PC] = set()
        while pending:
            taken: dict[str, dict[str, int | None]] = {}
            size = 0
            while pending and size < budget:
                group = next(iter(pending))
                users = taken[group] = pending.pop(group)
                size += len(users)
            self._flush_groups(taken, touched, recompute)
            yield None
        self._flush_users(touched, self._user_views(recompute) if recompute else {})

    def _flush_groups(
        self,
        pending: dict[str, dict[str, int | None]],
        touched: dict[PC, View],
        recompute: set[PC],
    ) -> None:
        """Index the changes of these pending groups (taken out of ``_pending``); note
        in ``touched`` and ``recompute`` what "*" needs (:meth:`_flush_users`)."""
        by_group = self._by_group
        changes: dict[PC, list[tuple[View | None, View | None]]] = {}
        for group, users in pending.items():
            records = by_group.get(group) or {}
            platform, _, community = group.partition(SEP)
            group_changes: list[tuple[View | None, View | None]] = []
            for user_id, was in users.items():
                v = records.get(user_id)
                pu = (platform, user_id)
                old = None if was is None else _indexed(was)
                if v is None:
                    recompute.add(pu)
                    if old is None:
                        continue
                    new = None
                else:
                    last_at = v >> _W & _M
                    first, last = (v & _M) - _OFF, last_at - _OFF if last_at else None
                    new = (first, last, v >> _W3 == 1)
                    if old is not None and (
                        first > old[0] or (old[1] is not None and (last is None or last < old[1]))
                    ):
                        recompute.add(pu)  # a record replaced by load(): not a monotone change
                    elif pu not in recompute:
                        view = touched.get(pu)
                        touched[pu] = new if view is None else _widen(view, new)
                if new != old:
                    group_changes.append((old, new))
            if group_changes:
                changes[(platform, community)] = group_changes
        _update_groups(self._groups, changes)
        self._changed.update(dict.fromkeys(changes))

    def _user_views(self, wanted: set[PC]) -> dict[PC, View | None]:
        """The "*" views of these users from their records (one pass over the records):
        after a delete, a user's min/max can move back, which only a rescan shows."""
        views: dict[PC, View | None] = dict.fromkeys(wanted)
        for key, v in _items(self._by_group):
            platform, _community, user_id = key.split(SEP)
            pu = (platform, user_id)
            if pu in views:
                first, last, _following = _indexed(v)
                views[pu] = _widen(views[pu], (first, last, False))
        return views

    def _flush_users(self, widened: dict[PC, View], recomputed: dict[PC, View | None]) -> None:
        """The "*" part of :meth:`flush`: each touched user's indexed view, widened by
        their changed records or replaced by a recomputed one, and patched in."""
        follows, by_platform = self._user_follows, self._users
        changes: dict[str, list[tuple[View | None, View | None]]] = {}
        for pu in recomputed:
            widened.pop(pu, None)
        for pu, view in (*widened.items(), *recomputed.items()):
            platform, user_id = pu
            users = by_platform.get(platform)
            stored = None if users is None else users.get(user_id)
            old = None if stored is None else _indexed(stored)
            if view is None:
                new = None
                if users is not None and stored is not None:
                    del users[user_id]
                    if not users:
                        del by_platform[platform]
            else:
                if old is not None and pu not in recomputed:
                    view = _widen(view, old)
                new = (view[0], view[1], pu in follows)
                if users is None:
                    users = by_platform[platform] = {}
                if stored is None:
                    user_id = sys.intern(user_id)  # the records' copy of the id
                users[user_id] = _pack_view(new)
            if new != old:
                platform_changes = changes.get(pu[0])
                if platform_changes is None:
                    changes[pu[0]] = [(old, new)]
                else:
                    platform_changes.append((old, new))
        _update_groups(self._platforms, changes)
        self._changed.update(dict.fromkeys((platform, ALL_COMMUNITIES) for platform in changes))

    # -- rebuild and expiry -----------------------------------------------------------

    def load(self, key: str, record: UserRecord) -> None:
        """Index a record read back from the table (after assignment); takes ownership.

        A key already held is replaced, so loading is safe to repeat.
        """
        self.load_wire([(key, record.to_wire())])

    def load_wire(self, items: Iterable[tuple[str, list[int | None] | None]]) -> int:
        """:meth:`load` of many (key, wire value) items, as a rebuild reads them from
        the store (a None value, a tombstone, loads nothing); how many were loaded.

        The same rules as ``load`` without a :class:`UserRecord` per item, and a key
        not held yet (a rebuild's only case) costs no delete."""
        by_group, pending, intern = self._by_group, self._pending, sys.intern
        max_ts, loaded = self._max_ts, 0
        for key, value in items:
            if value is None:
                continue
            first, last, follow_ts, following = value
            for ts in value[:3]:
                if ts is not None and not 0 < ts + _OFF <= _M:
                    raise ValueError(f"timestamp out of range in {key!r}: {ts}")
            platform, community, user_id = key.split(SEP)
            group = f"{platform}{SEP}{community}"
            records = by_group.get(group)
            if records is not None and user_id in records:
                self.delete(key)
                records = by_group.get(group)
            if records is None:
                records = by_group[group] = {}
            assert first is not None
            records[intern(user_id)] = _pack(first, last, follow_ts, following)
            for ts in (first, last, follow_ts):
                if ts is not None and ts > max_ts:
                    max_ts = ts
            users = pending.get(group)
            if users is None:
                pending[group] = {user_id: None}
            elif user_id not in users:
                users[user_id] = None
            if follow_ts is not None:
                pc = (platform, community)
                self._add_follow_ref(pc)
                if following:
                    self._count_follow(pc, (platform, user_id), 1)
            loaded += 1
        self._max_ts = max_ts
        return loaded

    def delete(self, key: str) -> None:
        """Forget a record and its contribution to every count; a missing key is a no-op."""
        group, _, user_id = key.rpartition(SEP)
        records = self._by_group.get(group)
        v = None if records is None else records.pop(user_id, None)
        if v is None:
            return
        if not records:
            del self._by_group[group]
        self._pending.setdefault(group, {}).setdefault(user_id, v)
        if v >> _W2 & _M:  # a follow time
            platform, community, user_id = split_key(key)
            pc = (platform, community)
            if v >> _W3:  # following
                self._count_follow(pc, (platform, user_id), -1)
            self._drop_follow_ref(pc)

    def expired_keys(self, now_ms: int, horizon_ms: int) -> list[str]:
        """Keys that can be dropped: every record of a (platform, user) whose records
        all are not following and have their newest time (last_active, follow_ts,
        first_seen) <= now - horizon.

        With horizon >= twice the longest window, dropping them changes no count at
        ``now``: dormant users reach back to now - 2W. A user is dropped whole, because
        their first seen in "*" is the min over their communities: dropping one old
        record of a user still seen elsewhere would make them new again. A follower is
        never dropped (the follower gauge is not windowed). The horizon must also
        exceed the lateness tolerated: an event older than a dropped record's unfollow
        would otherwise be applied as new.
        """
        steps = self.expired_key_steps(now_ms, horizon_ms, budget=0)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return list(done.value)

    def expired_key_steps(
        self, now_ms: int, horizon_ms: int, budget: int
    ) -> Generator[None, None, list[str]]:
        """:meth:`expired_keys` in steps of about ``budget`` records (0: one step); the
        generator's return value is the keys. The records must not change until it is
        exhausted (the worker holds the batch lock). In one piece the expiry of 555,000
        records held the event loop for 0.6–1 s every minute — ingest, transactions,
        scrapes and heartbeats waited; 140,000 records took 150 ms on a quiet core,
        80 ms since keys are built only for what expires."""
        cutoff = now_ms - horizon_ms
        # (platform, user) -> the groups of their old records; a key is built only for
        # what expires (building and splitting one per record was most of the scan)
        groups: dict[PC, list[str]] = {}
        kept: set[PC] = set()
        seen = 0
        for group, records in self._by_group.items():
            platform = group.partition(SEP)[0]
            for user_id, v in records.items():
                seen += 1
                if budget and seen % budget == 0:
                    yield None
                pu = (platform, user_id)
                if pu in kept:
                    continue
                if v >> _W3 or _newest(v) > cutoff:
                    kept.add(pu)
                    groups.pop(pu, None)
                else:
                    groups.setdefault(pu, []).append(group)
        return [f"{g}{SEP}{pu[1]}" for pu, user_groups in groups.items() for g in user_groups]

    # -- counts -----------------------------------------------------------------------

    def active_counts(self, now_ms: int, windows: dict[str, int]) -> dict[PC, dict[str, int]]:
        """{(platform, community): {window_label: count}}: users whose last_active is in
        (now - W, now], integer ms; see the class docstring for which keys appear."""
        self.flush()
        bounds = [(label, now_ms - width) for label, width in windows.items()]
        out: dict[PC, dict[str, int]] = {}
        for pc, group in self._groups.items():
            if group.active:
                out[pc] = group.active_in(now_ms, bounds)
        for platform, group in self._platforms.items():
            if group.active:
                out[(platform, ALL_COMMUNITIES)] = group.active_in(now_ms, bounds)
        return out

    def lifecycle_counts(
        self, now_ms: int, windows: dict[str, int]
    ) -> dict[PC, dict[str, Lifecycle]]:
        """{(platform, community): {window_label: Lifecycle}} at now (see
        :class:`Lifecycle` and :meth:`_Group.lifecycle`), incl. (platform, "*")."""
        self.flush()
        bounds = lifecycle_bounds(now_ms, windows)
        key = tuple(windows.items())
        out: dict[PC, dict[str, Lifecycle]] = {}
        # copies: callers may add other partitions' counts into what they get
        for pc, group in self._groups.items():
            out[pc] = dict(group.lifecycle(now_ms, bounds, key))
        for platform, group in self._platforms.items():
            out[(platform, ALL_COMMUNITIES)] = dict(group.lifecycle(now_ms, bounds, key))
        return out

    def take_changed(self) -> dict[PC, None]:
        """The (platform, community) keys, incl. (platform, "*"), whose active or
        lifecycle counts may differ from the last call's for another reason than the
        clock (flushes first). What lets a reader keep counts up to date by recomputing
        only these and the ones whose :meth:`group_counts` validity ran out."""
        self.flush()
        changed, self._changed = self._changed, {}
        return changed

    def group_counts(
        self, pc: PC, now_ms: int, windows: dict[str, int], bounds: list[Bounds]
    ) -> tuple[dict[str, int] | None, dict[str, Lifecycle] | None, int]:
        """(active counts, lifecycle counts, valid until) of one key of
        :meth:`active_counts`/:meth:`lifecycle_counts` (None where those leave it out):
        the same numbers as theirs, and the first clock time at which any of them can
        change without a new :meth:`take_changed` entry. ``bounds`` is
        :func:`lifecycle_bounds` of ``now_ms`` and ``windows``; call after
        :meth:`take_changed` (no flush here). The lifecycle dict is the group's cached
        one, shared to save memory: read it, never change it."""
        platform, community = pc
        group = self._platforms.get(platform) if community == ALL_COMMUNITIES else None
        if group is None and community != ALL_COMMUNITIES:
            group = self._groups.get(pc)
        if group is None:
            return None, None, _NEVER
        active, lifecycle = group.counts(now_ms, bounds, tuple(windows.items()))
        cached = group.cached
        valid_until = cached[2] if cached is not None else now_ms + 1
        return (active if group.active else None), lifecycle, valid_until

    def count_keys(self) -> list[PC]:
        """Every (platform, community) with indexes, and (platform, "*"): the keys a
        reader recomputes in full (see :meth:`take_changed` for the rest of the time)."""
        return [*self._groups, *((platform, ALL_COMMUNITIES) for platform in self._platforms)]

    def take_follow_changed(self) -> dict[PC, None]:
        """The keys whose :meth:`follower_counts` entry may differ from the last call's
        (changed, appeared or gone): what lets a reader keep follower counts without
        diffing every key at each update."""
        changed, self._follow_changed = self._follow_changed, {}
        return changed

    def follower_count(self, pc: PC) -> int | None:
        """``follower_counts().get(pc)`` without building the dict."""
        platform, community = pc
        if community == ALL_COMMUNITIES:
            if platform not in self._platform_refs:
                return None
            return self._platform_followers.get(platform, 0)
        if pc not in self._follow_refs:
            return None
        return self._followers.get(pc, 0)

    def follower_counts(self) -> dict[PC, int]:
        """{(platform, community): followers}, including (platform, "*"); communities that
        have had a follow/unfollow appear even at 0."""
        out: dict[PC, int] = {}
        followers = self._followers
        for pc in self._follow_refs:
            out[pc] = followers.get(pc, 0)
            platform = pc[0]
            star = (platform, ALL_COMMUNITIES)
            if star not in out:
                out[star] = self._platform_followers.get(platform, 0)
        return out


class WorkerState:
    """The partitions this worker holds now. Sums over partitions are exact because
    users are partitioned: no user is counted in two partitions."""

    __slots__ = ("active_types", "partitions")

    def __init__(self, active_types: frozenset[str]) -> None:
        self.active_types = frozenset(active_types)
        self.partitions: dict[int, PartitionState] = {}

    def assign(self, partition: int) -> PartitionState:
        """A fresh, empty state for the partition (replacing any held one); the caller
        then loads the partition's records from the table."""
        state = PartitionState(self.active_types)
        self.partitions[partition] = state
        return state

    def revoke(self, partition: int) -> None:
        self.partitions.pop(partition, None)

    def active_counts(self, now_ms: int, windows: dict[str, int]) -> dict[PC, dict[str, int]]:
        out: dict[PC, dict[str, int]] = {}
        for state in self.partitions.values():
            for pc, counts in state.active_counts(now_ms, windows).items():
                total = out.get(pc)
                if total is None:
                    out[pc] = counts
                else:
                    for label, count in counts.items():
                        total[label] += count
        return out

    def lifecycle_counts(
        self, now_ms: int, windows: dict[str, int]
    ) -> dict[PC, dict[str, Lifecycle]]:
        out: dict[PC, dict[str, Lifecycle]] = {}
        for state in self.partitions.values():
            for pc, counts in state.lifecycle_counts(now_ms, windows).items():
                total = out.get(pc)
                if total is None:
                    out[pc] = counts
                else:
                    for label, count in counts.items():
                        total[label] = total[label].plus(count)
        return out

    def follower_counts(self) -> dict[PC, int]:
        out: dict[PC, int] = {}
        for state in self.partitions.values():
            for pc, count in state.follower_counts().items():
                out[pc] = out.get(pc, 0) + count
        return out

    def watermark_ms(self) -> int | None:
        """Newest event time applied or loaded across the held partitions (the event clock)."""
        marks = [m for s in self.partitions.values() if (m := s.watermark_ms()) is not None]
        return max(marks) if marks else None

    def __len__(self) -> int:
        return sum(len(s) for s in self.partitions.values())
