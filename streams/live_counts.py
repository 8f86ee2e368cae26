"""Every partition's gauge rows, kept up to date by recomputing only what changed.

The ``/metrics`` collector and the Redis read model both need every (platform,
community) count of every held partition at least once a second. Computing them all
costs a few bisections per community and partition — tens of thousands of groups at
10,000 communities — so :class:`LiveCounts` keeps the rows and, at each
:meth:`LiveCounts.update`, recomputes only the groups whose indexes changed
(:meth:`PartitionState.take_changed`) and those whose counts the clock has moved
(each group says until when its counts hold, :meth:`PartitionState.group_counts`).
One instance per worker, shared: ``take_changed`` hands each change out once.

Readers learn what changed through a :class:`Changes` feed of their own: the
(partition, platform, community) keys with their rows before and after, so a reader
can keep sums (label caps) or a written copy (Redis) by applying differences.
The numbers are those of :func:`streams.gauges.gauge_rows` over one partition:
tests/unit/streams/test_live_counts.py compares them after every step.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from streams.state import Lifecycle, PartitionState, WorkerState, lifecycle_bounds

PC = tuple[str, str]

#: How long :meth:`LiveCounts.refresh` may hold the event loop before it lets it through.
REFRESH_TURN_S = 0.05


@dataclass(frozen=True, slots=True)
class Row:
    """One (platform, community) of one partition; None where the state leaves the key
    out of that count (see :class:`streams.state.PartitionState`)."""

    active: dict[str, int] | None
    lifecycle: dict[str, Lifecycle] | None
    followers: int | None

    def __bool__(self) -> bool:
        return not (self.active is None and self.lifecycle is None and self.followers is None)


EMPTY = Row(None, None, None)

#: (partition, (platform, community), row before, row after); EMPTY: absent.
Change = tuple[int, PC, Row, Row]


@dataclass
class Changes:
    """A reader's feed: every change since it last took them, in order."""

    pending: list[Change] = field(default_factory=list)
    #: pending changes kept before they are folded per key (see :meth:`add`)
    limit: int = 20_000

    def add(self, changes: list[Change], rows: int) -> None:
        """Append ``changes``; past ``limit`` (or twice the ``rows`` held, if more) the
        pending changes are folded to one per key — its first "before", its last
        "after", none if those are equal. A reader that applies differences gets the
        same result, and a feed nobody takes for a while (a worker no one scrapes)
        holds at most one change per row instead of every change since its last
        read: 68 B per stored record at 1M records without the fold."""
        pending = self.pending
        pending.extend(changes)
        if len(pending) > max(self.limit, 2 * rows):
            folded: dict[tuple[int, PC], list[Row]] = {}
            for p, pc, old, new in pending:
                seen = folded.get((p, pc))
                if seen is None:
                    folded[(p, pc)] = [old, new]
                else:
                    seen[1] = new
            self.pending = [
                (p, pc, old, new) for (p, pc), (old, new) in folded.items() if old != new
            ]

    def take(self) -> list[Change]:
        taken, self.pending = self.pending, []
        return taken


class _Partition:
    """The rows of one held :class:`PartitionState` and when each must be recomputed."""

    __slots__ = ("part", "rows", "valid", "deadlines")

    def __init__(self, part: PartitionState, rows: dict[PC, Row]) -> None:
        self.part = part
        self.rows = rows
        self.valid: dict[PC, int] = {}  # pc -> its counts hold until this clock time
        self.deadlines: list[tuple[int, PC]] = []  # heap; entries not in valid are stale


class LiveCounts:
    """The rows of every partition of ``state`` at the last :meth:`update`."""

    def __init__(self, state: WorkerState, windows: dict[str, int]) -> None:
        self.state = state
        self.windows = dict(windows)
        self.now_ms: int | None = None
        self._parts: dict[int, _Partition] = {}
        self._feeds: list[Changes] = []
        #: held by whoever runs :meth:`refresh` until it has read the rows and feeds
        self.lock = asyncio.Lock()

    def feed(self) -> Changes:
        """A new reader's feed; it starts with every row present now as an addition."""
        changes = Changes()
        for p, held in self._parts.items():
            changes.pending.extend((p, pc, EMPTY, row) for pc, row in held.rows.items())
        self._feeds.append(changes)
        return changes

    def rows(self, partition: int) -> dict[PC, Row]:
        held = self._parts.get(partition)
        return held.rows if held is not None else {}

    def partitions(self) -> list[int]:
        return list(self._parts)

    def update(self, now_ms: int | None) -> None:
        """Bring every row to ``now_ms`` (None: no clock yet, followers only)."""
        for _ in self._steps(now_ms):
            pass

    async def refresh(self, now_ms: int | None, turn_s: float = REFRESH_TURN_S) -> None:
        """:meth:`update`, letting the event loop through between partitions once it
        has held it for ``turn_s``.

        Recomputing a changed group costs 10–40 µs; a read-model tick after a backlog,
        or at 10,000 communities, recomputes tens of thousands, and held the loop for
        100–470 ms while every transaction round trip of the two stages waited
        (docs/benchmarks.md, "Latency, session 9"). Letting the loop through after
        every partition instead made a scrape's own answer slower under load (each
        turn waits for a state batch or a routing slice), and a probe's latency
        includes the scrape ("Latency, session 11"): hence turns of ``turn_s``.

        A caller holds :attr:`lock` from here until it has read what it needs, so
        updates never interleave: each partition is then brought to one ``now_ms``
        at a time, in order.
        """
        turn = time.monotonic()
        for _ in self._steps(now_ms):
            if time.monotonic() - turn >= turn_s:
                await asyncio.sleep(0)
                turn = time.monotonic()

    def _steps(self, now_ms: int | None) -> Iterator[None]:
        """The work of one update, a partition per step; the feeds get each
        partition's changes as it is done."""
        # a clock that went back (wall clock stepped) invalidates every validity
        full = now_ms is None or self.now_ms is None or now_ms < self.now_ms
        self.now_ms = now_ms
        gone: list[Change] = []
        for p in [p for p in self._parts if p not in self.state.partitions]:
            gone.extend((p, pc, row, EMPTY) for pc, row in self._parts.pop(p).rows.items())
        self._publish(gone)
        for p, part in list(self.state.partitions.items()):
            if self.state.partitions.get(p) is not part:
                continue  # revoked or rebuilt while the loop was served: the next update
            held = self._parts.get(p)
            if held is None or held.part is not part:  # newly assigned, or rebuilt
                # diffed against the rows readers have of the partition's old state
                held = self._parts[p] = _Partition(part, held.rows if held else {})
                self._publish(self._refresh(p, held, now_ms, True))
            else:
                self._publish(self._refresh(p, held, now_ms, full))
            yield

    def _publish(self, out: list[Change]) -> None:
        if out:
            rows = sum(len(held.rows) for held in self._parts.values())
            for feed in self._feeds:
                feed.add(out, rows)

    def _refresh(self, p: int, held: _Partition, now_ms: int | None, full: bool) -> list[Change]:
        """The keys that may have changed: new index changes (kept for later while there
        is no clock), expired validities (all on a full refresh), follower changes."""
        keys: dict[PC, None] = {}
        if now_ms is not None:
            keys = held.part.take_changed()
        keys.update(held.part.take_follow_changed())
        if full:
            keys.update(dict.fromkeys(held.rows))
            keys.update(dict.fromkeys(held.part.follower_counts()))
            if now_ms is not None:  # groups left out while there was no clock, too
                keys.update(dict.fromkeys(held.part.count_keys()))
            held.deadlines, held.valid = [], {}
        elif now_ms is not None:
            deadlines, valid = held.deadlines, held.valid
            while deadlines and deadlines[0][0] <= now_ms:
                until, pc = heapq.heappop(deadlines)
                if valid.get(pc) == until:
                    del valid[pc]
                    keys[pc] = None
        return self._recompute(p, held, keys, now_ms)

    def _recompute(
        self, p: int, held: _Partition, keys: dict[PC, None], now_ms: int | None
    ) -> list[Change]:
        """Recompute ``keys``; the changes among them."""
        part, rows, valid, windows = held.part, held.rows, held.valid, self.windows
        followers = part.follower_count
        bounds = lifecycle_bounds(now_ms, windows) if now_ms is not None else []
        out: list[Change] = []
        for pc in keys:
            if now_ms is None:
                new = Row(None, None, followers(pc))
            else:
                active, lifecycle, until = part.group_counts(pc, now_ms, windows, bounds)
                new = Row(active, lifecycle, followers(pc))
                if lifecycle is None:
                    valid.pop(pc, None)
                elif valid.get(pc) != until:
                    valid[pc] = until
                    heapq.heappush(held.deadlines, (until, pc))
            old = rows.get(pc, EMPTY)
            if new != old:
                if new:
                    rows[pc] = new
                else:
                    del rows[pc]
                out.append((p, pc, old, new))
        return out
