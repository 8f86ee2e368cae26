"""What a few members' changes do to a group's counts, without counting the group again.

A group's counts (:meth:`streams.state._Group.counts`) are bisections of its sorted
indexes at one clock time ``at``, cached until the clock brings an element onto a
window edge. Before this, any change to the indexes dropped that cache, and the next
scrape or read-model tick counted the group again: 10–40 µs for each of the ~3,000
groups an ordinary second changes, four times a second when probes scrape that often
(docs/benchmarks.md, "Latency, session 12"). A member's change moves each count by
at most one, and whether it does is a comparison of its two times with the window's
bounds at ``at``, so for the usual one or two changes per group and flush the deltas
cost a fraction of the recount.

The counts at ``at`` stay valid until the first time after ``at`` at which any
member reaches an edge: the cached validity already covers the members that were
there; a member that leaves can only make it later (kept as it is: an early recount
is merely wasted work); a member that arrives brings its own edges, which
:func:`count_deltas` returns.

Pure arithmetic, checked against the brute-force oracle in tests/unit/streams/.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

#: What the indexes hold for one record, or for one user in "*": (first seen, last
#: active, following). None: not a member.
View = tuple[int, int | None, bool]

#: A time after every event: "no edge ahead".
NEVER = 1 << 62

# The counts, in the order of :func:`count_deltas`'s lists.
ACTIVE, ACTIVE_FOLLOWERS, NEW, RETURNING, DORMANT = range(5)


def count_deltas(
    at: int, widths: Sequence[int], changes: Sequence[tuple[View | None, View | None]]
) -> tuple[list[list[int]] | None, int]:
    """The change that ``changes`` bring to each count at clock ``at``: five lists
    (active, active followers, new, returning, dormant), each with one entry per
    width, or None when nothing changes; and the first time after ``at`` at which an
    arriving view reaches an edge (:data:`NEVER`: none). ``widths`` ascending.

    The definitions are docs/metrics.md's, with a member's ages ``at - first`` and
    ``at - last``: active (and active followers) 0 <= age(last) < W; new
    0 <= age(first) < W; returning active with age(first) >= W; dormant
    W <= age(last) < 2W. Ascending widths make each of these a run of windows, found
    by bisection: a view costs a few C calls, not a loop over the windows. The usual
    change, an active member active again, moves no count at all (None).
    """
    n = len(widths)
    stride = n + 1
    # per count, ``stride`` entries: +sign where a run of windows starts, -sign after
    runs = [0] * (5 * stride)
    soon = NEVER
    for old, new in changes:
        if old is not None:
            _tally(old, at, widths, runs, -1)
        if new is not None:
            _tally(new, at, widths, runs, 1)
            edge = _next_edge(new, at, widths)
            if edge < soon:
                soon = edge
    if not any(runs):
        return None, soon
    return [list(accumulate(runs[c : c + n])) for c in range(0, 5 * stride, stride)], soon


def _tally(view: View, at: int, widths: Sequence[int], runs: list[int], sign: int) -> None:
    first, last, following = view
    stride = len(widths) + 1
    first_age = at - first
    if first_age >= 0:
        runs[NEW * stride + bisect_right(widths, first_age)] += sign
    if last is None or last > at:
        return
    age = at - last
    active = bisect_right(widths, age)  # windows wider than the age: active
    runs[active] += sign  # (ACTIVE is 0) runs to the last window: nothing to end
    if following:
        runs[stride + active] += sign
    returning_end = bisect_right(widths, first_age)  # not wider than first seen's age
    if returning_end > active:
        runs[RETURNING * stride + active] += sign
        runs[RETURNING * stride + returning_end] -= sign
    dormant = bisect_right(widths, age // 2)  # twice as wide as the age, not more
    if dormant < active:
        runs[DORMANT * stride + dormant] += sign
        runs[DORMANT * stride + active] -= sign


def _next_edge(view: View, at: int, widths: Sequence[int]) -> int:
    """The first time after ``at`` at which ``view`` enters or leaves any count: its
    first seen plus the narrowest window still holding it (or first seen itself when
    ahead of ``at``), and likewise its last active plus one width (leaving active) or
    two (leaving dormant)."""
    first, last, _following = view
    n = len(widths)
    if first > at:
        soon = first
    else:
        i = bisect_right(widths, at - first)
        soon = first + widths[i] if i < n else NEVER
    if last is None:
        return soon
    if last > at:
        return min(soon, last)
    age = at - last
    i = bisect_right(widths, age)
    if i < n and last + widths[i] < soon:
        soon = last + widths[i]
    i = bisect_right(widths, age // 2)
    if i < n and last + 2 * widths[i] < soon:
        soon = last + 2 * widths[i]
    return soon
