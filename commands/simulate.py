"""``engagement-monitor simulate``: realistic synthetic traffic.

The shape matters more than the volume, because it is what the dashboards and alerts
are judged on:

- community sizes are Zipf-distributed (a few big brands, a long tail);
- most users only follow and rarely act; a small core acts a lot — so followers far
  outnumber active users, as on real platforms;
- the rate follows a daily cycle (a sinusoid on the hour of the *event* time, peak at
  15:00 UTC), with occasional bursts in one community and some follow/unfollow churn;
- ``--drop`` cuts one community's traffic after a while: the "steady, then one
  community drops" scenario the alerting demo and end-to-end tests need;
- ``--invalid-share`` mixes in broken messages of known kinds, so the DLQ path is
  exercised too.

:class:`Simulator` is pure (a seeded ``random.Random``, no clock, no I/O): the same
seed and start give the same messages, which the unit tests check. The command paces
it in real time, or not at all (``--no-pace``), and writes to Kafka or a file.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import math
import random
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

import orjson

from agents.kafka_out import BatchWriter
from agents.kafka_security import failure
from commands.progress import Progress
from commands.sources import TsFormatter, parse_time_bound
from streams import settings as settings_mod
from streams.durations import parse_duration_ms

#: (type, weight) of live events: likes ≫ views > comments > shares/replies > …
TYPE_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("like", 52.0),
    ("view", 14.0),
    ("comment", 10.0),
    ("share", 6.0),
    ("reply", 5.0),
    ("click", 5.0),
    ("mention", 3.0),
    ("post", 2.0),
    ("follow", 1.8),
    ("unfollow", 1.2),
)
PLATFORM_WEIGHTS: tuple[tuple[str, float], ...] = (("twitter", 0.55), ("instagram", 0.45))
#: Kinds of broken messages and the reason the worker must give for each.
INVALID_KINDS: tuple[str, ...] = (
    "not_json",
    "missing_field",
    "bad_type",
    "bad_timestamp",
    "future_timestamp",
)
#: Activity tiers: (share of users, relative activity). 4% core, 16% casual, 80% lurkers.
ACTIVITY_TIERS: tuple[tuple[float, float], ...] = ((0.04, 60.0), (0.16, 4.0), (0.80, 0.05))
_DAY_MS = 86_400_000
_FUTURE_MS = 3650 * _DAY_MS  # far enough that every clock calls it future


@dataclass(frozen=True)
class Drop:
    """From ``after_ms`` of event time past the start, keep ``factor`` of the
    community's traffic (0: it stops)."""

    community: str
    factor: float = 0.0
    after_ms: int = 0

    @classmethod
    def parse(cls, text: str) -> Drop:
        """``COMMUNITY[:FACTOR][@AFTER]``, e.g. ``brand-03``, ``brand-03:0.2@5m``."""
        rest, _, after = text.partition("@")
        name, _, factor = rest.partition(":")
        if not name:
            raise ValueError(f"bad --drop {text!r}: expected COMMUNITY[:FACTOR][@AFTER]")
        try:
            value = float(factor) if factor else 0.0
        except ValueError:
            raise ValueError(f"bad --drop factor {factor!r}: expected a number 0..1") from None
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"bad --drop factor {value}: expected 0..1")
        return cls(name, value, parse_duration_ms(after) if after else 0)


@dataclass
class SimConfig:
    communities: int = 50
    users: int = 20_000
    rate: float = 200.0  # mean events/s of event time
    invalid_share: float = 0.0
    seed: int = 1
    zipf_s: float = 1.1
    daily_amplitude: float = 0.5
    burst_every_s: float = 900.0  # mean time between bursts
    burst_boost: tuple[float, float] = (5.0, 20.0)
    burst_seconds: tuple[float, float] = (30.0, 180.0)
    history_ms: int = 60 * _DAY_MS  # preloaded follows are spread over this past
    drops: list[Drop] = field(default_factory=list)

    def check(self) -> None:
        if self.communities < 1 or self.users < 1:
            raise ValueError("--communities and --users must be at least 1")
        if self.rate <= 0:
            raise ValueError("--rate must be positive")
        if not 0.0 <= self.daily_amplitude < 1.0:
            raise ValueError(
                "--daily-amplitude must be within 0..1 (1 would stop traffic at 03:00)"
            )
        if not 0.0 <= self.invalid_share <= 1.0:
            raise ValueError("--invalid-share must be within 0..1")


def community_name(index: int) -> str:
    """brand-00 is the biggest community, brand-01 the next, …"""
    return f"brand-{index:02d}"


#: One generated message: (value, event time ms, key, intended invalid reason or None).
Message = tuple[bytes, int, bytes | None, str | None]


class Simulator:
    """Generates messages in event-time order; no clock and no I/O."""

    def __init__(self, config: SimConfig, start_ms: int) -> None:
        config.check()
        self.cfg = config
        self.start_ms = start_ms
        self.rng = random.Random(config.seed)
        self.names = [community_name(i) for i in range(config.communities)]
        sizes = [1.0 / (i + 1) ** config.zipf_s for i in range(config.communities)]
        self.size_weights = sizes
        self._fmt_ts = TsFormatter()
        self._clock = float(start_ms)
        self._counter = 0
        self._burst: tuple[int, float, float] | None = None  # (community, boost, end_ms)
        self.activity = self._activity_weights()
        self.members = self._memberships()
        self._member_cum = [
            list(itertools.accumulate(self.activity[u] for u, _ in members))
            for members in self.members
        ]
        self._drops = {
            self.names.index(d.community): d for d in config.drops if d.community in self.names
        }
        unknown = [d.community for d in config.drops if d.community not in self.names]
        if unknown:
            raise ValueError(f"--drop: unknown communities {unknown} (they are brand-00…)")
        self._types = [t for t, _ in TYPE_WEIGHTS]
        self._type_cum = list(itertools.accumulate(w for _, w in TYPE_WEIGHTS))
        self._platforms = [p for p, _ in PLATFORM_WEIGHTS]
        self._platform_cum = list(itertools.accumulate(w for _, w in PLATFORM_WEIGHTS))

    # population --------------------------------------------------------------

    def _activity_weights(self) -> list[float]:
        weights = []
        for _ in range(self.cfg.users):
            roll = self.rng.random()
            for share, activity in ACTIVITY_TIERS:
                if roll < share:
                    weights.append(activity)
                    break
                roll -= share
            else:
                weights.append(ACTIVITY_TIERS[-1][1])
        return weights

    def _memberships(self) -> list[list[tuple[int, int]]]:
        """Each user follows 1–3 communities, chosen by community size, on one platform
        each; a list of (user, platform index) per community."""
        members: list[list[tuple[int, int]]] = [[] for _ in range(self.cfg.communities)]
        cum = list(itertools.accumulate(self.size_weights))
        for user in range(self.cfg.users):
            count = 1 + int(self.rng.random() < 0.35) + int(self.rng.random() < 0.1)
            chosen = {bisect.bisect(cum, self.rng.random() * cum[-1]) for _ in range(count)}
            for community in sorted(chosen):
                platform = 0 if self.rng.random() < PLATFORM_WEIGHTS[0][1] else 1
                members[min(community, self.cfg.communities - 1)].append((user, platform))
        for index, group in enumerate(members):
            if not group:  # every community has at least one follower
                members[index].append((self.rng.randrange(self.cfg.users), 0))
        return members

    @property
    def followers(self) -> int:
        """Follow relations at the start (user × community × platform)."""
        return sum(len(group) for group in self.members)

    # messages ----------------------------------------------------------------

    def preload(self) -> Iterator[Message]:
        """A ``follow`` for every membership, at times spread over ``history`` before the
        start, oldest first: the follower base a live platform already has."""
        stamps = []
        for community, group in enumerate(self.members):
            for user, platform in group:
                offset = self.rng.randrange(1, self.cfg.history_ms)
                stamps.append((self.start_ms - offset, community, user, platform))
        stamps.sort()
        for ts_ms, community, user, platform in stamps:
            self._counter += 1
            yield (
                self._encode(ts_ms, self._platforms[platform], community, user, "follow"),
                ts_ms,
                f"u-{user}".encode(),
                None,
            )

    def intensity(self, ts_ms: float) -> float:
        """Relative rate at an event time: the daily sinusoid (mean 1, peak at 15:00
        UTC) times the extra traffic of a running burst."""
        hour = (ts_ms % _DAY_MS) / 3_600_000
        daily = 1.0 + self.cfg.daily_amplitude * math.sin(2 * math.pi * (hour - 9.0) / 24.0)
        burst = 1.0
        if self._burst is not None:
            community, boost, _end = self._burst
            total = sum(self.size_weights)
            burst = (total + self.size_weights[community] * (boost - 1.0)) / total
        return daily * burst

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        while True:
            gap_ms = 1000.0 / (self.cfg.rate * self.intensity(self._clock))
            self._clock += gap_ms
            ts_ms = int(self._clock)
            self._update_burst(ts_ms, gap_ms)
            message = self._event(ts_ms)
            if message is not None:
                return message

    def _update_burst(self, ts_ms: int, gap_ms: float) -> None:
        if self._burst is not None and ts_ms >= self._burst[2]:
            self._burst = None
        if self.cfg.burst_every_s <= 0:
            return
        if self._burst is None and self.rng.random() < gap_ms / (self.cfg.burst_every_s * 1000):
            community = self.rng.randrange(self.cfg.communities)
            boost = self.rng.uniform(*self.cfg.burst_boost)
            length_ms = self.rng.uniform(*self.cfg.burst_seconds) * 1000
            self._burst = (community, boost, ts_ms + length_ms)

    def _pick_community(self) -> int:
        weights = self.size_weights
        if self._burst is not None:
            weights = list(weights)
            weights[self._burst[0]] *= self._burst[1]
        return self.rng.choices(range(len(weights)), weights=weights)[0]

    def _event(self, ts_ms: int) -> Message | None:
        community = self._pick_community()
        drop = self._drops.get(community)
        if drop is not None and ts_ms - self.start_ms >= drop.after_ms:
            if self.rng.random() >= drop.factor:
                return None  # this community's traffic is cut: nothing replaces it
        kind = self._types[bisect.bisect(self._type_cum, self.rng.random() * self._type_cum[-1])]
        if kind == "follow":  # churn: anyone may follow, on any platform
            user = self.rng.randrange(self.cfg.users)
            platform = self._platforms[
                bisect.bisect(self._platform_cum, self.rng.random() * self._platform_cum[-1])
            ]
        elif kind == "unfollow":  # churn: mostly lurkers leave, so uniform over followers
            user, platform_index = self.rng.choice(self.members[community])
            platform = self._platforms[platform_index]
        else:
            cum = self._member_cum[community]
            index = bisect.bisect(cum, self.rng.random() * cum[-1])
            user, platform_index = self.members[community][min(index, len(cum) - 1)]
            platform = self._platforms[platform_index]
        self._counter += 1
        value = self._encode(ts_ms, platform, community, user, kind)
        key = f"u-{user}".encode()
        if self.cfg.invalid_share and self.rng.random() < self.cfg.invalid_share:
            reason = self.rng.choice(INVALID_KINDS)
            return self._break(reason, ts_ms, platform, community, user, kind), ts_ms, key, reason
        return value, ts_ms, key, None

    def _fields(
        self, ts_ms: int, platform: str, community: int, user: int, kind: str
    ) -> dict[str, object]:
        return {
            "event_id": f"sim-{self.cfg.seed}-{self._counter}",
            "ts": self._fmt_ts(ts_ms),
            "platform": platform,
            "community": self.names[community],
            "user_id": f"u-{user}",
            "type": kind,
        }

    def _encode(self, ts_ms: int, platform: str, community: int, user: int, kind: str) -> bytes:
        return orjson.dumps(self._fields(ts_ms, platform, community, user, kind))

    def _break(
        self, reason: str, ts_ms: int, platform: str, community: int, user: int, kind: str
    ) -> bytes:
        """A message the worker must refuse with ``reason``."""
        fields = self._fields(ts_ms, platform, community, user, kind)
        if reason == "not_json":
            return orjson.dumps(fields)[: self.rng.randrange(5, 40)]
        if reason == "missing_field":
            del fields[self.rng.choice(("event_id", "ts", "community", "user_id", "type"))]
        elif reason == "bad_type":
            fields["type"] = self.rng.choice(("poke", "LIKE", "retweet", ""))
        elif reason == "bad_timestamp":
            fields["ts"] = self.rng.choice(("yesterday", "2026-13-45T99:00:00Z", "12/01/2026", -5))
        elif reason == "future_timestamp":
            fields["ts"] = self._fmt_ts(ts_ms + _FUTURE_MS)
        return orjson.dumps(fields)


# The command -------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--communities", type=int, default=50, help="communities (default: 50)")
    parser.add_argument("--users", type=int, default=20_000, help="users (default: 20000)")
    parser.add_argument(
        "--rate",
        type=float,
        default=200.0,
        help="mean events per second of event time (default: 200)",
    )
    parser.add_argument(
        "--duration", help="stop after this much event time, e.g. 10m (default: run until Ctrl-C)"
    )
    parser.add_argument(
        "--count", type=int, help="stop after N live events (preloaded follows not counted)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    parser.add_argument(
        "--start", help="event time of the first event: RFC 3339, epoch s, -2h, now (default: now)"
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="event time runs this many times faster than the wall clock (default: 1)",
    )
    parser.add_argument(
        "--no-pace",
        action="store_true",
        help="do not sleep: generate as fast as possible (timestamps stay 1/rate apart)",
    )
    parser.add_argument(
        "--invalid-share",
        type=float,
        default=0.0,
        help="share of broken messages, e.g. 0.01 (default: 0)",
    )
    parser.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="COMMUNITY[:FACTOR][@AFTER]",
        help="after AFTER of event time (default 0) keep FACTOR (default 0) of the "
        "community's traffic, e.g. brand-03@5m or brand-00:0.2@10m; repeatable",
    )
    parser.add_argument(
        "--daily-amplitude",
        type=float,
        default=0.5,
        help="depth of the daily cycle: 0 (flat) to below 1 (default: 0.5)",
    )
    parser.add_argument(
        "--burst-every",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="mean event-time seconds between bursts; 0: no bursts (default: 900)",
    )
    parser.add_argument(
        "--no-preload-follows",
        dest="preload",
        action="store_false",
        help="do not send the initial follow of every membership first",
    )
    parser.add_argument(
        "--history",
        default="60d",
        help="preloaded follows are spread over this much time before the start (default: 60d)",
    )
    parser.add_argument(
        "--output", metavar="FILE.jsonl", help="write events to a file instead of Kafka"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    settings_mod.add_arguments(
        parser, names=("kafka_bootstrap_servers", "input_topic", "dlq_topic")
    )


def config_from_args(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        communities=args.communities,
        users=args.users,
        rate=args.rate,
        invalid_share=args.invalid_share,
        seed=args.seed,
        history_ms=parse_duration_ms(args.history),
        daily_amplitude=args.daily_amplitude,
        burst_every_s=args.burst_every,
        drops=[Drop.parse(text) for text in args.drop],
    )


def run(args: argparse.Namespace) -> int:
    conf = settings_mod.from_args(args)
    now_ms = int(time.time() * 1000)
    start_ms = now_ms if args.start is None else parse_time_bound(args.start, now_ms)
    if args.speed <= 0:
        raise ValueError("--speed must be positive")
    sim = Simulator(config_from_args(args), start_ms)
    end_ms = None if args.duration is None else start_ms + parse_duration_ms(args.duration)
    runner = _Runner(sim, args, end_ms)
    if not args.quiet:
        top = ", ".join(
            f"{sim.names[i]} {len(sim.members[i])}" for i in range(min(5, len(sim.names)))
        )
        print(
            f"simulate: {sim.cfg.users} users, {sim.cfg.communities} communities, "
            f"{sim.followers} follows (largest: {top})",
            file=sys.stderr,
        )
    if args.output:
        with open(args.output, "wb") as out:
            return runner.to_file(out)
    from aiokafka.errors import KafkaError

    try:
        return asyncio.run(runner.to_kafka(conf.kafka_bootstrap_servers, conf.input_topic))
    except KafkaError as exc:
        print(f"simulate: Kafka at {conf.kafka_bootstrap_servers}: {failure(exc)}", file=sys.stderr)
        return 1


class _Runner:
    """Drives a :class:`Simulator`: pacing, stop conditions, progress, output."""

    def __init__(self, sim: Simulator, args: argparse.Namespace, end_ms: int | None) -> None:
        self.sim = sim
        self.args = args
        self.end_ms = end_ms
        self.live = 0
        self.preloaded = 0
        self.invalid = 0
        self.stopping = False
        total = args.count
        self.progress = Progress(
            "simulate", total=total, enabled=not args.quiet, unit="live events"
        )
        self._wall0 = time.monotonic()

    def messages(self) -> Iterator[tuple[Message, bool]]:
        """(message, is_live) until a stop condition; preloaded follows first."""
        if self.args.preload:
            for message in self.sim.preload():
                if self.stopping:
                    return
                self.preloaded += 1
                yield message, False
        for message in self.sim:
            if self.stopping:
                return
            if self.args.count is not None and self.live >= self.args.count:
                return
            if self.end_ms is not None and message[1] >= self.end_ms:
                return
            self.live += 1
            if message[3] is not None:
                self.invalid += 1
            yield message, True

    def delay(self, ts_ms: int) -> float:
        """Seconds to wait before sending an event of time ``ts_ms`` (0: late or no pacing)."""
        if self.args.no_pace:
            return 0.0
        due = self._wall0 + (ts_ms - self.sim.start_ms) / 1000 / self.args.speed
        return due - time.monotonic()

    def _tick(self) -> None:
        self.progress.update(self.live, preloaded=self.preloaded, invalid=self.invalid)

    def to_file(self, out: IO[bytes]) -> int:
        try:
            for (value, ts_ms, _key, _reason), live in self.messages():
                if live:
                    wait = self.delay(ts_ms)
                    if wait > 0:
                        out.flush()
                        time.sleep(wait)
                out.write(value + b"\n")
                self._tick()
        except KeyboardInterrupt:
            self.stopping = True
        self.progress.close()
        self._summary(sent=self.live + self.preloaded, failed=0)
        return 0

    async def to_kafka(self, bootstrap: str, topic: str) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self._stop)
        loop.add_signal_handler(signal.SIGTERM, self._stop)
        async with BatchWriter(bootstrap, topic, client_id="engagement-monitor-simulate") as writer:
            for (value, ts_ms, key, _reason), live in self.messages():
                if live:
                    wait = self.delay(ts_ms)
                    if wait > 0.002:
                        await asyncio.sleep(wait)
                if writer.append(value, key, ts_ms):
                    await writer.drain()
                if (self.live + self.preloaded) % 512 == 0:
                    self._tick()
                    await asyncio.sleep(0)  # let the Ctrl-C handler and the linger run
        self.progress.close()
        self._summary(sent=writer.sent, failed=writer.failed)
        for error in writer.errors[:5]:
            print(f"simulate: {error}", file=sys.stderr)
        return 1 if writer.failed else (130 if self.stopping else 0)

    def _stop(self) -> None:
        self.stopping = True

    def _summary(self, sent: int, failed: int) -> None:
        seconds = time.monotonic() - self._wall0
        print(
            f"simulate: {self.live} live events ({self.invalid} invalid) + {self.preloaded} "
            f"preloaded follows; sent {sent}, failed {failed}, {seconds:.1f}s",
            file=sys.stderr,
        )
