"""Standard input read in a thread, so that an idle pipe cannot hold off a stop.

``sleep 30 | engagement-monitor replay --file -``: a read of stdin on the event loop
blocks until a line comes, and the Ctrl-C/SIGTERM handler runs only when the loop
gets control back. Here a daemon thread runs the whole file source (read, gunzip,
decode) and hands its items to the loop in batches; the loop only ever awaits them.

Latency: a batch is handed over when it is full, and, before every read that may
block, whatever was decoded so far is handed over too — a line that arrived is never
held back waiting for the batch to fill (``tail -f`` through a pipe stays live).

The thread reads file descriptor 0 itself, not ``sys.stdin``: a daemon thread parked
inside ``sys.stdin``'s buffered reader at exit makes the interpreter's own clean-up
of that object a fatal error. A stop leaves the thread blocked in its read (or
waiting for room); it is a daemon, so the process exits anyway.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import IO, Any, Generic, TypeVar

T = TypeVar("T")

#: batches decoded ahead of the loop: the thread waits when this many are unread
#: (a paced replay reads stdin no faster than it sends)
_AHEAD = 4


class _FlushBeforeRead(io.RawIOBase):
    """fd 0 as a raw stream that calls ``before_read`` before each (maybe blocking) read."""

    def __init__(self, fd: int, before_read: Callable[[], None]) -> None:
        super().__init__()
        self._fd = fd
        self._before_read = before_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._before_read()
        data = os.read(self._fd, len(buffer))
        buffer[: len(data)] = data
        return len(data)


class StdinFeed(Generic[T]):
    """``async for batch in StdinFeed(make_items).batches()``: ``make_items(stream)``
    builds the (blocking) iterator over a binary stream of stdin; it runs in the
    thread. An exception it raises is raised again in the loop. ``fd``: another
    file descriptor than stdin's (tests)."""

    def __init__(
        self, make_items: Callable[[IO[bytes]], Iterable[T]], size: int, fd: int = 0
    ) -> None:
        self._make_items = make_items
        self._size = size
        self._fd = fd
        self._queue: asyncio.Queue[list[T] | BaseException | None] = asyncio.Queue()
        self._room = threading.Semaphore(_AHEAD)
        self._loop = asyncio.get_running_loop()

    async def batches(self) -> AsyncGenerator[list[T], None]:
        threading.Thread(target=self._run, name="stdin-feed", daemon=True).start()
        while True:
            got = await self._queue.get()
            self._room.release()
            if got is None:
                return
            if isinstance(got, BaseException):
                raise got
            yield got

    def _hand_over(self, got: list[T] | BaseException | None) -> None:
        """(thread) Queue ``got`` for the loop, waiting while it is ``_AHEAD`` behind."""
        self._room.acquire()
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, got)
        except RuntimeError:  # the loop is closed: nobody reads any more
            raise SystemExit from None

    def _run(self) -> None:
        batch: list[T] = []

        def flush() -> None:
            nonlocal batch
            if batch:
                self._hand_over(batch)
                batch = []

        try:
            stream: IO[bytes] = io.BufferedReader(_FlushBeforeRead(self._fd, flush), 64 * 1024)
            for item in self._make_items(stream):
                batch.append(item)
                if len(batch) >= self._size:
                    flush()
            flush()
            self._hand_over(None)
        except SystemExit:
            return
        except BaseException as exc:  # noqa: BLE001 - raised again in the loop
            flush()  # what was decoded before the error goes out first, as from a file
            self._hand_over(exc)
