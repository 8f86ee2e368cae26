"""Top engaged users per community and UTC day: the in-memory tally and its flush plan.

The tally is a batch observer of the apply agent (``Pipeline.observers``): per
batch it only does dict increments — no I/O, no allocation beyond the key tuple —
so it stays far below a microsecond per event. The snapshot timer
(:mod:`agents.redis_snapshots`) swaps the tally out and turns it into Redis
commands (:func:`plan`); if the write fails the deltas are merged back, up to a cap
on pending keys, beyond which further events are counted as dropped rather than
letting memory grow during a long Redis outage.

Scores count *active events received* (types in ``settings.active_type_set``) by
event-time UTC day. A message redelivered after a worker crash is counted again,
and a user trimmed out of a set restarts from their later events: the sets are a
ranking, not an exact metric (the exact numbers are the snapshots).

"*" (all communities of a platform) is derived at flush time by summing a user's
communities — no extra work per event.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.readmodel import DAY_MS, utc_day
from streams.events import ALL_COMMUNITIES

#: (platform, community, user_id, day number since the epoch)
TallyKey = tuple[str, str, str, int]

DEFAULT_MAX_PENDING = 200_000
TOP_TTL_S = 8 * 86_400  # a week of days stays readable, then the sets expire


class TopUsersTally:
    """Observer ``(partition, events)``; events are ``[ts_ms, platform, community,
    user_id, type]`` lists as decoded by the apply agent."""

    __slots__ = ("active_types", "max_pending", "pending", "dropped")

    def __init__(self, active_types: frozenset[str], max_pending: int = DEFAULT_MAX_PENDING):
        self.active_types = frozenset(active_types)
        self.max_pending = max_pending
        self.pending: dict[TallyKey, int] = {}
        self.dropped = 0  # active events not tallied because the buffer was full

    def __call__(self, partition: int, events: list[list]) -> None:
        active = self.active_types
        pending = self.pending
        if len(pending) >= self.max_pending:
            self.dropped += sum(1 for event in events if event[4] in active)
            return
        get = pending.get
        for ts_ms, platform, community, user_id, event_type in events:
            if event_type in active:
                key = (platform, community, user_id, ts_ms // DAY_MS)
                pending[key] = get(key, 0) + 1

    def take(self) -> dict[TallyKey, int]:
        """The deltas so far; the tally starts afresh."""
        taken, self.pending = self.pending, {}
        return taken

    def restore(self, deltas: dict[TallyKey, int]) -> None:
        """Put back deltas whose write failed (as far as the cap allows)."""
        pending = self.pending
        room = self.max_pending - len(pending)
        for key, n in deltas.items():
            if key in pending:
                pending[key] += n
            elif room > 0:
                pending[key] = n
                room -= 1
            else:
                self.dropped += n


@dataclass
class SetDelta:
    """Increments for one sorted set: (day, platform, community) -> {user: n}."""

    day: str
    platform: str
    community: str
    increments: dict[str, int]


def plan(deltas: dict[TallyKey, int]) -> list[SetDelta]:
    """Group deltas per sorted set, adding the per-platform "*" sets (a user's score in
    "*" is the sum over their communities)."""
    sets: dict[tuple[int, str, str], dict[str, int]] = {}
    for (platform, community, user_id, day), n in deltas.items():
        for comm in (community, ALL_COMMUNITIES):
            incs = sets.get((day, platform, comm))
            if incs is None:
                sets[(day, platform, comm)] = {user_id: n}
            else:
                incs[user_id] = incs.get(user_id, 0) + n
    days: dict[int, str] = {}
    out = []
    for (day, platform, community), incs in sorted(sets.items()):
        label = days.get(day)
        if label is None:
            label = days[day] = utc_day(day * DAY_MS)
        out.append(SetDelta(label, platform, community, incs))
    return out
