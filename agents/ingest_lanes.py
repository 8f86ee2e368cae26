"""One transaction in flight per input partition, while the next polls are read.

The ingest stage used to poll, then commit one transaction per input partition of
the poll, then poll again: every partition's next batch waited for the slowest
transaction of the poll, and a transaction is five broker round trips, each of them
waiting for a turn of a busy event loop. A probe event waited for the cycle it
arrived in to end, then for its own (docs/benchmarks.md, "Latency, session 11").

:class:`Lanes` lets each partition go at its own pace. A partition's transactions
stay one at a time and in offset order (one fenced producer per partition, and each
batch must start where the last one ended). Messages polled while its transaction
is in flight wait, and go as one batch as soon as it ends. Past ``limit`` waiting
messages the partition is paused, so memory stays bounded when Kafka is slower than
the input.

A partition's next transaction starts no sooner than ``spacing`` seconds after the
start of the one before (held meanwhile, counting as busy): at a steady rate the
transactions then carry more events each, and fewer of them cost the worker and the
broker less (docs/benchmarks.md, "Latency, session 13"). A partition that was idle,
or whose transaction took longer, goes at once.

What waits must follow on from the batch in flight, offset for offset: the stage
calls :meth:`Lanes.forget` whenever it moves a partition's position (a rewind after a
failed transaction, a new assignment), so that only messages read from the new
position wait. A batch that does not start where the partition's next one must (the
one before it failed, or the partition moved) is refused by the stage's own check and
read again from there. An exception a handling raised is raised again by
:meth:`Lanes.check`, in the polling loop, as it was when the loop awaited the
transactions itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

#: handles one partition's next messages; True if committed (unused here: a refused
#: batch's followers are refused in turn, and read again from the rewound position)
Handle = Callable[[Any, list[Any]], Awaitable[bool]]


class Lanes:
    def __init__(
        self,
        handle: Handle,
        pause: Callable[[Any], None],
        resume: Callable[[Any], None],
        limit: int,
        spacing: float = 0.0,
    ) -> None:
        self.handle = handle
        self.pause = pause
        self.resume = resume
        self.limit = limit
        #: seconds from the start of a partition's transaction to the start of its next
        self.spacing = spacing
        self._started: dict[Any, float] = {}
        self._running: dict[Any, asyncio.Future[bool]] = {}
        self._waiting: dict[Any, list[Any]] = {}
        self._paused: set[Any] = set()
        self._errors: list[BaseException] = []

    def submit(self, tp: Any, messages: list[Any]) -> None:
        """Handle ``messages`` (the next ones of ``tp``) now, or after the one in flight."""
        if tp not in self._running:
            self._start(tp, messages)
            return
        waiting = self._waiting.setdefault(tp, [])
        waiting += messages
        if len(waiting) >= self.limit and tp not in self._paused:
            self._paused.add(tp)
            self.pause(tp)

    def busy(self) -> bool:
        return bool(self._running)

    def waiting(self, tp: Any) -> int:
        return len(self._waiting.get(tp, ()))

    def check(self) -> None:
        """Raise the first exception a handling raised (then forget the others)."""
        if self._errors:
            first, self._errors = self._errors[0], []
            raise first

    def forget(self, tp: Any) -> None:
        """Drop what waits for ``tp``: its position is about to move."""
        self._waiting.pop(tp, None)

    def forget_waiting(self) -> None:
        """Drop every waiting message: the partitions are about to be rewound or moved."""
        self._waiting.clear()

    async def drain(self) -> None:
        """Until nothing is in flight, the batches that waited included."""
        while self._running:
            await asyncio.wait(list(self._running.values()))

    async def cancel(self) -> None:
        self.forget_waiting()
        running = list(self._running.values())
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    def _start(self, tp: Any, messages: list[Any]) -> None:
        task = asyncio.ensure_future(self.handle(tp, messages))
        self._running[tp] = task
        self._started[tp] = asyncio.get_running_loop().time()
        task.add_done_callback(partial(self._done, tp))

    def _hold(self, tp: Any, delay: float) -> None:
        """Keep ``tp`` busy for ``delay`` seconds, with nothing in flight: what arrives
        meanwhile waits, and goes with what waits already (see :attr:`spacing`)."""
        held = asyncio.ensure_future(asyncio.sleep(delay, True))
        self._running[tp] = held
        held.add_done_callback(partial(self._done, tp))

    def _done(self, tp: Any, task: asyncio.Future[bool]) -> None:
        if self._running.get(tp) is task:
            del self._running[tp]
        waiting = self._waiting.pop(tp, None)
        if tp in self._paused:
            self._paused.discard(tp)
            self.resume(tp)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._errors.append(error)
        elif waiting:
            delay = self._started.get(tp, 0.0) + self.spacing - asyncio.get_running_loop().time()
            if delay > 0:
                self._waiting[tp] = waiting
                self._hold(tp, delay)
            else:
                self._start(tp, waiting)
