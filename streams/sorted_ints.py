"""A sorted multiset of 64-bit ints in blocks of ``array('q')``: the window indexes.

Why not sortedcontainers' ``SortedList``, which these indexes were before: it holds a
boxed int per element, 32-40 bytes plus an 8-byte pointer, and the indexes hold
three or four elements per stored record. Here an element is 8 bytes (16 with a
paired value), and nothing in it is tracked by the garbage collector. The counts
need only bisection and reading an element at a position, which C ``bisect`` does
on an array block; a batch of insertions lands per block (C ``insert`` into a block
receiving few, one sort for a block receiving many), the way the flush brings them.

A paired index keeps one value beside each key (the active index: last-active
time, with the first-seen time of the same record). Only the keys are ordered;
the values of equal keys are in no particular order, and :meth:`remove` finds the
pair it is given among them (C ``array.index`` over the run of equal keys).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from functools import partial
from itertools import accumulate

#: Elements per block when a sorted batch is cut up; a block grown past twice this
#: is split, one shrunk below an eighth of it is merged into a neighbour. Large
#: enough that most communities' indexes are one block (C bisection, no block
#: search), small enough that an insertion's memmove stays short.
LOAD = 1024


def _in_order(keys: list[int], values: list[int] | None) -> tuple[list[int], list[int] | None]:
    """The keys sorted, and the values (if any) in the keys' order (ties in any order)."""
    if values is None:
        return sorted(keys), None
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return list(map(keys.__getitem__, order)), list(map(values.__getitem__, order))


class SortedInts:
    """Sorted int64 keys, each with an int64 value if ``paired``; duplicates allowed."""

    __slots__ = ("_blocks", "_maxes", "_values", "_starts", "_len")

    def __init__(self, paired: bool = False) -> None:
        self._blocks: list[array[int]] = []
        self._maxes: list[int] = []  # the last key of each block
        self._values: list[array[int]] | None = [] if paired else None
        # Position of each block's first element, and the length at the end; None
        # when stale (rebuilt on the next positional read, not on every change).
        self._starts: list[int] | None = None
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[int]:
        for block in self._blocks:
            yield from block

    def pairs(self) -> Iterator[tuple[int, int]]:
        """(key, value) in key order, for a paired index."""
        assert self._values is not None, "not a paired index"
        for block, values in zip(self._blocks, self._values, strict=True):
            yield from zip(block, values, strict=True)

    # -- reads --------------------------------------------------------------------------

    def bisect_left(self, key: int) -> int:
        """How many keys are < ``key``."""
        blocks = self._blocks
        if len(blocks) == 1:
            return bisect_left(blocks[0], key)
        b = bisect_left(self._maxes, key)
        if b == len(blocks):
            return self._len
        return self._start_list()[b] + bisect_left(blocks[b], key)

    def key_at(self, pos: int) -> int:
        """The key at position ``pos`` (0 <= pos < len)."""
        blocks = self._blocks
        if len(blocks) == 1:
            return blocks[0][pos]
        starts = self._start_list()
        b = bisect_right(starts, pos) - 1
        return blocks[b][pos - starts[b]]

    def values_from(self, pos: int) -> list[int]:
        """The values of the elements at ``pos`` and after, for a paired index."""
        assert self._values is not None, "not a paired index"
        if pos >= self._len:
            return []
        starts = self._start_list()
        b = bisect_right(starts, pos) - 1
        out = self._values[b][pos - starts[b] :].tolist()
        for block in self._values[b + 1 :]:
            out.extend(block)
        return out

    def view(self) -> tuple[Callable[[int], int], Callable[[int], int], int]:
        """(bisect_left, key at a position, length): C calls on the only block when
        there is one (most indexes: the long tail of communities)."""
        blocks = self._blocks
        if len(blocks) == 1:
            only = blocks[0]
            return partial(bisect_left, only), only.__getitem__, len(only)
        return self.bisect_left, self.key_at, self._len

    def _start_list(self) -> list[int]:
        starts = self._starts
        if starts is None:
            starts = self._starts = list(accumulate(map(len, self._blocks), initial=0))
        return starts

    # -- changes ------------------------------------------------------------------------

    def update(self, keys: list[int], values: list[int] | None = None) -> None:
        """Insert every key (with its value, for a paired index; same length)."""
        if not keys:
            return
        if (values is None) != (self._values is None):
            raise TypeError("values go with a paired index, and only with one")
        self._starts = None
        self._len += len(keys)
        if not self._blocks:
            self._set_blocks(0, 0, *_in_order(keys, values))
            return
        maxes = self._maxes
        last = len(maxes) - 1
        if last == 0 or min(keys) >= maxes[last]:  # one block, or all after the end
            self._into(last, keys, values)
            return
        by_block: dict[int, tuple[list[int], list[int]]] = {}
        for i, key in enumerate(keys):
            b = bisect_right(maxes, key)
            if b > last:
                b = last
            batch = by_block.get(b)
            if batch is None:
                batch = by_block[b] = ([], [])
            batch[0].append(key)
            if values is not None:
                batch[1].append(values[i])
        for b in sorted(by_block, reverse=True):  # from the end: splits keep b valid
            block_keys, block_values = by_block[b]
            self._into(b, block_keys, None if values is None else block_values)

    def remove(self, key: int, value: int | None = None) -> None:
        """Remove one ``key`` (paired: the element ``(key, value)``); ValueError if absent."""
        blocks, values = self._blocks, self._values
        b = bisect_left(self._maxes, key)
        while b < len(blocks):
            block = blocks[b]
            pos = bisect_left(block, key)
            if pos == len(block) or block[pos] != key:
                break
            if values is not None and values[b][pos] != value:
                end = bisect_right(block, key, pos)
                try:
                    pos = values[b].index(value, pos, end)  # type: ignore[arg-type]
                except ValueError:
                    if end < len(block):
                        break
                    b += 1  # the run of equal keys goes on in the next block
                    continue
            if values is not None:
                del values[b][pos]
            del block[pos]
            self._len -= 1
            self._starts = None
            if not block:
                self._drop(b)
            else:
                self._maxes[b] = block[-1]
                if len(block) < LOAD >> 3 and len(blocks) > 1:
                    self._merge(b if b + 1 < len(blocks) else b - 1)
            return
        missing = key if value is None else (key, value)
        raise ValueError(f"{missing!r} not in the index")

    def _into(self, b: int, keys: list[int], values: list[int] | None) -> None:
        """Insert a batch into block ``b`` (every key belongs there, or after the last)."""
        block = self._blocks[b]
        block_values = None if self._values is None else self._values[b]
        if min(keys) >= block[-1]:
            # After the end: the usual case, a new last-active or first-seen time
            # being the newest of its community.
            if len(keys) > 1:
                keys, values = _in_order(keys, values)
            block.extend(keys)
            if block_values is not None:
                block_values.extend(values)  # type: ignore[arg-type]
        elif len(keys) * 16 < len(block):
            for i, key in enumerate(keys):
                pos = bisect_right(block, key)
                block.insert(pos, key)
                if block_values is not None:
                    block_values.insert(pos, values[i])  # type: ignore[index]
        else:
            self._merge_into(b, keys, values)
            return
        self._maxes[b] = block[-1]
        if len(block) > LOAD << 1:
            self._split(b)

    def _merge_into(self, b: int, keys: list[int], values: list[int] | None) -> None:
        """Block ``b`` and a batch as large as a sixteenth of it, sorted together."""
        merged = self._blocks[b].tolist() + keys
        if values is not None:
            values = self._values[b].tolist() + values  # type: ignore[index]
        self._set_blocks(b, b + 1, *_in_order(merged, values))

    def _set_blocks(self, lo: int, hi: int, keys: list[int], values: list[int] | None) -> None:
        """Replace blocks lo..hi by sorted ``keys`` (and values), cut into blocks."""
        n = len(keys)
        if n <= LOAD << 1:  # most: one block
            self._blocks[lo:hi] = [array("q", keys)]
            self._maxes[lo:hi] = [keys[-1]]
            if self._values is not None:
                self._values[lo:hi] = [array("q", values)]  # type: ignore[arg-type]
            return
        parts = n // LOAD
        size = -(-n // parts)
        cuts = range(0, n, size)
        self._blocks[lo:hi] = [array("q", keys[i : i + size]) for i in cuts]
        self._maxes[lo:hi] = [keys[min(i + size, n) - 1] for i in cuts]
        if self._values is not None:
            assert values is not None
            self._values[lo:hi] = [array("q", values[i : i + size]) for i in cuts]

    def _split(self, b: int) -> None:
        block = self._blocks[b]
        values = None if self._values is None else self._values[b].tolist()
        self._set_blocks(b, b + 1, block.tolist(), values)

    def _merge(self, b: int) -> None:
        """Join blocks b and b + 1 (in order already), split again if too large."""
        blocks = self._blocks
        blocks[b].extend(blocks[b + 1])
        del blocks[b + 1]
        self._maxes[b] = self._maxes[b + 1]
        del self._maxes[b + 1]
        if self._values is not None:
            self._values[b].extend(self._values[b + 1])
            del self._values[b + 1]
        if len(blocks[b]) > LOAD << 1:
            self._split(b)

    def _drop(self, b: int) -> None:
        del self._blocks[b]
        del self._maxes[b]
        if self._values is not None:
            del self._values[b]

    def check(self) -> None:
        """Assert the invariants (tests): sorted blocks, maxes, lengths."""
        blocks = self._blocks
        assert all(blocks), "an empty block"
        assert self._maxes == [block[-1] for block in blocks]
        flat = list(self)
        assert flat == sorted(flat) and len(flat) == self._len
        if self._values is not None:
            assert [len(v) for v in self._values] == [len(b) for b in blocks]
        if self._starts is not None:
            assert self._starts == list(accumulate(map(len, blocks), initial=0))
