"""Ctrl-C and SIGTERM as a request to stop cleanly, for long-running commands.

The command's ``stop()`` sets a flag its loop checks, so the run ends with a
flush and a summary of what was done, instead of a traceback mid-batch.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def run_stoppable(run: Callable[[], Awaitable[T]], stop: Callable[[], None]) -> T:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        return await run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
