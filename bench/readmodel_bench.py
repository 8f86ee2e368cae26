"""Micro-benchmark of the read model's cost to the worker.

* the top-users observer (:class:`agents.top_users.TopUsersTally`), per event, on
  batches of 50 decoded events; taken every 20,000 events as the 1 s timer does at
  20,000 events/s, and never taken (Redis down: the pending dict only grows);
* one timer tick's Python work without Redis: planning the top-users flush for
  one second of traffic at 20,000 events/s, and building + encoding the partition
  snapshots of a state holding those users.

Run: ``[REDIS_URL=redis://…] .venv/bin/python bench/readmodel_bench.py [--events N]``;
best of 5 runs (with REDIS_URL: also 4 whole ticks against that Redis).

``--scale [--baseline DIR]``: a ``/metrics`` scrape and one read-model tick at
10,000 communities and 1M stored records (:mod:`bench.scale_ticks`), this tree and,
with ``--baseline``, another checkout in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.synthetic

from agents.readmodel import encode_snapshot  # noqa: E402
from agents.redis_snapshots import ReadModelWriter, build_snapshots  # noqa: E402
from agents.top_users import TopUsersTally, plan  # noqa: E402
from bench.synthetic import TYPE_WEIGHTS, TYPES, WINDOWS  # noqa: E402
from streams.clock import Clock  # noqa: E402
from streams.events import DEFAULT_ACTIVE_TYPES  # noqa: E402
from streams.state import WorkerState  # noqa: E402


def events(n: int, users: int, communities: int, seed: int) -> list[list]:
    rnd = random.Random(seed)
    names = [f"community-{i}" for i in range(communities)]
    weights = [1 / (i + 1) for i in range(communities)]
    start = 1_764_000_000_000
    comms = rnd.choices(names, weights, k=n)
    kinds = rnd.choices(TYPES, TYPE_WEIGHTS, k=n)
    return [
        [
            start + i * 50,
            rnd.choice(("instagram", "x")),
            comms[i],
            f"user-{rnd.randrange(users)}",
            kinds[i],
        ]
        for i in range(n)
    ]


def best(runs: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--communities", type=int, help="default 1,000; with --scale 10,000")
    parser.add_argument("--scale", action="store_true", help="scrape and tick at scale")
    parser.add_argument("--baseline", help="with --scale: a checkout to compare with")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=2_000, help="events per tick")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.scale:
        from bench.scale_ticks import compare

        compare(args)
        return
    args.communities = args.communities or 1_000
    evs = events(args.events, args.users, args.communities, 1)
    batches = [evs[i : i + 50] for i in range(0, len(evs), 50)]

    def observe() -> None:
        # the timer takes the tally every second: at 20k events/s, every 400 batches
        tally = TopUsersTally(DEFAULT_ACTIVE_TYPES)
        for i, batch in enumerate(batches):
            tally(0, batch)
            if i % 400 == 399:
                tally.take()

    def observe_unflushed() -> None:  # Redis down: the tally only grows
        tally = TopUsersTally(DEFAULT_ACTIVE_TYPES, max_pending=10**9)
        for batch in batches:
            tally(0, batch)

    def loop_only() -> None:  # the agent's own iteration, for reference
        for batch in batches:
            for _ts, _p, _c, _u, _t in batch:
                pass

    per_event = best(5, observe) / len(evs) * 1e9
    unflushed = best(5, observe_unflushed) / len(evs) * 1e9
    baseline = best(5, loop_only) / len(evs) * 1e9
    print(
        f"observer: {per_event:.0f} ns/event flushed every 20k events, {unflushed:.0f} ns/event "
        f"never flushed ({len(evs):,} events, {args.users:,} users; "
        f"a bare loop over the same batches: {baseline:.0f} ns/event)"
    )

    second = evs[:20_000]
    tally = TopUsersTally(DEFAULT_ACTIVE_TYPES)
    for i in range(0, len(second), 50):
        tally(0, second[i : i + 50])
    deltas = tally.take()
    t_plan = best(5, lambda: plan(deltas))
    sets = plan(deltas)
    print(
        f"flush plan for 1 s at 20k events/s: {t_plan * 1e3:.1f} ms "
        f"({len(deltas):,} deltas -> {len(sets):,} sorted sets)"
    )

    state = WorkerState(DEFAULT_ACTIVE_TYPES)
    for p in range(4):
        state.assign(p)
    for ts, platform, community, user, kind in evs:
        state.partitions[zlib.crc32(user.encode()) % 4].apply(platform, community, user, ts, kind)
    now = evs[-1][0]
    build_snapshots(state, now, WINDOWS, 4, 0)  # flush the lazy indexes first

    def snapshot() -> None:
        for snap in build_snapshots(state, now, WINDOWS, 4, 0):
            encode_snapshot(snap)

    t_snap = best(5, snapshot)
    size = sum(
        len(k) + len(v)
        for s in build_snapshots(state, now, WINDOWS, 4, 0)
        for k, v in encode_snapshot(s).items()
    )
    print(
        f"snapshots of 4 partitions ({len(state):,} records, {args.communities:,} "
        f"communities): {t_snap * 1e3:.1f} ms per tick, {size / 1024:.0f} KiB"
    )

    url = os.environ.get("REDIS_URL")
    if url:
        asyncio.run(redis_tick(url, state, evs))


async def redis_tick(url: str, state: WorkerState, evs: list[list]) -> None:
    """Whole ticks against a real Redis (app id ``bench-readmodel``): 1 s of traffic each."""
    tally = TopUsersTally(DEFAULT_ACTIVE_TYPES)
    writer = ReadModelWriter(
        redis_url=url,
        app_id="bench-readmodel",
        state=state,
        clock=Clock("event", state.watermark_ms),
        windows=WINDOWS,
        partitions=4,
        interval_s=1.0,
        tally=tally,
        top_n=100,
    )
    walls = []
    for r in range(4):
        for i in range(r * 20_000, (r + 1) * 20_000, 50):
            tally(0, evs[i : i + 50])
        t0 = time.perf_counter()
        ok = await writer.tick()
        walls.append(time.perf_counter() - t0)
        assert ok, "write failed"
    await writer.close()
    print(
        f"whole tick against Redis (1 s at 20k events/s): best {min(walls) * 1e3:.0f} ms, "
        f"worst {max(walls) * 1e3:.0f} ms wall"
    )


if __name__ == "__main__":
    main()
