"""Progress messages, flushed at once so they interleave correctly with child output."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    print(message, flush=True)


def warn(message: str) -> None:
    print(f"stack: {message}", file=sys.stderr, flush=True)
