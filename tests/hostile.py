"""Hostile payloads for fuzzing the worker: random bytes, truncated and deeply nested
JSON, wrong types in every field, huge numbers, odd Unicode, duplicate keys,
oversized records and mutated valid events — deterministic for a seed.

Which payloads are valid is decided here with the worker's own parser, at two
clock readings (now, and ``margin_ms`` later): a payload whose verdict depends on
when the worker reads it (a timestamp at the edge of the future tolerance or of
the maximum age) is left out, so the expected counts cannot depend on timing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.events import REQUIRED_FIELDS, Event, InvalidEvent, Limits, format_ts, parse_event

CODECS = (None, "gzip", "snappy", "lz4", "zstd")
DAY_MS = 86_400_000


@dataclass
class Fuzz:
    payloads: list[tuple[bytes, str | None]] = field(default_factory=list)  # (value, codec)
    valid: list[Event] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)


def _nested(depth: int, rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def _odd_value(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            True,
            0,
            -1,
            2**63 - 1,
            -(2**63),
            2**64 - 1,
            1e308,
            -1e308,
            0.5,
            "",
            "x" * rng.randrange(1, 300),
            [],
            [1, [2, [3]]],
            {},
            {"k": "v"},
            "\u202eevil",
            "a\u200bb",
            "line\u2028sep",
            "c\x85d",
            "\udfff"[:0] + "Cafe\u0301",
            "[/bold]",
            "[link=http://x]y[/link]",
            "\x00",
        ]
    )


class Generator:
    def __init__(self, seed: int, now_ms: int) -> None:
        self.rng = random.Random(seed)
        self.now_ms = now_ms
        self.users = [f"u-{i}" for i in range(400)]
        self.communities = [f"brand-{i:02d}" for i in range(30)] + ["Café", "ж-club"]

    def valid(self) -> dict[str, Any]:
        rng = self.rng
        span = rng.choice([300_000, 3_600_000, DAY_MS, 7 * DAY_MS, 40 * DAY_MS])
        ts_ms = self.now_ms - int(rng.random() * span)
        return {
            "event_id": f"e-{rng.randrange(10**9)}",
            "ts": format_ts(ts_ms) if rng.random() < 0.7 else ts_ms,
            "platform": rng.choice(["twitter", "instagram", "tiktok"]),
            "community": rng.choice(self.communities),
            "user_id": rng.choice(self.users),
            "type": rng.choice(["like", "comment", "share", "view", "follow", "unfollow", "post"]),
        }

    def hostile(self) -> bytes:
        rng = self.rng
        kind = rng.randrange(9)
        base = self.valid()
        if kind == 0:  # random bytes
            return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
        if kind == 1:  # truncated JSON
            raw = orjson.dumps(base)
            return raw[: rng.randrange(len(raw))]
        if kind == 2:  # deep nesting in any field, around orjson's limit
            name = rng.choice(REQUIRED_FIELDS)
            raw = orjson.dumps({**base, name: 0})
            return raw.replace(
                f'"{name}":0'.encode(),
                f'"{name}":'.encode() + _nested(rng.randrange(900, 1100), rng),
            )
        if kind == 3:  # wrong types / odd values in every field
            return orjson.dumps({**base, rng.choice(REQUIRED_FIELDS): _odd_value(rng)})
        if kind == 4:  # huge numbers as raw JSON
            number = rng.choice(
                [b"1e400", b"-1e400", b"9" * 40, b"1" + b"0" * 5000, b"-0", b"1e-400"]
            )
            return orjson.dumps({**base, "ts": 0}).replace(b'"ts":0', b'"ts":' + number)
        if kind == 5:  # duplicate keys
            name = rng.choice(REQUIRED_FIELDS)
            return orjson.dumps(base)[:-1] + f',"{name}":"dup"'.encode() + b"}"
        if kind == 6:  # bytes flipped, cut or inserted
            mutated = bytearray(orjson.dumps(base))
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            return bytes(mutated)
        if kind == 7:  # not an object, or extra junk
            return rng.choice([b"[]", b"null", b'"s"', b"1", orjson.dumps(base) + b"x", b"{}"])
        # just over the size limit
        return orjson.dumps({**base, "pad": "p" * rng.randrange(4000, 6000)})


def classify(value: bytes, now_ms: int, margin_ms: int) -> Event | str | None:
    """The event or the reason — None when the verdict depends on the read time."""
    verdicts: list[Event | str] = []
    for now in (now_ms, now_ms + margin_ms):
        try:
            verdicts.append(parse_event(value, now, Limits()))
        except InvalidEvent as exc:
            verdicts.append(exc.reason)
    return verdicts[0] if verdicts[0] == verdicts[1] else None


def make_fuzz(
    seed: int, hostile: int, valid: int, now_ms: int, margin_ms: int = 30 * 60_000
) -> Fuzz:
    """``hostile`` + ``valid`` payloads in random order, each with a codec."""
    gen = Generator(seed, now_ms)
    rng = gen.rng
    kinds = [True] * hostile + [False] * valid
    rng.shuffle(kinds)
    fuzz = Fuzz()
    for is_hostile in kinds:
        value = gen.hostile() if is_hostile else orjson.dumps(gen.valid())
        verdict = classify(value, now_ms, margin_ms)
        if verdict is None:
            continue
        if isinstance(verdict, Event):
            fuzz.valid.append(verdict)
        else:
            fuzz.reasons[verdict] = fuzz.reasons.get(verdict, 0) + 1
        fuzz.payloads.append((value, rng.choice(CODECS)))
    return fuzz


def oversized(now_ms: int) -> list[tuple[bytes, str | None, int]]:
    """(value, codec, size): records over every size limit the DLQ path meets — one
    far larger decompressed than the producer's request limit (gzip makes it tiny
    on the wire), and one within 200 bytes of the broker's 1 MiB record limit."""
    event = orjson.dumps(
        {
            "event_id": "big",
            "ts": format_ts(now_ms),
            "platform": "twitter",
            "community": "brand-00",
            "user_id": "u-1",
            "type": "like",
        }
    )
    huge = event[:-1] + b',"pad":"' + b"a" * 6_000_000 + b'"}'
    near = event[:-1] + b',"pad":"' + b"b" * (1_048_400 - len(event) - 9) + b'"}'
    return [(huge, "gzip", len(huge)), (near, None, len(near)), (huge[:100_000], "zstd", 100_000)]
