"""Ctrl-C and SIGTERM as a request to stop cleanly, for long-running commands.

The command's ``stop()`` sets a flag its loop checks, so the run ends with a
flush and a summary of what was done, instead of a traceback mid-batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: How long a stopped command (replay, produce) waits for the broker to confirm what
#: it has sent. A reachable broker answers within milliseconds; an unreachable one
#: would hold the stop for the producer's whole request timeout (30 s) while the
#: user waits for the prompt. What is not confirmed by then is reported as such
#: ("not confirmed"), never as sent.
STOP_FLUSH_SECONDS = 3.0


async def run_stoppable(run: Callable[[], Awaitable[T]], stop: Callable[[], None]) -> T:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        return await run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def unless_stopped(
    stopped: asyncio.Event,
    waited: Awaitable[T],
    tick: Callable[[], None] | None = None,
    every: float = 0.2,
) -> T | None:
    """``waited``'s result, or None when ``stopped`` is set first (``waited`` is then
    cancelled): a send held up by an unreachable broker, or an idle stdin, must not
    hold off a stop. ``tick`` is called every ``every`` seconds while it waits (a
    progress line saying what it waits for)."""
    task = asyncio.ensure_future(waited)
    stop = asyncio.ensure_future(stopped.wait())
    try:
        while not (task.done() or stop.done()):
            await asyncio.wait({task, stop}, timeout=every, return_when=asyncio.FIRST_COMPLETED)
            if tick is not None and not task.done():
                tick()
    finally:
        stop.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()
