"""Micro-benchmark of the hot path (PartitionState.apply) and of one scrape.

1,000,000 synthetic events, 100,000 users, 1,000 communities with Zipf-ish
popularity, spread over 4 partitions like the by-user topic, event times mostly
increasing with some lateness. Events are generated before timing, so only apply
is measured. Run: ``.venv/bin/python bench/state_bench.py [--events N]``.

Before/after in one run: ``--baseline DIR`` loads DIR/streams/state.py (e.g. a worktree
of main) beside this tree's, and measures both ``--rounds`` times, alternating, in CPU
time (steadier than wall time on a shared machine): apply, the first flush (every
record new), a steady interval (50,000 more events and their flush), one scrape (every
count the module has), and the traced memory per stored record (tracemalloc; event
times are fresh ints, as decoded ones are in the worker). ``--memory-only`` skips the
timings: memory per stored record of both trees and their ratio, e.g. at 1M records
``--events 1150000 --users 400000`` and at 5M ``--events 5600000 --users 2000000``.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import time
import tracemalloc
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.synthetic

from bench.synthetic import TYPE_WEIGHTS, TYPES, WINDOWS  # noqa: E402
from streams.events import DEFAULT_ACTIVE_TYPES  # noqa: E402
from streams.state import WorkerState  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--communities", type=int, default=1_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--span-days", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baseline", help="a checkout whose streams/state.py to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-only", action="store_true", help="with --baseline")
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
    if args.baseline:
        compare(events, partition_of, args)
        return

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


def load_baseline(directory: str) -> ModuleType:
    path = Path(directory).resolve() / "streams" / "state.py"
    spec = importlib.util.spec_from_file_location("baseline_state", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_state"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def measure(module: Any, events: list, partition_of: dict, partitions: int) -> list[float]:
    """[apply µs/event, first flush µs/event, steady apply+flush µs/event, scrape ms]."""
    clock = time.process_time
    worker = module.WorkerState(DEFAULT_ACTIVE_TYPES)
    parts = [worker.assign(p) for p in range(partitions)]
    t0 = clock()
    for platform, community, user, ts, kind in events:
        parts[partition_of[user]].apply(platform, community, user, ts, kind)
    t1 = clock()
    for part in parts:
        part.flush()
    t2 = clock()
    tail = events[-50_000:]
    for platform, community, user, ts, kind in tail:
        parts[partition_of[user]].apply(platform, community, user, ts + 60_000, kind)
    for part in parts:
        part.flush()
    t3 = clock()
    now = worker.watermark_ms()
    worker.active_counts(now, WINDOWS)
    worker.follower_counts()
    if hasattr(worker, "lifecycle_counts"):
        worker.lifecycle_counts(now, WINDOWS)
    t4 = clock()
    n = len(events)
    return [
        (t1 - t0) / n * 1e6,
        (t2 - t1) / n * 1e6,
        (t3 - t2) / len(tail) * 1e6,
        (t4 - t3) * 1e3,
    ]


def bytes_per_record(
    module: Any, events: list, partition_of: dict, partitions: int
) -> tuple[float, int]:
    """Traced bytes per stored record once every event is applied and flushed, and
    the number of records."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    worker = module.WorkerState(DEFAULT_ACTIVE_TYPES)
    parts = [worker.assign(p) for p in range(partitions)]
    for platform, community, user, ts, kind in events:
        parts[partition_of[user]].apply(platform, community, user, ts + 0, kind)
    for part in parts:
        part.flush()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / len(worker), len(worker)


def compare_memory(
    trees: dict[str, Any], events: list, partition_of: dict, partitions: int
) -> None:
    """Traced bytes per stored record of each tree (one run each: tracemalloc counts
    allocations, so it does not vary with the load) and their ratio."""
    memory = {}
    for name, module in trees.items():
        memory[name], records = bytes_per_record(module, events, partition_of, partitions)
        print(f"{name}: {memory[name]:.0f} B per stored record ({records:,} records)")
    print(f"this tree / baseline: memory per record {memory['this tree'] / memory['baseline']:.3f}")


def compare(events: list, partition_of: dict, args: argparse.Namespace) -> None:
    import streams.state as this

    trees = {"baseline": load_baseline(args.baseline), "this tree": this}
    if args.memory_only:
        compare_memory(trees, events, partition_of, args.partitions)
        return
    results: dict[str, list[list[float]]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, module in trees.items():
            results[name].append(measure(module, events, partition_of, args.partitions))
    memory = {
        name: bytes_per_record(module, events, partition_of, args.partitions)[0]
        for name, module in trees.items()
    }
    medians = {}
    for name, runs in results.items():
        med = [statistics.median(col) for col in zip(*runs, strict=True)]
        medians[name] = med
        print(
            f"{name}: apply {med[0]:.2f} µs/event, first flush {med[1]:.2f} µs/event, "
            f"steady apply+flush {med[2]:.2f} µs/event, scrape {med[3]:.0f} ms, "
            f"{memory[name]:.0f} B per stored record (median of {args.rounds}, CPU time)"
        )
    base, new = medians["baseline"], medians["this tree"]
    print(
        "this tree / baseline: "
        + ", ".join(
            f"{what} {b / a:.2f}"
            for what, a, b in zip(
                ("apply", "first flush", "steady", "scrape"), base, new, strict=True
            )
        )
        + f", memory per record {memory['this tree'] / memory['baseline']:.2f}"
    )


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
