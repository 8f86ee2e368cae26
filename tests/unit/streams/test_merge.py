"""TimestampMerge: the k-way merge that orders a paced topic replay across partitions."""

from __future__ import annotations

import random

import pytest

from streams.merge import TimestampMerge

Rec = tuple[int, int, int]  # (partition, offset, timestamp)


def ts(record: Rec) -> int:
    return record[2]


def records(partition: int, stamps: list[int]) -> list[Rec]:
    return [(partition, offset, t) for offset, t in enumerate(stamps)]


def merge_all(parts: dict[int, list[int]], chunk: int = 3, seed: int = 0) -> list[Rec]:
    """Feed the partitions in random chunks, like getmany, finishing each at its end;
    fetch only for partitions the merge waits on (as the topic source does)."""
    rng = random.Random(seed)
    merge: TimestampMerge[Rec] = TimestampMerge(parts, ts)
    pending = {p: records(p, stamps) for p, stamps in parts.items()}
    out: list[Rec] = []
    while not merge.done:
        waiting = sorted(merge.waiting)
        assert waiting, "the merge holds records but waits on no partition"
        p = rng.choice(waiting)
        take = rng.randint(1, chunk)
        batch, pending[p] = pending[p][:take], pending[p][take:]
        if batch:
            merge.add(p, batch)
        if not pending[p]:
            merge.finish(p)
        out.extend(merge.pop_ready())
    assert len(merge) == 0
    return out


def is_sorted(stamps: list[int]) -> bool:
    return all(a <= b for a, b in zip(stamps, stamps[1:], strict=False))


def test_several_partitions_come_out_in_timestamp_order() -> None:
    parts = {0: list(range(0, 300, 3)), 1: list(range(1, 300, 3)), 2: list(range(2, 300, 3))}
    for seed in range(20):
        out = merge_all(parts, chunk=7, seed=seed)
        assert [ts(r) for r in out] == list(range(300))


def test_uneven_lengths_and_partitions_finishing_early() -> None:
    parts = {0: [5, 10, 15], 1: list(range(0, 1000, 2)), 2: [999], 3: [1, 2, 3, 4]}
    for seed in range(20):
        out = merge_all(parts, chunk=50, seed=seed)
        assert is_sorted([ts(r) for r in out])
        assert sorted(out) == sorted(r for p, s in parts.items() for r in records(p, s))


def test_empty_partitions_do_not_hold_the_merge_back() -> None:
    merge: TimestampMerge[Rec] = TimestampMerge([0, 1, 2], ts)
    merge.add(0, records(0, [3, 4]))
    assert merge.pop_ready() == []  # 1 and 2 might still bring something earlier
    assert merge.waiting == {1, 2}
    merge.finish(1)
    merge.add(2, [])  # an empty chunk changes nothing
    assert merge.pop_ready() == []
    merge.finish(2)
    # Only partition 0 is left: its records go in partition order, all of them.
    assert [ts(r) for r in merge.pop_ready()] == [3, 4]
    assert merge.waiting == {0} and not merge.done
    merge.finish(0)
    assert merge.pop_ready() == [] and merge.done


def test_no_partitions_and_all_empty() -> None:
    assert TimestampMerge([], ts).done
    merge: TimestampMerge[Rec] = TimestampMerge([0, 1], ts)
    merge.finish(0)
    merge.finish(1)
    assert merge.pop_ready() == [] and merge.done


def test_release_waits_for_every_active_partition() -> None:
    merge: TimestampMerge[Rec] = TimestampMerge([0, 1], ts)
    merge.add(0, records(0, [10, 20, 30]))
    assert merge.pop_ready() == []
    merge.add(1, records(1, [15, 40]))
    # 10, 15, 20, 30: then partition 1 holds 40 and partition 0 has run dry.
    assert [ts(r) for r in merge.pop_ready()] == [10, 15, 20, 30]
    assert merge.waiting == {0}
    assert (merge.buffered(0), merge.buffered(1), len(merge)) == (0, 1, 1)
    merge.add(0, [(0, 3, 35)])
    assert [ts(r) for r in merge.pop_ready()] == [35]
    merge.finish(0)
    assert [ts(r) for r in merge.pop_ready()] == [40]
    assert merge.waiting == {1} and not merge.done


def test_out_of_order_within_a_partition_keeps_partition_order() -> None:
    parts = {0: [10, 50, 20, 30, 60], 1: [15, 25, 40, 5, 70]}
    for seed in range(10):
        out = merge_all(parts, chunk=2, seed=seed)
        for p in parts:
            assert [r[1] for r in out if r[0] == p] == list(range(len(parts[p])))
    out = merge_all(parts, chunk=100)
    # Heads decide: 10 | 15 | 25 | 40 (0's head 50) | 5 (behind 40 in its partition) ...
    assert [ts(r) for r in out] == [10, 15, 25, 40, 5, 50, 20, 30, 60, 70]


def test_ties_go_to_the_lower_partition() -> None:
    merge: TimestampMerge[Rec] = TimestampMerge([0, 1], ts)
    merge.add(1, records(1, [7, 7]))
    merge.add(0, records(0, [7]))
    merge.finish(0)
    merge.finish(1)
    assert [r[0] for r in merge.pop_ready()] == [0, 1, 1]


def test_misuse_is_refused() -> None:
    merge: TimestampMerge[Rec] = TimestampMerge([0], ts)
    with pytest.raises(ValueError):
        merge.add(1, [(1, 0, 0)])
    merge.finish(0)
    with pytest.raises(ValueError):
        merge.add(0, [(0, 0, 0)])
    with pytest.raises(ValueError):
        merge.finish(3)
