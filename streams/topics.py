"""Topic names and the one partitioning rule every stage agrees on.

Users are routed to partitions of the internal by-user topic with a hash of their
id that the ingest stage, the state stage and the tools (rebuild, tests) all compute
the same way; per-partition counts then cover disjoint sets of users and add up
exactly across partitions and workers.
"""

from __future__ import annotations

import zlib


def partition_for_user(user_id: str, partitions: int) -> int:
    return zlib.crc32(user_id.encode()) % partitions


def by_user_topic(app_id: str) -> str:
    """The internal topic whose messages each carry a batch of one partition's events."""
    return f"{app_id}-events-by-user"


TABLE_NAME = "users"


def changelog_topic(app_id: str) -> str:
    """Faust's name for the users table's changelog."""
    return f"{app_id}-{TABLE_NAME}-changelog"


def ingest_counters_topic(app_id: str) -> str:
    """Compacted: the ingest counters of each input partition, committed with its offsets."""
    return f"{app_id}-ingest-counters"


def ingest_group(app_id: str) -> str:
    """Consumer group of the ingest stage (the state stage uses the app id itself)."""
    return f"{app_id}-ingest"
