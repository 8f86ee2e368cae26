"""Late events: behind the event clock as it stood when each event was applied."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.lateness import DELAY_BUCKETS, LateEvents


@given(
    st.lists(st.lists(st.tuples(st.integers(0, 5_000), st.sampled_from("xy")), max_size=20)),
    st.one_of(st.none(), st.integers(0, 5_000)),
)
def test_late_equals_brute_force(batches, start) -> None:
    """Batch boundaries do not matter; the clock before the first batch counts."""
    late = LateEvents()
    for batch in batches:
        late.observe([list(row) for row in batch], start)
    flat = [row for batch in batches for row in batch]
    counts: dict[str, int] = {}
    delays = []
    for i, (ts, platform) in enumerate(flat):
        seen = [t for t, _ in flat[:i]] + ([] if start is None else [start])
        if seen and ts < max(seen):
            counts[platform] = counts.get(platform, 0) + 1
            delays.append((max(seen) - ts) / 1000)
    assert late.counts == counts
    assert sum(late.buckets) == len(delays)
    assert abs(late.delay_sum_s - sum(delays)) < 1e-6
    for i, bound in enumerate(DELAY_BUCKETS):
        assert sum(late.buckets[: i + 1]) == sum(1 for d in delays if d <= bound)


def test_same_millisecond_is_not_late_and_clock_never_goes_back() -> None:
    late = LateEvents()
    late.observe([[100, "x"], [100, "x"]], 100)
    assert late.counts == {}
    late.observe([[90, "x"]], 50)  # a lower clock (revoked partition) changes nothing
    assert late.counts == {"x": 1}
    assert late.delay_sum_s == 0.01
