"""RocksDB options for the table's store: sized for a changelog cache, not a database.

The worker answers every count from its in-memory mirrors; the store is read only when
a partition is rebuilt (one sequential pass) and written once per committed batch
(agents/store_sync.py). Faust's defaults suit a store that serves reads: a 2 GiB
block cache and three 64 MiB memtables per partition, i.e. up to 192 MiB of
memtables per partition before anything reaches disk — at 1M records the whole store
sat in memory, and the rebuild's single pass filled the caches it would never read
again. Smaller memtables flush to disk sooner (more, smaller L0 files; compaction
keeps up at these write rates) and a small cache costs nothing on a read-once path.
16 MiB memtables and an 8 MiB cache still held ~75 B per record at 1.1M records
(docs/benchmarks.md, "Memory, session 10"); at 4 MiB and 2 MiB the four partitions'
stores hold at most ~40 MiB, at no measured cost in throughput.
"""

from __future__ import annotations

from typing import Any

MiB = 2**20

#: per partition's database
WRITE_BUFFER_BYTES = 4 * MiB
MAX_WRITE_BUFFERS = 2
BLOCK_CACHE_BYTES = 2 * MiB


def store_options() -> dict[str, Any]:
    """Faust ``Table(options=...)`` for a RocksDB store (the memory store ignores them).
    A new dict each time: Faust's store pops keys out of the one it is given."""
    return {
        "write_buffer_size": WRITE_BUFFER_BYTES,
        "max_write_buffer_number": MAX_WRITE_BUFFERS,
        "block_cache_size": BLOCK_CACHE_BYTES,
    }
