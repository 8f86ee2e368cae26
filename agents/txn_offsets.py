"""How far a consumer group is behind on a topic that transactions write to.

A transactional partition ends with a commit marker after its last record, and a
transactional offset commit points just after that record, before the marker:
``committed = end - 1`` with nothing left to read. So "caught up" can't be
``committed == end``; it is "no committed record between the committed offset and
the end", which a ``read_committed`` consumer can tell (markers and aborted records
are skipped, not returned).
"""

from __future__ import annotations

import time
from typing import Any


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
