"""streams.sorted_ints against a plain sorted list: every read after every change.

Small block loads force the splits and merges that a large community's index goes
through; keys repeat (the same last-active millisecond for many users) so the runs
of equal keys cross block boundaries, where a paired removal must look on.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.sorted_ints as sorted_ints
from streams.sorted_ints import SortedInts

_key = st.integers(-5, 60)
_pair = st.tuples(_key, st.integers(0, 3))
_step = st.one_of(
    st.tuples(st.just("add"), st.lists(_pair, max_size=40)),
    st.tuples(st.just("remove"), st.lists(st.integers(0, 10_000), max_size=30)),
)


def _check_reads(ours: SortedInts, oracle: list[tuple[int, int]], paired: bool) -> None:
    ours.check()
    keys = [k for k, _ in oracle]
    assert list(ours) == keys and len(ours) == len(keys) and bool(ours) == bool(keys)
    assert [ours.key_at(i) for i in range(len(keys))] == keys
    bisect, at, n = ours.view()
    assert n == len(keys) and [at(i) for i in range(n)] == keys
    for probe in range(-7, 63):
        assert ours.bisect_left(probe) == bisect(probe) == bisect_left(keys, probe)
        if paired:
            pos = bisect_left(keys, probe)
            assert Counter(ours.values_from(pos)) == Counter(v for _, v in oracle[pos:])
    if paired:
        assert Counter(ours.pairs()) == Counter(oracle)


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.sampled_from([8, 16, 1024]), st.lists(_step, max_size=12))
def test_every_read_matches_a_sorted_list(paired: bool, load: int, steps: list) -> None:
    with patch.object(sorted_ints, "LOAD", load):
        ours = SortedInts(paired=paired)
        oracle: list[tuple[int, int]] = []
        for op, arg in steps:
            if op == "add":
                pairs = [(k, v if paired else 0) for k, v in arg]
                keys = [k for k, _ in pairs]
                ours.update(keys, [v for _, v in pairs] if paired else None)
                oracle = sorted(oracle + pairs, key=lambda p: p[0])
            else:
                for pick in arg:
                    if not oracle:
                        break
                    key, value = oracle.pop(pick % len(oracle))
                    ours.remove(key, value if paired else None)
            _check_reads(ours, oracle, paired)
        missing = (61, 0)
        with pytest.raises(ValueError):
            ours.remove(*missing) if paired else ours.remove(missing[0])
        if paired and oracle:
            key = oracle[0][0]
            with pytest.raises(ValueError):  # the key is there, not with this value
                ours.remove(key, 99)
        for key, value in list(oracle):  # down to nothing
            ours.remove(key, value if paired else None)
        _check_reads(ours, [], paired)


def test_a_paired_index_takes_values_and_only_it() -> None:
    with pytest.raises(TypeError):
        SortedInts(paired=True).update([1])
    with pytest.raises(TypeError):
        SortedInts().update([1], [2])


def test_an_element_costs_eight_bytes_a_pair_sixteen() -> None:
    """Why this is not a SortedList (issue 16): the bytes per element, all blocks
    included, against ~48 for a boxed int and its pointer."""
    import random
    import sys

    keys = [random.randrange(1 << 44) for _ in range(100_000)]
    for paired, per_element in ((False, 8), (True, 16)):
        index = SortedInts(paired=paired)
        for i in range(0, len(keys), 5_000):
            batch = keys[i : i + 5_000]
            index.update(batch, batch if paired else None)
        blocks = index._blocks + (index._values or [])
        size = sum(sys.getsizeof(block) for block in blocks) + sys.getsizeof(index._blocks)
        assert size / len(keys) < per_element * 1.3
