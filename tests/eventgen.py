"""Deterministic test traffic: valid events with duplicates, late and out-of-order
ones and follow churn, mixed with one or more invalid messages of every reason."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.events import Event, format_ts
from streams.json_bytes import kept

DAY_MS = 86_400_000


@dataclass
class Traffic:
    messages: list[bytes] = field(default_factory=list)  # in send order
    valid: list[dict[str, Any]] = field(default_factory=list)  # decoded, with ts_ms
    invalid: list[tuple[bytes, str]] = field(default_factory=list)  # (bytes, reason)


def event_to_json(event: Event) -> bytes:
    """An event as a producer sends it, in the contract's shape (ts as RFC 3339,
    millisecond precision)."""
    return kept(  # test suites keep thousands of these: ~200 B each, not ~4 KiB
        orjson.dumps(
            {
                "event_id": event.event_id,
                "ts": format_ts(event.ts_ms),
                "platform": event.platform,
                "community": event.community,
                "user_id": event.user_id,
                "type": event.type,
            }
        )
    )


def _ts_forms(rng: random.Random, ts_ms: int) -> tuple[Any, int]:
    """The same instant as RFC 3339, epoch milliseconds, or epoch seconds (int or .5)."""
    form = rng.random()
    if form < 0.5:
        return format_ts(ts_ms), ts_ms
    if form < 0.8:
        return ts_ms, ts_ms
    if form < 0.9:
        return ts_ms // 1000, ts_ms // 1000 * 1000
    half = ts_ms // 500 * 500
    return half / 1000, half


def invalid_messages(now_ms: int) -> list[tuple[bytes, str]]:
    good = {
        "event_id": "bad",
        "ts": format_ts(now_ms - 1000),
        "platform": "twitter",
        "community": "acme",
        "user_id": "u-bad",
        "type": "like",
    }

    def with_(**changes: Any) -> bytes:
        return orjson.dumps({**good, **changes})

    missing = dict(good)
    del missing["user_id"]
    return [
        (b"{not json", "not_json"),
        (b"\xff\xfe", "not_json"),
        (b"[1, 2, 3]", "not_object"),
        (b'"a string"', "not_object"),
        (orjson.dumps(missing), "missing_field"),
        (with_(community=None), "missing_field"),
        (with_(community="*"), "bad_field"),
        (with_(user_id=42), "bad_field"),
        (with_(platform="x" * 40), "bad_field"),
        (with_(type="poke"), "bad_type"),
        (with_(ts="yesterday"), "bad_timestamp"),
        (with_(ts=True), "bad_timestamp"),
        (with_(ts=now_ms + 2 * DAY_MS), "future_timestamp"),
        (with_(event_id="y" * 5000), "too_large"),
    ]


def make_traffic(
    seed: int, count: int, now_ms: int, *, communities: int = 24, users: int = 500
) -> Traffic:
    """``count`` valid events spread over the last ~40 days before ``now_ms``, denser
    near the end so every window (5m … 30d) has a different answer."""
    rng = random.Random(seed)
    platforms = ["twitter", "instagram"]
    names = [f"brand-{i:02d}" for i in range(communities)]
    weights = [1 / (i + 1) for i in range(communities)]
    types = (
        ["like"] * 8
        + ["comment"] * 3
        + ["share", "reply", "mention", "post", "view", "click", "follow", "follow", "unfollow"]
    )
    traffic = Traffic()
    bad = invalid_messages(now_ms)
    for i in range(count):
        span = rng.choice([5 * 60_000, 3_600_000, DAY_MS, 7 * DAY_MS, 40 * DAY_MS])
        ts, ts_ms = _ts_forms(rng, now_ms - int(rng.random() * span))
        event = {
            "event_id": f"e-{seed}-{i}",
            "ts": ts,
            "platform": rng.choice(platforms),
            "community": rng.choices(names, weights)[0],
            "user_id": f"u-{int(rng.paretovariate(1.2)) % users}",
            "type": rng.choice(types),
        }
        raw = orjson.dumps(event)
        traffic.messages.append(raw)
        traffic.valid.append({**event, "ts_ms": ts_ms})
        if rng.random() < 0.05:  # a redelivered duplicate, later in the stream
            traffic.messages.append(raw)
        if i % (count // len(bad) or 1) == 0 and bad:
            invalid, reason = bad.pop()
            traffic.messages.append(invalid)
            traffic.invalid.append((invalid, reason))
    # the newest event first, then the rest arrive late: out of order throughout
    newest = {
        "event_id": f"e-{seed}-newest",
        "ts": format_ts(now_ms),
        "platform": "twitter",
        "community": names[0],
        "user_id": "u-newest",
        "type": "post",
    }
    traffic.messages.insert(0, orjson.dumps(newest))
    traffic.valid.append({**newest, "ts_ms": now_ms})
    for invalid, reason in bad:
        traffic.messages.append(invalid)
        traffic.invalid.append((invalid, reason))
    return traffic
