"""A progress line on stderr for long sends: done/total, events/s, ETA and counters.

Own code rather than rich's live display: it must cost nothing in a loop that runs
at 100k+ events/s (callers call :meth:`Progress.update` as often as they like; it
renders at most every ``interval`` seconds) and it must stay readable when stderr is
a log file or a CI pipe — then it prints a plain line every few seconds instead of
redrawing one.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_count(n: float) -> str:
    """12345678 → 12.3M; short enough for a status line."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            return f"{n / limit:.1f}{suffix}"
    return f"{n:.0f}"


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class Progress:
    """``update(done, position=…, **counters)``; ``close()`` prints the final line.

    ``total`` and ``position`` may be in another unit than ``done`` (bytes of a
    file, say): the bar and ETA follow position/total, the rate follows ``done``.
    """

    def __init__(
        self,
        label: str,
        total: float | None = None,
        stream: TextIO | None = None,
        interval: float | None = None,
        unit: str = "events",
        enabled: bool = True,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.2 if self.tty else 5.0)
        self.unit = unit
        self.enabled = enabled
        self.started = time.monotonic()
        self._next = self.started + self.interval
        self._done = 0
        self._position: float | None = None
        self._counters: dict[str, int] = {}
        self._width = 0
        #: free text at the end of the line, e.g. what a paced replay is waiting for
        self.note = ""

    def update(self, done: int, position: float | None = None, **counters: int) -> None:
        """Record progress; render if the interval has passed. Cheap when it has not."""
        self._done = done
        if position is not None:
            self._position = position
        if counters:
            self._counters.update(counters)
        now = time.monotonic()
        if now >= self._next and self.enabled:
            self._next = now + self.interval
            self._render(now, final=False)

    def close(self) -> None:
        if self.enabled:
            self._render(time.monotonic(), final=True)

    def line(self, now: float | None = None) -> str:
        """The status text (without bar decoration); public for tests."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        rate = self._done / elapsed
        parts = [f"{self.label}: {format_count(self._done)} {self.unit}"]
        fraction = self._fraction()
        if fraction is not None:
            parts.append(f"{fraction * 100:5.1f}%")
        parts.append(f"{format_count(rate)}/s")
        parts.append(f"elapsed {format_seconds(elapsed)}")
        if fraction is not None and 0 < fraction < 1:
            parts.append(f"ETA {format_seconds(elapsed * (1 - fraction) / fraction)}")
        parts.extend(f"{name} {format_count(value)}" for name, value in self._counters.items())
        if self.note:
            parts.append(self.note)
        return "  ".join(parts)

    def _fraction(self) -> float | None:
        if not self.total:
            return None
        position = self._done if self._position is None else self._position
        return min(1.0, max(0.0, position / self.total))

    def _render(self, now: float, final: bool) -> None:
        text = self.line(now)
        if self.tty:
            fraction = self._fraction()
            if fraction is not None:
                filled = int(fraction * 20)
                text = "[" + "#" * filled + "-" * (20 - filled) + "] " + text
            pad = max(0, self._width - len(text))
            self._width = len(text)
            self.stream.write("\r" + text + " " * pad + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
