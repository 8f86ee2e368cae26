"""Pure state of the core pipeline: per-user records and the counts derived from them.

Nothing here does I/O, so the rules (exact windows, last-writer-wins follows,
idempotence, order independence) are tested against a brute-force oracle without
Kafka. The Faust layer owns the changelog-backed table; this module owns the
in-memory indexes that make a scrape cheap, rebuilt from the table on assignment.

Why the indexes look the way they do:

* Active counts for any window are two bisections in a sorted list of
  last-active times per (platform, community), so windows cost nothing on the hot
  path and can be added without new state.
* The all-communities total ("*") counts *users*, not (user, community) pairs, so
  it needs each user's newest last-active time over their communities: a small
  dict per (platform, user) plus a sorted list of those maxima per platform.
  Last-active only grows on apply, so the maximum is updated in O(1); it is only
  recomputed when a record is deleted.
* Follower counts are plain counters: follow state changes are rare and the
  counts are not windowed.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from sortedcontainers import SortedList

from streams.events import ALL_COMMUNITIES

SEP = "\x1f"  # validation forbids control characters in fields, so joins are unambiguous

_FOLLOW = "follow"
_UNFOLLOW = "unfollow"

PC = tuple[str, str]  # (platform, community) or (platform, user_id)


def make_key(platform: str, community: str, user_id: str) -> str:
    return f"{platform}{SEP}{community}{SEP}{user_id}"


def split_key(key: str) -> tuple[str, str, str]:
    platform, community, user_id = key.split(SEP)
    return platform, community, user_id


@dataclass(slots=True)
class UserRecord:
    """Per (platform, community, user): the value stored in the changelog-backed table.

    Records held by a :class:`PartitionState` are owned by it and updated in place
    by :meth:`PartitionState.apply` (allocation would dominate the hot path);
    serialise with :meth:`to_wire` when writing, and copy if a snapshot is needed.
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


def merge(
    record: UserRecord | None, ts_ms: int, event_type: str, active_types: frozenset[str]
) -> UserRecord:
    """Fold one event into a record; the reference definition of the rules.

    Returns the *same object* when the event changes nothing (a duplicate, or a late
    event that loses everywhere), so ``merge(r, ...) is r`` tells the caller there is
    nothing to write; otherwise a new record, and ``record`` is left untouched.

    Every field is a max or a min over a totally ordered key (the follow winner is
    the greatest ``(ts, is_unfollow)``), which is what makes the fold idempotent and
    order independent. An unfollow wins a tie so that "follow then unfollow in the
    same millisecond" never leaves a phantom follower, whatever the arrival order.
    """
    if record is None:
        first, last, follow_ts, following = ts_ms, None, None, False
    else:
        first = record.first_seen_ms
        last = record.last_active_ms
        follow_ts = record.follow_ts_ms
        following = record.following
        if ts_ms < first:
            first = ts_ms
    if event_type in active_types and (last is None or ts_ms > last):
        last = ts_ms
    if event_type == _FOLLOW or event_type == _UNFOLLOW:
        is_unfollow = event_type == _UNFOLLOW
        if (
            follow_ts is None
            or ts_ms > follow_ts
            or (ts_ms == follow_ts and is_unfollow and following)
        ):
            follow_ts = ts_ms
            following = not is_unfollow
    if (
        record is not None
        and first == record.first_seen_ms
        and last == record.last_active_ms
        and follow_ts == record.follow_ts_ms
        and following == record.following
    ):
        return record
    return UserRecord(first, last, follow_ts, following)


class PartitionState:
    """Records of one partition of the by-user topic, plus the derived in-memory indexes.

    Counts are per (platform, community), and community "*" (``ALL_COMMUNITIES``)
    holds per-platform all-communities totals: a user is active in "*" within W if
    their max last_active over their communities is in the window; a user follows
    "*" if they follow at least one community of that platform.

    Which keys the counts report (so that the oracle and dashboards agree):

    * ``active_counts``: every (platform, community) with at least one held record
      whose last_active is set, and (platform, "*") for every platform with one.
    * ``follower_counts``: every (platform, community) with at least one held record
      whose follow_ts is set (even if nobody follows any more), and (platform, "*")
      for every platform with one.

    A (platform, community) therefore disappears when its last such record is
    deleted (expiry, revocation); publishers should treat a missing key as 0.

    The active-time indexes are maintained lazily: ``apply``, ``load`` and
    ``delete`` only note, per changed key, the value the indexes still hold, and
    the next count (or :meth:`flush`) patches the sorted lists once per key. That
    keeps sorted-list work off the hot path, coalesces the many events of a busy
    user between two scrapes into one update, and lets a rebuild after assignment
    insert each community's times in one batch. Follower counters are plain
    integers and stay eager.
    """

    __slots__ = (
        "active_types",
        "records",
        "_pending",
        "_comm_active",
        "_user_active",
        "_platform_active",
        "_follow_refs",
        "_followers",
        "_user_follows",
        "_platform_followers",
        "_max_ts",
    )

    def __init__(self, active_types: frozenset[str]) -> None:
        self.active_types = frozenset(active_types)
        self.records: dict[str, UserRecord] = {}
        # key -> the last_active the indexes hold for it (None: not indexed), for the
        # keys whose last_active changed since the last flush.
        self._pending: dict[str, int | None] = {}
        # (platform, community) -> last_active of each of its records that has one.
        self._comm_active: dict[PC, SortedList] = {}
        # (platform, user) -> [max last_active, {community: last_active}], as indexed.
        self._user_active: dict[PC, list] = {}
        # platform -> the max last_active of each of its users.
        self._platform_active: dict[str, SortedList] = {}
        # (platform, community) -> records with follow_ts set / records following.
        self._follow_refs: dict[PC, int] = {}
        self._followers: dict[PC, int] = {}
        # (platform, user) -> communities followed (only while > 0).
        self._user_follows: dict[PC, int] = {}
        # platform -> users following at least one of its communities.
        self._platform_followers: dict[str, int] = {}
        self._max_ts = -1

    def __len__(self) -> int:
        return len(self.records)

    def watermark_ms(self) -> int | None:
        """Newest event time applied, or record time loaded; None before the first."""
        return None if self._max_ts < 0 else self._max_ts

    # -- hot path ---------------------------------------------------------------------

    def apply(
        self, platform: str, community: str, user_id: str, ts_ms: int, event_type: str
    ) -> str | None:
        """Merge one event; return the key if its record changed (so the caller writes
        it to the changelog), else None.

        Same rules as :func:`merge`, inlined and applied in place: this is the hot path.
        """
        if ts_ms > self._max_ts:
            self._max_ts = ts_ms
        key = f"{platform}{SEP}{community}{SEP}{user_id}"
        record = self.records.get(key)
        if record is None:
            record = UserRecord(ts_ms, None, None, False)
            self.records[key] = record
            changed = True
        elif ts_ms < record.first_seen_ms:
            record.first_seen_ms = ts_ms
            changed = True
        else:
            changed = False
        if event_type in self.active_types:
            old = record.last_active_ms
            if old is None or ts_ms > old:
                if key not in self._pending:
                    self._pending[key] = old
                record.last_active_ms = ts_ms
                changed = True
        if event_type == _FOLLOW or event_type == _UNFOLLOW:
            is_unfollow = event_type == _UNFOLLOW
            follow_ts = record.follow_ts_ms
            if (
                follow_ts is None
                or ts_ms > follow_ts
                or (ts_ms == follow_ts and is_unfollow and record.following)
            ):
                was_following = record.following
                record.follow_ts_ms = ts_ms
                record.following = not is_unfollow
                pc = (platform, community)
                if follow_ts is None:
                    self._follow_refs[pc] = self._follow_refs.get(pc, 0) + 1
                if was_following != record.following:
                    self._count_follow(pc, (platform, user_id), 1 if record.following else -1)
                changed = True
        return key if changed else None

    def _count_follow(self, pc: PC, pu: PC, delta: int) -> None:
        self._followers[pc] = self._followers.get(pc, 0) + delta
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

    # -- the lazy active-time indexes ---------------------------------------------------

    def flush(self) -> None:
        """Bring the active-time indexes up to date with the records.

        Called by every count; call it directly to move the work elsewhere (e.g. right
        after rebuilding a partition). Cost: one sorted-list removal per changed key,
        batched insertions per community, and the same per changed user for "*".
        """
        pending = self._pending
        if not pending:
            return
        self._pending = {}
        records = self.records
        comm_active = self._comm_active
        user_active = self._user_active
        adds: dict[PC, list[int]] = {}
        touched: set[PC] = set()
        users: dict[PC, int | None] = {}  # (platform, user) -> max as indexed in "*"
        for key, old in pending.items():
            record = records.get(key)
            new = None if record is None else record.last_active_ms
            if new == old:
                continue
            platform, community, user_id = key.split(SEP)
            pc = (platform, community)
            if old is not None:
                comm_active[pc].remove(old)
                touched.add(pc)
            if new is not None:
                batch = adds.get(pc)
                if batch is None:
                    adds[pc] = [new]
                else:
                    batch.append(new)
            pu = (platform, user_id)
            user = user_active.get(pu)
            if pu not in users:
                users[pu] = None if user is None else user[0]
            if user is None:
                # old is None here: a user without an entry has no indexed community.
                user_active[pu] = [new, {community: new}]
            elif new is None:
                del user[1][community]
            else:
                user[1][community] = new
        for pc, batch in adds.items():
            times = comm_active.get(pc)
            if times is None:
                comm_active[pc] = SortedList(batch)
            else:
                times.update(batch)
        for pc in touched:
            if not comm_active[pc]:
                del comm_active[pc]

        platform_active = self._platform_active
        platform_adds: dict[str, list[int]] = {}
        platform_touched: set[str] = set()
        for pu, old_max in users.items():
            user = user_active[pu]
            communities = user[1]
            if communities:
                new_max = max(communities.values())
                user[0] = new_max
            else:
                new_max = None
                del user_active[pu]
            if new_max == old_max:
                continue
            platform = pu[0]
            if old_max is not None:
                platform_active[platform].remove(old_max)
                platform_touched.add(platform)
            if new_max is not None:
                platform_adds.setdefault(platform, []).append(new_max)
        for platform, batch in platform_adds.items():
            maxima = platform_active.get(platform)
            if maxima is None:
                platform_active[platform] = SortedList(batch)
            else:
                maxima.update(batch)
        for platform in platform_touched:
            if not platform_active[platform]:
                del platform_active[platform]

    # -- rebuild and expiry -----------------------------------------------------------

    def load(self, key: str, record: UserRecord) -> None:
        """Index a record read back from the table (after assignment); takes ownership.

        A key already held is replaced, so loading is safe to repeat.
        """
        if key in self.records:
            self.delete(key)
        platform, community, user_id = split_key(key)
        self.records[key] = record
        newest = record.newest_ms()
        if newest > self._max_ts:
            self._max_ts = newest
        if record.last_active_ms is not None and key not in self._pending:
            self._pending[key] = None
        if record.follow_ts_ms is not None:
            pc = (platform, community)
            self._follow_refs[pc] = self._follow_refs.get(pc, 0) + 1
            if record.following:
                self._count_follow(pc, (platform, user_id), 1)

    def delete(self, key: str) -> None:
        """Forget a record and its contribution to every count; a missing key is a no-op."""
        record = self.records.pop(key, None)
        if record is None:
            return
        if record.last_active_ms is not None and key not in self._pending:
            self._pending[key] = record.last_active_ms
        if record.follow_ts_ms is not None:
            platform, community, user_id = split_key(key)
            pc = (platform, community)
            if record.following:
                self._count_follow(pc, (platform, user_id), -1)
            refs = self._follow_refs[pc] - 1
            if refs:
                self._follow_refs[pc] = refs
            else:
                del self._follow_refs[pc]
                self._followers.pop(pc, None)

    def expired_keys(self, now_ms: int, horizon_ms: int) -> list[str]:
        """Keys that can be dropped: not following, and the newest of (last_active,
        follow_ts, first_seen) is <= now - horizon.

        With horizon >= the longest window, dropping them changes no count at ``now``.
        A follower is never dropped (the follower gauge is not windowed). The horizon
        must also exceed the lateness tolerated: an event older than a dropped
        record's unfollow would otherwise be applied as new.
        """
        cutoff = now_ms - horizon_ms
        return [
            key
            for key, record in self.records.items()
            if not record.following and record.newest_ms() <= cutoff
        ]

    # -- counts -----------------------------------------------------------------------

    def active_counts(self, now_ms: int, windows: dict[str, int]) -> dict[PC, dict[str, int]]:
        """{(platform, community): {window_label: count}}: users whose last_active is in
        (now - W, now], integer ms; see the class docstring for which keys appear."""
        self.flush()
        bounds = [(label, now_ms - width) for label, width in windows.items()]
        out: dict[PC, dict[str, int]] = {}
        for pc, times in self._comm_active.items():
            out[pc] = _window_counts(times, now_ms, bounds)
        for platform, maxima in self._platform_active.items():
            out[(platform, ALL_COMMUNITIES)] = _window_counts(maxima, now_ms, bounds)
        return out

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


def _window_counts(times: SortedList, now_ms: int, bounds: list[tuple[str, int]]) -> dict[str, int]:
    """Counts in (low, now] for each bound, by bisection.

    Most lists are small (the long tail of communities) and fit in one sublist of
    the SortedList, where a C bisect on that sublist avoids the Python-level
    positional index; ``_lists`` is a stable internal of sortedcontainers 2.x.
    """
    lists = times._lists
    if len(lists) == 1:
        values = lists[0]
        upper = len(values) if values[-1] <= now_ms else bisect_right(values, now_ms)
        return {label: upper - bisect_right(values, low, 0, upper) for label, low in bounds}
    upper = len(times) if times[-1] <= now_ms else times.bisect_right(now_ms)
    return {label: upper - times.bisect_right(low) if upper else 0 for label, low in bounds}


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
