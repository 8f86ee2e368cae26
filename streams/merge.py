"""A k-way merge of partitions by record timestamp, for paced topic replays.

A topic source is consumed one partition chunk at a time, so records arrive in no
global time order; a pacer anchored on the first record would then send the other
partitions' earlier records at once and replay the range one partition after the
other. :class:`TimestampMerge` buffers records per partition and releases the record
with the smallest head timestamp only while every still-active partition has a record
buffered (a finished partition no longer holds the merge back). Within a partition
records keep their order — event-time timestamps need not be monotonic there, and the
merge looks only at each partition's head.

Pure (no Kafka, no clock): the caller feeds records with :meth:`add`, marks partitions
done with :meth:`finish`, takes what is ready with :meth:`pop_ready`, and fetches for
the partitions in :attr:`waiting` (pausing those whose :meth:`buffered` count is high).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class TimestampMerge(Generic[T]):
    """Merges per-partition record streams into non-decreasing head-timestamp order.

    Ties between partitions go to the lower partition number. ``timestamp`` maps a
    record to its time (ms); partitions are the ones given at construction.
    """

    __slots__ = ("_timestamp", "_buffers", "_finished", "_waiting", "_heads", "_size")

    def __init__(self, partitions: Iterable[int], timestamp: Callable[[T], int]) -> None:
        self._timestamp = timestamp
        self._buffers: dict[int, deque[T]] = {p: deque() for p in partitions}
        self._finished: set[int] = set()
        # Unfinished partitions with nothing buffered: the merge cannot go on without them.
        self._waiting: set[int] = set(self._buffers)
        # (head timestamp, partition) for every partition with a non-empty buffer.
        self._heads: list[tuple[int, int]] = []
        self._size = 0

    def add(self, partition: int, records: Iterable[T]) -> None:
        """Append records (in partition order) to a partition's buffer."""
        if partition in self._finished:
            raise ValueError(f"partition {partition} is finished")
        buffer = self._buffers.get(partition)
        if buffer is None:
            raise ValueError(f"unknown partition {partition}")
        before = len(buffer)
        buffer.extend(records)
        self._size += len(buffer) - before
        if before == 0 and buffer:
            self._waiting.discard(partition)
            heapq.heappush(self._heads, (self._timestamp(buffer[0]), partition))

    def finish(self, partition: int) -> None:
        """No more records will come for this partition; its buffer still drains."""
        if partition not in self._buffers:
            raise ValueError(f"unknown partition {partition}")
        self._finished.add(partition)
        self._waiting.discard(partition)

    def pop_ready(self) -> list[T]:
        """Every record that can be released now, in merge order (possibly none)."""
        out: list[T] = []
        heads = self._heads
        buffers = self._buffers
        timestamp = self._timestamp
        while heads and not self._waiting:
            _ts, partition = heads[0]
            buffer = buffers[partition]
            out.append(buffer.popleft())
            if buffer:
                heapq.heapreplace(heads, (timestamp(buffer[0]), partition))
            else:
                heapq.heappop(heads)
                if partition not in self._finished:
                    self._waiting.add(partition)
        self._size -= len(out)
        return out

    def buffered(self, partition: int) -> int:
        """Records held for one partition."""
        return len(self._buffers[partition])

    def __len__(self) -> int:
        """Records held in all buffers."""
        return self._size

    @property
    def waiting(self) -> frozenset[int]:
        """Unfinished partitions with an empty buffer: fetch these next."""
        return frozenset(self._waiting)

    @property
    def done(self) -> bool:
        """Every partition is finished and every buffer drained."""
        return self._size == 0 and len(self._finished) == len(self._buffers)
