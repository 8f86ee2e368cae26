"""Human durations ("5m", "1h", "30d") and the window labels Prometheus shows.

Windows are part of the metric contract (``window="5m"``), so the label is the
string the user configured, and the length is exact integer milliseconds so that
window membership is decided without float rounding.
"""

from __future__ import annotations

import re

#: The windows a worker keeps unless EM_WINDOWS says otherwise (every command
#: that shows windows defaults to this list).
DEFAULT_WINDOWS = "5m,1h,1d,7d,30d"

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = r"(\d+)\s*(ms|s|m|h|d|w)"
_DURATION = re.compile(rf"^\s*(?:{_PART}\s*)+$")


def parse_duration_ms(text: str) -> int:
    """Return the length of ``text`` ("90s", "5m", "7d", or compound: "7m30s", "1h 30m")
    in milliseconds."""
    if not _DURATION.match(text):
        raise ValueError(
            f"bad duration {text!r}: expected a number and a unit (ms, s, m, h, d, w), "
            "e.g. 5m or 7m30s"
        )
    value = sum(int(n) * _UNITS_MS[unit] for n, unit in re.findall(_PART, text))
    if value <= 0:
        raise ValueError(f"bad duration {text!r}: must be positive")
    return value


def parse_windows(text: str) -> dict[str, int]:
    """Parse "5m,1h,1d" into {label: milliseconds}, shortest first."""
    labels = [part.strip() for part in text.split(",") if part.strip()]
    if not labels:
        raise ValueError("no windows given: expected e.g. 5m,1h,1d,7d,30d")
    windows = {label: parse_duration_ms(label) for label in labels}
    return dict(sorted(windows.items(), key=lambda item: item[1]))


_SPOKEN = (("years", 365 * 86_400_000), ("days", 86_400_000), ("hours", 3_600_000))
_SPOKEN_SHORT = (("minutes", 60_000), ("seconds", 1_000))


def describe_ms(ms: int) -> str:
    """A length as people say it: "26 days", "3 hours", "90 seconds" (the largest
    unit that fits twice, rounded), for messages; never "2275136944s"."""
    for name, unit in (*_SPOKEN, *_SPOKEN_SHORT):
        if abs(ms) >= 2 * unit:
            return f"{round(ms / unit)} {name}"
    return f"{ms / 1000:g} seconds" if abs(ms) >= 1000 else f"{ms} ms"
