"""What the state micro-benchmarks feed the state: the windows and the event-type mix."""

from __future__ import annotations

from streams.durations import DEFAULT_WINDOWS, parse_windows

#: The worker's default windows, label -> milliseconds.
WINDOWS = parse_windows(DEFAULT_WINDOWS)
#: Event types and their weights in the synthetic traffic (likes and views dominate).
TYPES = [
    "post",
    "comment",
    "reply",
    "like",
    "share",
    "mention",
    "click",
    "view",
    "follow",
    "unfollow",
]
TYPE_WEIGHTS = [5, 10, 5, 30, 5, 2, 15, 25, 2, 1]
