"""commands/stdin_feed.py: a pipe read by a thread, its items handed to the loop in
batches — a line that came is handed over before the next read blocks (never held
back for the batch to fill), a stop is never held up by the pipe, errors arrive."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import IO

import pytest

from commands.interrupt import unless_stopped
from commands.stdin_feed import StdinFeed


def lines(stream: IO[bytes]) -> Iterator[bytes]:
    for line in stream:
        if line.startswith(b"boom"):
            raise ValueError("a bad line")
        yield line.rstrip(b"\n")


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        try:
            os.close(fd)
        except OSError:
            pass


async def test_what_came_is_handed_over_while_the_pipe_stays_open(
    pipe: tuple[int, int],
) -> None:
    read_end, write_end = pipe
    batches = StdinFeed(lines, size=1000, fd=read_end).batches()
    os.write(write_end, b"a\nb\n")
    assert await asyncio.wait_for(anext(batches), 5) == [b"a", b"b"]  # not 1000 of them
    os.write(write_end, b"c\n")
    assert await asyncio.wait_for(anext(batches), 5) == [b"c"]
    os.close(write_end)
    assert [batch async for batch in batches] == []


async def test_full_batches_then_the_rest_then_the_end(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    os.write(write_end, b"".join(b"%d\n" % n for n in range(7)))
    os.close(write_end)
    got = [batch async for batch in StdinFeed(lines, size=3, fd=read_end).batches()]
    assert got == [[b"0", b"1", b"2"], [b"3", b"4", b"5"], [b"6"]]


async def test_an_error_comes_after_the_lines_before_it(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    os.write(write_end, b"x\nboom\ny\n")
    batches = StdinFeed(lines, size=100, fd=read_end).batches()
    assert await anext(batches) == [b"x"]
    with pytest.raises(ValueError, match="a bad line"):
        await anext(batches)


async def test_a_stop_does_not_wait_for_an_idle_pipe(pipe: tuple[int, int]) -> None:
    read_end, _write_end = pipe  # open, nothing written
    stopped = asyncio.Event()
    batches = StdinFeed(lines, size=10, fd=read_end).batches()
    asyncio.get_running_loop().call_later(0.1, stopped.set)
    started = asyncio.get_running_loop().time()
    assert await unless_stopped(stopped, anext(batches)) is None
    assert asyncio.get_running_loop().time() - started < 1.0
