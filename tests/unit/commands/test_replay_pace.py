"""A paced replay's wait ends as soon as a stop is requested (not at the end of a
slice, nor of the 60-day gap), and then reports that it was asked to stop."""

from __future__ import annotations

import asyncio
import time

from commands.cli import build_parser
from commands.progress import Progress
from commands.replay import Replay

DAY_MS = 86_400_000


def _replay() -> Replay:
    args = build_parser().parse_args(["replay", "--file", "events.jsonl", "--quiet"])
    return Replay(args, "127.0.0.1:9", "t", "t.dlq")


async def test_a_stop_ends_a_long_wait_at_once() -> None:
    replay = _replay()
    progress = Progress("replay", enabled=False)
    assert await replay._pace(0, progress)  # the first event is due at once
    waiting = asyncio.create_task(replay._pace(60 * DAY_MS, progress))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # it waits for the event 60 days later
    asked = time.monotonic()
    replay.stop()
    assert await asyncio.wait_for(waiting, 1) is False
    assert time.monotonic() - asked < 0.05  # at once, not after a 0.2 s slice


async def test_a_short_wait_runs_to_its_end() -> None:
    replay = _replay()
    progress = Progress("replay", enabled=False)
    await replay._pace(0, progress)
    started = time.monotonic()
    assert await replay._pace(300, progress)  # 0.3 s later at --speed 1
    assert 0.25 < time.monotonic() - started < 1.0
