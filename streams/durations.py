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
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")


def parse_duration_ms(text: str) -> int:
    """Return the length of ``text`` ("90s", "5m", "7d") in milliseconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(
            f"bad duration {text!r}: expected a number and a unit (ms, s, m, h, d, w), e.g. 5m"
        )
    value = int(match.group(1)) * _UNITS_MS[match.group(2)]
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
