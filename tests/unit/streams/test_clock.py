"""The clock that ends the windows: wall time, or the newest event time (monotonic)."""

from __future__ import annotations

import time

import pytest

from streams.clock import Clock


def test_event_clock_follows_the_watermark_and_never_goes_back() -> None:
    marks: list[int | None] = [None, 1_000, 5_000, 3_000, None, 7_000]
    clock = Clock("event", lambda: marks[0])
    seen = []
    while marks:
        seen.append(clock.now_ms())
        marks.pop(0)
    # 3,000 and None: a rebalance took away the partition that held 5,000
    assert seen == [None, 1_000, 5_000, 5_000, 5_000, 7_000]


def test_wall_clock_is_now_and_keeps_the_watermark() -> None:
    clock = Clock("wall", lambda: 42)
    before = int(time.time() * 1000)
    now = clock.now_ms()
    after = int(time.time() * 1000)
    assert now is not None and before <= now <= after
    assert clock.watermark_ms() == 42


def test_unknown_mode() -> None:
    with pytest.raises(ValueError, match="clock must be 'wall' or 'event', not 'lunar'"):
        Clock("lunar", lambda: None)
