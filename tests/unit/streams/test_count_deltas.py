"""count_deltas against counts taken member by member from docs/metrics.md's definitions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.count_deltas import NEVER, View, count_deltas

TIMES = st.integers(0, 120)


def brute(members: list[View], at: int, widths: list[int]) -> list[list[int]]:
    """[active, active followers, new, returning, dormant] per width, at ``at``."""
    out = []
    for width in widths:
        low = at - width
        active = [m for m in members if m[1] is not None and low < m[1] <= at]
        out.append(
            [
                len(active),
                sum(1 for m in active if m[2]),
                sum(1 for m in members if low < m[0] <= at),
                sum(1 for m in active if m[0] <= low),
                sum(1 for m in members if m[1] is not None and low - width < m[1] <= low),
            ]
        )
    return out


@st.composite
def views(draw: st.DrawFn) -> View:
    first = draw(TIMES)
    last = draw(st.none() | st.integers(first, 130))  # first seen <= last active
    return (first, last, draw(st.booleans()))


WIDTHS = st.lists(st.integers(1, 60), min_size=1, max_size=5).map(sorted)


@given(st.lists(views(), max_size=6), st.lists(st.none() | views(), max_size=6), TIMES, WIDTHS)
def test_deltas_are_the_difference_of_the_counts(before, after, at, widths) -> None:
    """Members replaced, removed (None) and added: the deltas move the counts of the
    members before to those of the members after."""
    changes: list[tuple[View | None, View | None]] = list(zip(before, after, strict=False))
    changes += [(None, view) for view in after[len(before) :]]
    changes += [(view, None) for view in before[len(after) :]]
    now = [view for view in after if view is not None]
    deltas, _soon = count_deltas(at, widths, changes)
    expected = [
        [b - a for a, b in zip(old, new, strict=True)]
        for old, new in zip(brute(before, at, widths), brute(now, at, widths), strict=True)
    ]
    got = (
        [[0] * 5 for _ in widths]
        if deltas is None
        else [[counts[w] for counts in deltas] for w in range(len(widths))]
    )
    assert got == expected


@given(st.lists(views(), min_size=1, max_size=4), TIMES, WIDTHS)
def test_counts_hold_until_the_next_edge_of_an_arriving_member(members, at, widths) -> None:
    """Until the returned time every count of the arriving members is what it was at
    ``at``; at that time one of them enters or leaves a count (the sums may still
    agree, one member leaving as another enters)."""
    _deltas, soon = count_deltas(at, widths, [(None, view) for view in members])
    assert soon > at
    counts = brute(members, at, widths)
    end = min(soon, 400)
    for t in range(at, end):
        assert brute(members, t, widths) == counts, t
    if soon != NEVER:
        assert any(brute([m], soon, widths) != brute([m], at, widths) for m in members)
    else:  # past every edge: nothing changes any more
        assert brute(members, 400, widths) == counts


def test_an_active_member_active_again_moves_nothing() -> None:
    widths = [5, 60]
    deltas, soon = count_deltas(100, widths, [((10, 98, False), (10, 100, False))])
    assert deltas is None
    assert soon == 105  # leaves the 5-wide window then
