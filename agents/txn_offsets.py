"""How far a consumer group is behind on a topic that transactions write to.

A transactional partition ends with a commit marker after its last record, and a
transactional offset commit points just after that record, before the marker:
``committed = end - 1`` with nothing left to read. So "caught up" can't be
``committed == end``; it is "no committed record between the committed offset and
the end", which a ``read_committed`` consumer can tell (markers and aborted records
are skipped, not returned).

:func:`committed_reader` is that consumer, for every reader of such topics.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from agents.kafka_security import client_kwargs, start_or_close


async def start_committed_reader(bootstrap: str, **overrides: Any) -> Any:
    """A started consumer that sees committed records only, in no group and committing
    nothing: readers of transactional topics (recovery's highwaters, the ingest
    counters, the lag probe, the benches) must never see an aborted record or move a
    group's offsets. ``overrides``: other consumer options; the security settings
    (:func:`agents.kafka_security.client_kwargs`) cannot be overridden."""
    from aiokafka import AIOKafkaConsumer

    options: dict[str, Any] = {
        "group_id": None,
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        **overrides,
    }
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, **options, **client_kwargs())
    await start_or_close(reader)
    return reader


@asynccontextmanager
async def committed_reader(bootstrap: str, **overrides: Any) -> AsyncIterator[Any]:
    """:func:`start_committed_reader`, stopped when the block ends."""
    reader = await start_committed_reader(bootstrap, **overrides)
    try:
        yield reader
    finally:
        await reader.stop()


async def records_behind(
    consumer: Any, gaps: dict[Any, tuple[int, int]], timeout_s: float = 5.0
) -> dict[Any, int]:
    """Of the ``{tp: (committed, end)}`` gaps, those holding committed records, with a
    lower bound of how many (``end - committed`` if it can't tell within the timeout).
    ``consumer`` reads ``read_committed`` and has no group; its assignment is replaced."""
    if not gaps:
        return {}
    consumer.assign(list(gaps))
    for tp, (start, _) in gaps.items():
        consumer.seek(tp, start)
    behind: dict[Any, int] = {}
    pending = dict(gaps)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        batch = await consumer.getmany(*pending, timeout_ms=300)
        for tp, messages in batch.items():
            inside = [m for m in messages if m.offset < gaps[tp][1]]
            if inside:
                behind[tp] = len(inside)
                pending.pop(tp, None)
        for tp in list(pending):
            if await consumer.position(tp) >= gaps[tp][1]:
                pending.pop(tp)
    for tp, (start, end) in pending.items():
        behind[tp] = end - start
    return behind
