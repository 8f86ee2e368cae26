"""What scrapes cost per event while events arrive: the latency bench's probe phase
without Kafka.

The pipeline bench's probes scrape ``/metrics?name[]=engagement_active_users`` four
times a second while events arrive at ~10,000/s, and a profile of the worker put a
third of its core in those scrapes (docs/benchmarks.md, "Latency, session 11"). This
script replays that load on the state and the collectors alone, so a change to them
is measured in seconds and without the noise of Kafka: ``--events`` stored events
(``--users`` users, ``--communities`` Zipf-sized communities, 3 platforms, 4
partitions, one hour of event times), then ``--seconds`` of new events at ``--rate``
with, ``--scrapes`` times a second, what a scrape does: the index flush, the live
counts' refresh, and the text of the ``--family`` (``all``: the whole page).

CPU time per event of each step, for this tree and, with ``--baseline DIR``, another
checkout — each in a child process with its own tree on ``PYTHONPATH``, in
alternating rounds (the medians and their ratio are printed):

    .venv/bin/python bench/scrape_load_bench.py --baseline /tmp/before --rounds 3
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

STEPS = ("apply", "flush", "refresh", "text")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=600_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--communities", type=int, default=1_000)
    parser.add_argument("--rate", type=int, default=11_000, help="new events per second")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--scrapes", type=int, default=4, help="scrapes per second")
    parser.add_argument("--family", default="engagement_active_users")
    parser.add_argument("--baseline", help="a checkout to compare with (before/after)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    here = Path(__file__).resolve().parents[1]
    trees = {"this tree": here}
    if args.baseline:
        trees = {"baseline": Path(args.baseline).resolve(), "this tree": here}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for round_ in range(args.rounds):
        for name, tree in trees.items():
            got = run_child(tree, sys.argv[1:])
            results[name].append(got)
            figures = ", ".join(f"{step} {got[step]:.1f}" for step in STEPS)
            print(f"round {round_ + 1}, {name}: {figures} µs/event", flush=True)
    report(results, args)


def run_child(tree: Path, argv: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    script = Path(__file__).resolve()
    out = subprocess.run(
        [sys.executable, str(script), *argv, "--child"],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    print(
        f"\nmedian CPU µs per event over {args.rounds} rounds ({args.rate:,} events/s, "
        f"{args.scrapes} scrapes/s of {args.family}, {args.events:,} events stored):"
    )
    medians = {
        name: {step: statistics.median(r[step] for r in runs) for step in (*STEPS, "total")}
        for name, runs in results.items()
    }
    names = list(medians)
    print(
        f"{'step':<10}"
        + "".join(f"{name:>12}" for name in names)
        + ("   ratio" if len(names) > 1 else "")
    )
    for step in (*STEPS, "total"):
        row = f"{step:<10}" + "".join(f"{medians[name][step]:>12.1f}" for name in names)
        if len(names) > 1:
            row += f"   {medians[names[1]][step] / medians[names[0]][step]:.3f}"
        print(row)


def measure(args: argparse.Namespace) -> dict[str, float]:
    """The child: build the state with this tree's modules, then time the load."""
    from agents.labels import CommunityLabels
    from agents.metrics import EngagementCollector, IngestStats
    from bench.synthetic import TYPE_WEIGHTS, TYPES, WINDOWS
    from streams.clock import Clock
    from streams.events import DEFAULT_ACTIVE_TYPES
    from streams.state import WorkerState

    rnd = random.Random(1)
    communities = [f"community-{i}" for i in range(args.communities)]
    community_weights = [1 / (i + 1) for i in range(args.communities)]
    platforms = ["instagram", "tiktok", "x"]
    users = [f"user-{i}" for i in range(args.users)]
    user_weights = [1 / (i + 1) ** 0.8 for i in range(args.users)]
    partition_of = {u: zlib.crc32(u.encode()) % 4 for u in users}

    def events(n: int, start: float, step: float) -> list[tuple[Any, ...]]:
        chosen = rnd.choices(users, user_weights, k=n)
        where = rnd.choices(communities, community_weights, k=n)
        kinds = rnd.choices(TYPES, TYPE_WEIGHTS, k=n)
        return [
            (platforms[zlib.crc32(u.encode()) % 3], c, u, int(start + i * step), k)
            for i, (u, c, k) in enumerate(zip(chosen, where, kinds, strict=True))
        ]

    worker = WorkerState(DEFAULT_ACTIVE_TYPES)
    parts = [worker.assign(p) for p in range(4)]
    for e in events(args.events, 1_764_000_000_000, 3_600_000 / args.events):
        parts[partition_of[e[2]]].apply(*e)
    clock = Clock("event", worker.watermark_ms)
    collector = EngagementCollector(worker, IngestStats(CommunityLabels(2_000)), clock, WINDOWS)
    only = None if args.family == "all" else frozenset([args.family])
    collector.text(only)  # the first page: every line new
    now = worker.watermark_ms()
    assert now is not None
    load = events(args.rate * args.seconds, now + 1_000, 1_000 / args.rate)
    per = args.rate // args.scrapes
    gc.freeze()  # as the worker does after its start-up, with its thresholds
    gc.set_threshold(10_000, 10, 100)  # commands/worker.py GC_THRESHOLDS
    spent = dict.fromkeys(STEPS, 0.0)
    cpu = time.process_time
    for i in range(0, len(load), per):
        t0 = cpu()
        for e in load[i : i + per]:
            parts[partition_of[e[2]]].apply(*e)
        t1 = cpu()
        for part in parts:
            part.flush()
        t2 = cpu()
        collector.live.update(clock.now_ms())
        t3 = cpu()
        collector.text(only)
        t4 = cpu()
        for step, took in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            spent[step] += took
    out = {step: took / len(load) * 1e6 for step, took in spent.items()}
    out["total"] = sum(out.values())
    return out


if __name__ == "__main__":
    main()
