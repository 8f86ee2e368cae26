"""The state agent through Faust's ``agent.test_context()`` (no broker).

What only the agent does, beyond the pure state: it decodes by-user batches,
applies them to the partition's mirror, and writes each changed key to the
changelog once per batch, in the table's JSON encoding, so Faust's recovery can
read it back. The changelog producer is replaced by a recorder — Faust's test
context already stands in for Kafka here.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from agents.ingest import encode_batch
from streams.settings import Settings
from streams.state import UserRecord, split_key
from streams.topics import changelog_topic
from tests.oracle import make_key

T = 1_800_000_000_000


class RecordingProducer:
    """Collects changelog records; acknowledges at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bytes, bytes | None]] = []

    async def send_many(
        self, topic: str, partition: int, records: list[tuple[bytes, bytes | None]]
    ) -> list[Any]:
        self.sent += [(topic, partition, key, value) for key, value in records]
        return []


@pytest.fixture
def pipeline(tmp_path: Any) -> Any:
    from agents.app import build

    settings = Settings(
        store="memory://",
        datadir=str(tmp_path),
        app_id="unit-agent",
        clock="event",
        partitions=4,
        read_model="off",
    )
    built = build(settings)
    built.writer.producer = RecordingProducer()
    return built


async def test_batches_apply_and_each_key_is_written_once_per_batch(pipeline: Any) -> None:
    agent = next(a for a in pipeline.app.agents.values() if a.name.endswith("apply-events"))
    events = [
        [T - 5_000, "tw", "acme", "u1", "like"],
        [T - 4_000, "tw", "acme", "u1", "comment"],  # same key again: one record
        [T - 9_000, "tw", "acme", "u1", "like"],  # late: last-active stays T - 4s
        [T - 3_000, "tw", "acme", "u2", "follow"],
        [T - 2_000, "tw", "acme", "u2", "view"],  # not active: no change to last-active
        [T - 1_000, "tw", "other", "u1", "share"],
    ]
    async with agent.test_context() as ctx:
        await ctx.put(encode_batch(2, events), partition=2)
        await ctx.put(encode_batch(2, [[T - 1_000, "tw", "acme", "u2", "follow"]]), partition=2)

    sent = pipeline.writer.producer.sent
    keys_written = {key for _, _, key, _ in sent}
    assert {topic for topic, *_ in sent} == {changelog_topic("unit-agent")}
    assert {part for _, part, *_ in sent} == {2}
    want_keys = {
        orjson.dumps(make_key("tw", c, u))
        for c, u in (("acme", "u1"), ("acme", "u2"), ("other", "u1"))
    }
    assert keys_written == want_keys
    # take() may group both puts into one batch or not: a key is written at most once
    # per batch, so u2/acme (changed by both puts) appears once or twice, others once
    counts = {key: sum(1 for *_, k, _ in sent if k == key) for key in want_keys}
    assert counts[orjson.dumps(make_key("tw", "acme", "u1"))] == 1
    assert counts[orjson.dumps(make_key("tw", "other", "u1"))] == 1
    assert counts[orjson.dumps(make_key("tw", "acme", "u2"))] in (1, 2)

    # the last record written per key is what Faust's recovery will load
    latest = {
        split_key(orjson.loads(k)): UserRecord.from_wire(orjson.loads(v))
        for *_, k, v in sent
        if v is not None
    }
    # first seen is the earliest event (the late one); last active never moves back
    assert latest[("tw", "acme", "u1")] == UserRecord(T - 9_000, T - 4_000, None, False)
    assert latest[("tw", "acme", "u2")] == UserRecord(T - 3_000, T - 1_000, T - 1_000, True)

    counts_now = pipeline.state.active_counts(T, {"5s": 5_000, "1m": 60_000})
    assert counts_now[("tw", "acme")] == {"5s": 2, "1m": 2}
    assert counts_now[("tw", "*")] == {"5s": 2, "1m": 2}
    assert pipeline.state.follower_counts()[("tw", "acme")] == 1
