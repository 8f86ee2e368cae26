"""Is a local table store still a copy of its changelog partition? (pure)

A table partition's local store (RocksDB) remembers the offset of the last changelog
record it applied and — in a marker beside its data — which changelog topic, by
name and Kafka topic id, it was filled from. Recovery resumes after that offset. That
is only right while the changelog partition is the same log the store was filled
from and still holds every record after the stored offset. When it is not (the
topic was deleted and created again, the cluster is new, retention or
``delete_records`` removed records the store never saw), the store is stale and the
only safe move is Kafka Streams': wipe it and restore from the changelog.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChangelogPartition:
    """What the broker says about one changelog partition now."""

    topic: str
    partition: int
    start: int  # log start offset: the first offset still in the log
    end: int  # the offset the next record will get (highwater)
    topic_id: str | None = None  # None: the broker did not say (pre-2.8 Kafka)


@dataclass(frozen=True)
class Marker:
    """Which changelog a store was filled from (stored beside the store's data)."""

    topic: str
    topic_id: str | None


def stale_reason(
    stored_offset: int | None, marker: Marker | None, log: ChangelogPartition
) -> str | None:
    """Why the store can't be resumed from ``stored_offset``, or None when it can.

    A store without a stored offset has applied nothing, so there is nothing to
    judge. Topic identity is compared only when both ids are known (a store
    written before markers existed is judged by its offsets alone).
    """
    if stored_offset is None:
        return None
    if marker is not None and marker.topic != log.topic:
        return f"the store was filled from another changelog topic ({marker.topic})"
    if marker is not None and marker.topic_id and log.topic_id and marker.topic_id != log.topic_id:
        return (
            f"the changelog topic was recreated (topic id {marker.topic_id} when the store "
            f"was filled, {log.topic_id} now)"
        )
    if stored_offset >= log.end:
        last = "empty" if log.end == 0 else f"last offset {log.end - 1}"
        return f"the store's offset {stored_offset} is beyond the changelog's end ({last})"
    if log.start > stored_offset + 1:
        return (
            f"the changelog starts at offset {log.start}: records "
            f"{stored_offset + 1}..{log.start - 1} after the store's offset {stored_offset} "
            "were deleted"
        )
    return None
