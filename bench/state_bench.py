"""Micro-benchmark of the hot path (PartitionState.apply) and of one scrape.

1,000,000 synthetic events, 100,000 users, 1,000 communities with Zipf-ish
popularity, spread over 4 partitions like the by-user topic, event times mostly
increasing with some lateness. Events are generated before timing, so only apply
is measured. Run: ``.venv/bin/python bench/state_bench.py [--events N]``.
"""

from __future__ import annotations

import argparse
import random
import time
import zlib

from streams.events import DEFAULT_ACTIVE_TYPES
from streams.state import WorkerState

WINDOWS = {
    "5m": 300_000,
    "1h": 3_600_000,
    "1d": 86_400_000,
    "7d": 604_800_000,
    "30d": 2_592_000_000,
}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--communities", type=int, default=1_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--span-days", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rnd = random.Random(args.seed)
    communities = [f"community-{i}" for i in range(args.communities)]
    weights = [1 / (i + 1) for i in range(args.communities)]  # Zipf, s = 1
    platforms = ["instagram", "tiktok", "x"]
    users = [f"user-{i}" for i in range(args.users)]
    user_weights = [1 / (i + 1) ** 0.8 for i in range(args.users)]  # some heavy users
    n = args.events
    start_ms = 1_764_000_000_000
    step = args.span_days * 86_400_000 / n

    t0 = time.perf_counter()
    comm = rnd.choices(communities, weights, k=n)
    usr = rnd.choices(users, user_weights, k=n)
    kinds = rnd.choices(TYPES, TYPE_WEIGHTS, k=n)
    events = []
    for i in range(n):
        late = int(rnd.expovariate(1 / 5_000)) if rnd.random() < 0.1 else 0
        user = usr[i]
        events.append(
            (
                platforms[zlib.crc32(user.encode()) % 3] if i % 5 else rnd.choice(platforms),
                comm[i],
                user,
                int(start_ms + i * step) - late,
                kinds[i],
            )
        )
    partition_of = {u: zlib.crc32(u.encode()) % args.partitions for u in users}
    print(f"generated {n:,} events in {time.perf_counter() - t0:.1f}s")

    worker = WorkerState(DEFAULT_ACTIVE_TYPES)
    parts = [worker.assign(p) for p in range(args.partitions)]
    applies = [parts[partition_of[e[2]]].apply for e in events]
    changed = 0
    t0 = time.perf_counter()
    for apply, (platform, community, user, ts, kind) in zip(applies, events, strict=True):
        if apply(platform, community, user, ts, kind) is not None:
            changed += 1
    elapsed = time.perf_counter() - t0
    print(
        f"apply: {elapsed / n * 1e6:.2f} µs/event ({n / elapsed:,.0f} events/s), "
        f"{changed / n:.0%} changed a record, {len(worker):,} records"
    )

    now = worker.watermark_ms()
    assert now is not None
    t0 = time.perf_counter()
    for part in parts:
        part.flush()
    elapsed = time.perf_counter() - t0
    print(
        f"flush of all {changed:,} changes (index patching deferred from apply): "
        f"{elapsed * 1e3:.0f} ms, {elapsed / n * 1e6:.2f} µs/event"
    )
    scrape(worker, now, "scrape")

    # Steady state: one scrape interval's worth of new events (incl. late ones), then
    # a scrape that pays the deferred index updates.
    tail = events[-50_000:]
    t0 = time.perf_counter()
    for platform, community, user, ts, kind in tail:
        parts[partition_of[user]].apply(platform, community, user, ts + 60_000, kind)
    elapsed = time.perf_counter() - t0
    print(f"+{len(tail):,} events: apply {elapsed / len(tail) * 1e6:.2f} µs/event")
    now = worker.watermark_ms()
    assert now is not None
    active = scrape(worker, now, "scrape incl. flush")

    t0 = time.perf_counter()
    expired = sum(len(p.expired_keys(now, 7 * 86_400_000)) for p in parts)
    print(f"expired_keys (7d horizon): {1e3 * (time.perf_counter() - t0):.0f} ms, {expired:,} keys")
    star = {k: v for k, v in active.items() if k[1] == "*"}
    print("'*' active:", star)


def scrape(worker: WorkerState, now: int, what: str) -> dict:
    t0 = time.perf_counter()
    active = worker.active_counts(now, WINDOWS)
    t1 = time.perf_counter()
    followers = worker.follower_counts()
    t2 = time.perf_counter()
    print(
        f"{what}: active_counts {1e3 * (t1 - t0):.1f} ms ({len(active):,} keys), "
        f"follower_counts {1e3 * (t2 - t1):.1f} ms ({len(followers):,} keys), "
        f"total {1e3 * (t2 - t0):.1f} ms"
    )
    return active


if __name__ == "__main__":
    main()
