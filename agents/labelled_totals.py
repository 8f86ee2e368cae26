"""The gauge rows of every held partition summed per exposed label, kept by differences.

The label caps (:mod:`agents.labels`) fold thousands of communities into ``_other``;
summing every partition's rows again at each scrape costs as much as computing them.
:class:`LabelledTotals` instead applies the changes :class:`streams.live_counts.LiveCounts`
reports — subtract a row's old counts, add its new ones — and, when a ranking moves a
name to another label, moves just that name's rows. The sums equal
:func:`streams.gauges.gauge_rows` with the same labels (tests/unit/agents/test_gauge_text.py).

The audience (lifecycle) sums are moved only when someone reads them. A probe or a
dashboard that scrapes ``name[]=engagement_active_users`` several times a second
would otherwise pay for four more families at each scrape, while Prometheus reads
them every 15 s: a row's changes between two reads are folded into one (its first
old counts, its last new ones), so a read pays once per changed row, not once per
change.
"""

from __future__ import annotations

from collections.abc import Callable

from streams.live_counts import EMPTY, Change, Changes, LiveCounts, Row
from streams.state import Lifecycle

PC = tuple[str, str]
Label = Callable[[str], str]
#: (partition, (platform, community)) of one row
RowKey = tuple[int, PC]


_new_tuple = tuple.__new__  # Lifecycle's C constructor (see streams/state.py)


def _minus(a: Lifecycle, b: Lifecycle) -> Lifecycle:
    return Lifecycle(a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3])


class LabelledTotals:
    """{(platform label, community label): sums} of the rows of a :class:`LiveCounts`.

    ``generation`` () tells when the label caps were re-ranked: then every known name
    is labelled again and the rows of names whose label moved are moved.
    """

    def __init__(
        self,
        live: LiveCounts,
        label: Label,
        platform_label: Label,
        generation: Callable[[], object] = lambda: None,
    ) -> None:
        self.live = live
        self.feed: Changes = live.feed()
        self.label_fn, self.platform_fn, self.generation = label, platform_label, generation
        self._seen_generation = generation()
        self._labels: dict[str, str] = {}  # community name -> its label
        self._platform_labels: dict[str, str] = {}
        self._members: dict[str, dict[RowKey, None]] = {}  # community name -> its rows
        self.active: dict[PC, dict[str, int]] = {}
        self._lifecycle: dict[PC, dict[str, Lifecycle]] = {}
        # rows whose audience counts changed in place since the sums were last read:
        # (their counts the sums hold, their counts now); see :attr:`lifecycle`
        self._lifecycle_due: dict[RowKey, tuple[dict[str, Lifecycle], dict[str, Lifecycle]]] = {}
        self.followers: dict[PC, int] = {}
        # how many rows have each kind of count under a label: present while > 0
        self._refs: tuple[dict[PC, int], dict[PC, int], dict[PC, int]] = ({}, {}, {})
        #: labelled keys whose sums changed since :meth:`take_dirty`
        self.dirty: dict[PC, None] = {}

    def update(self, now_ms: int | None) -> None:
        """Bring the sums to ``now_ms``."""
        self.live.update(now_ms)
        for change in self.feed.take():
            self._apply(change)
        generation = self.generation()  # after the changes: the sums match the rows now
        if generation != self._seen_generation:
            self._seen_generation = generation
            self._relabel()

    @property
    def lifecycle(self) -> dict[PC, dict[str, Lifecycle]]:
        """The audience sums, brought up to date with the rows :meth:`update` saw.

        Their keys were marked dirty when the rows changed, so a reader that renders
        the dirty keys later still renders these."""
        due = self._lifecycle_due
        if due:
            self._lifecycle_due = {}
            for (_p, pc), (old, new) in due.items():
                self._move_lifecycle(self._key(pc), old, new)
        return self._lifecycle

    def take_dirty(self) -> dict[PC, None]:
        dirty, self.dirty = self.dirty, {}
        return dirty

    def _key(self, pc: PC) -> PC:
        platform, community = pc
        label = self._labels.get(community)
        if label is None:
            label = self._labels[community] = self.label_fn(community)
        plabel = self._platform_labels.get(platform)
        if plabel is None:
            plabel = self._platform_labels[platform] = self.platform_fn(platform)
        return plabel, label

    def _apply(self, change: Change) -> None:
        p, pc, old, new = change
        row = (p, pc)
        if not old or not new:  # the row appears or goes: in place, it is a member already
            members = self._members.setdefault(pc[1], {})
            if new:
                members[row] = None
            else:
                members.pop(row, None)
                if not members:
                    del self._members[pc[1]]
        key = self._key(pc)
        if old is EMPTY or not new:
            self._settle(row, key)
            self._replace(key, old, new)
            return
        # A row that changed (the usual change): its differences, part by part; a part
        # the row still shares with its old self (streams/state.py reuses the counts
        # a change left as they were) costs nothing.
        self.dirty[key] = None
        if old.active is not new.active:
            self._move_active(key, old.active, new.active)
        if old.lifecycle is not new.lifecycle:
            if old.lifecycle is None or new.lifecycle is None:
                self._settle(row, key)
                self._move_lifecycle(key, old.lifecycle, new.lifecycle)
            else:  # moved when read: from what the sums hold to the newest
                due = self._lifecycle_due.get(row)
                self._lifecycle_due[row] = (old.lifecycle if due is None else due[0], new.lifecycle)
        if old.followers != new.followers:
            self._replace(key, Row(None, None, old.followers), Row(None, None, new.followers))

    def _settle(self, row: RowKey, key: PC) -> None:
        """Move the row's audience change still due, before its counts are replaced whole."""
        due = self._lifecycle_due.pop(row, None)
        if due is not None:
            self._move_lifecycle(key, *due)

    def _replace(self, key: PC, old: Row, new: Row) -> None:
        """Take ``old``'s counts out from under ``key`` and add ``new``'s."""
        self._add(key, old, -1)
        self._add(key, new, 1)

    def _move_active(self, key: PC, old: dict[str, int] | None, new: dict[str, int] | None) -> None:
        if old is None or new is None:  # the row gains or loses its active counts
            self._replace(key, Row(old, None, None), Row(new, None, None))
            return
        total = self.active[key]
        for window, users in new.items():
            total[window] += users - old[window]

    def _move_lifecycle(
        self, key: PC, old: dict[str, Lifecycle] | None, new: dict[str, Lifecycle] | None
    ) -> None:
        if old is None or new is None:  # the row gains or loses its audience counts
            self._replace(key, Row(None, old, None), Row(None, new, None))
            return
        audience = self._lifecycle[key]
        for window, n in new.items():
            o = old[window]
            if n is not o:
                b = audience[window]
                audience[window] = _new_tuple(
                    Lifecycle,
                    (
                        b[0] + n[0] - o[0],
                        b[1] + n[1] - o[1],
                        b[2] + n[2] - o[2],
                        b[3] + n[3] - o[3],
                    ),
                )

    def _add(self, key: PC, row: Row, sign: int) -> None:
        """Add (sign 1) or take out (-1) one row's counts under ``key``."""
        if row is EMPTY:
            return
        self.dirty[key] = None
        refs_active, refs_lifecycle, refs_followers = self._refs
        if row.active is not None:
            total = self.active.setdefault(key, {})
            for window, users in row.active.items():
                total[window] = total.get(window, 0) + sign * users
            if _count(refs_active, key, sign) == 0:
                del self.active[key]
        if row.lifecycle is not None:
            audience = self._lifecycle.setdefault(key, {})
            for window, n in row.lifecycle.items():
                before = audience.get(window)
                if before is None:
                    audience[window] = n  # sign is 1: nothing to take out from
                else:
                    audience[window] = before.plus(n) if sign > 0 else _minus(before, n)
            if _count(refs_lifecycle, key, sign) == 0:
                del self._lifecycle[key]
        if row.followers is not None:
            self.followers[key] = self.followers.get(key, 0) + sign * row.followers
            if _count(refs_followers, key, sign) == 0:
                del self.followers[key]

    def _relabel(self) -> None:
        """After a ranking: label every known name again, move the rows of those whose
        label changed (a changed platform label moves every row of that platform)."""
        self.lifecycle  # noqa: B018 - the audience sums due, moved under the labels they had
        moved_platforms = {
            platform
            for platform, before in list(self._platform_labels.items())
            if self.platform_fn(platform) != before
        }
        moved = {
            community
            for community, before in list(self._labels.items())
            if self.label_fn(community) != before
        }
        rows: list[RowKey] = []
        if moved_platforms:
            rows = [k for members in self._members.values() for k in members]
            rows = [k for k in rows if k[1][0] in moved_platforms or k[1][1] in moved]
        else:
            rows = [k for community in moved for k in self._members.get(community, ())]
        for p, pc in rows:
            row = self.live.rows(p).get(pc, EMPTY)
            self._add(self._key(pc), row, -1)
        for community in moved:
            del self._labels[community]
        for platform in moved_platforms:
            del self._platform_labels[platform]
        for p, pc in rows:
            self._add(self._key(pc), self.live.rows(p).get(pc, EMPTY), 1)


def _count(refs: dict[PC, int], key: PC, sign: int) -> int:
    n = refs.get(key, 0) + sign
    if n:
        refs[key] = n
    else:
        refs.pop(key, None)
    return n
