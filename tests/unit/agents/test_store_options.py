"""The table's RocksDB options are ones Faust's store takes, and a fresh dict each time."""

from __future__ import annotations

from faust.stores.rocksdb import RocksDBOptions

from agents.store_options import (
    BLOCK_CACHE_BYTES,
    MAX_WRITE_BUFFERS,
    WRITE_BUFFER_BYTES,
    store_options,
)


def test_faust_takes_the_options() -> None:
    options = RocksDBOptions(**store_options(), use_rocksdict=True)
    assert options.write_buffer_size == WRITE_BUFFER_BYTES == 4 * 2**20
    assert options.max_write_buffer_number == MAX_WRITE_BUFFERS == 2
    assert options.block_cache_size == BLOCK_CACHE_BYTES == 2 * 2**20
    options.as_options()  # rocksdict accepts them


def test_each_table_gets_its_own_dict() -> None:
    first = store_options()
    first.pop("write_buffer_size")  # as Faust's store pops read_only/driver
    assert store_options()["write_buffer_size"] == WRITE_BUFFER_BYTES
