"""The ingest counters, kept per input partition in Kafka and committed with the offsets.

A per-process tally counts a redelivered message again (after a crash, the new
owner reads from the last committed offset) and restarts at 0 with the process.
Here each input partition's counts are state of that partition: every ingest
transaction also writes the counters its poll changed — cumulative values — to a
compacted topic, beside the input offsets. A new owner fenced the old one first,
then loads the partition's last committed values and continues from there, so
each input message is counted exactly once however often it is read. Exposed per
partition (label ``partition``): a moved partition's series goes on from the
same value on its new owner.

Keys: ``{partition}\\x1fevents\\x1f{platform}\\x1f{community}\\x1f{type}``,
``{partition}\\x1finvalid\\x1f{reason}``, ``{partition}\\x1flag``; values are JSON.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from agents.labels import CommunityLabels
from agents.txn_offsets import committed_reader
from streams.events import REASONS

SEP = "\x1f"
#: compacted, and rolled often so compaction keeps what a new owner reads small
TOPIC_CONFIGS = {
    "cleanup.policy": "compact",
    "segment.ms": "60000",
    "min.cleanable.dirty.ratio": "0.1",
}


@dataclass
class PartitionCounters:
    """One input partition's counts (community names already capped)."""

    lag_slots: int
    events: dict[tuple[str, str, str], int] = field(default_factory=dict)
    invalid: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    lag_buckets: list[int] = field(default_factory=list)
    lag_sum: float = 0.0

    def __post_init__(self) -> None:
        if not self.lag_buckets:
            self.lag_buckets = [0] * self.lag_slots


class PollTally:
    """What one poll of one input partition counted; applied only once committed.

    Has the interface the router reports to (``count_invalid``, ``add``)."""

    def __init__(self, labels: CommunityLabels, lag_slots: int) -> None:
        self.labels = labels
        self.events: dict[tuple[str, str, str], int] = {}
        self.invalid: dict[str, int] = {}
        self.lag_buckets = [0] * lag_slots
        self.lag_sum = 0.0

    def count_invalid(self, reason: str) -> None:
        self.invalid[reason] = self.invalid.get(reason, 0) + 1

    def add(
        self, counts: dict[tuple[str, str, str], int], lag_buckets: list[int], lag_sum: float
    ) -> None:
        events, labels, platforms = self.events, self.labels, self.labels.platforms
        for (platform, community, event_type), n in counts.items():
            key = (platforms(platform), labels(community), event_type)
            events[key] = events.get(key, 0) + n
        for i, n in enumerate(lag_buckets):
            self.lag_buckets[i] += n
        self.lag_sum += lag_sum


def apply(tally: PollTally, base: PartitionCounters) -> tuple[PartitionCounters, list[Any]]:
    """The counters after the poll, and the (key, value) records that carry the change."""
    after = PartitionCounters(
        base.lag_slots,
        dict(base.events),
        dict(base.invalid),
        list(base.lag_buckets),
        base.lag_sum,
    )
    changed: list[tuple[str, Any]] = []
    for key, n in tally.events.items():
        after.events[key] = after.events.get(key, 0) + n
        changed.append((SEP.join(("events", *key)), after.events[key]))
    for reason, n in tally.invalid.items():
        after.invalid[reason] = after.invalid.get(reason, 0) + n
        changed.append((SEP.join(("invalid", reason)), after.invalid[reason]))
    if tally.events:
        buckets = zip(after.lag_buckets, tally.lag_buckets, strict=True)
        after.lag_buckets = [a + b for a, b in buckets]
        after.lag_sum += tally.lag_sum
        changed.append(("lag", [after.lag_buckets, after.lag_sum]))
    return after, changed


def encode(partition: int, records: list[tuple[str, Any]]) -> list[tuple[bytes, bytes]]:
    return [(f"{partition}{SEP}{key}".encode(), orjson.dumps(value)) for key, value in records]


def load_into(counters: PartitionCounters, key: str, value: Any) -> None:
    kind, _, rest = key.partition(SEP)
    if kind == "events":
        platform, community, event_type = rest.split(SEP)
        counters.events[(platform, community, event_type)] = int(value)
    elif kind == "invalid":
        counters.invalid[rest] = int(value)
    elif kind == "lag":
        counters.lag_buckets, counters.lag_sum = list(value[0]), float(value[1])


async def load(
    bootstrap: str, topic: str, partitions: set[int], lag_slots: int
) -> dict[int, PartitionCounters]:
    """The last committed counters of these input partitions (read_committed, to
    the last stable offset: a fenced owner's open transaction is aborted by then)."""
    from aiokafka import TopicPartition

    loaded = {p: PartitionCounters(lag_slots) for p in partitions}
    if not partitions:
        return loaded
    async with committed_reader(bootstrap, auto_offset_reset="earliest") as reader:
        count = len(reader.partitions_for_topic(topic) or ())
        if not count:
            await reader._client.force_metadata_update()  # noqa: SLF001
            count = len(reader.partitions_for_topic(topic) or ())
        tps = sorted({TopicPartition(topic, p % count) for p in partitions})
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends = await reader.end_offsets(tps)
        deadline = time.monotonic() + 120
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading the ingest counters {sorted(pending)} took over 120s")
            batch = await reader.getmany(*pending, timeout_ms=500)
            for messages in batch.values():
                for message in messages:
                    _apply_record(loaded, message.key, message.value)
            pending = {tp for tp in pending if await reader.position(tp) < ends[tp]}
        return loaded


def _apply_record(loaded: dict[int, PartitionCounters], raw_key: bytes, raw: bytes | None) -> None:
    partition, _, key = raw_key.decode().partition(SEP)
    counters = loaded.get(int(partition))
    if counters is not None and raw is not None:
        load_into(counters, key, orjson.loads(raw))
