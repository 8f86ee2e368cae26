"""A ``/metrics`` scrape and one read-model tick at 10,000 communities and 1M records.

Run through ``bench/readmodel_bench.py --scale [--baseline DIR]``. For each tree
(this one and, with ``--baseline``, another checkout) a child process — this file
run with that tree on ``PYTHONPATH`` — builds the same state (``--records`` stored
(platform, community, user) records over ``--communities`` Zipf-sized communities,
3 platforms, 4 partitions, 30 days of event times), its own ``redis-server`` and
the worker's collectors, labels capped at 1,000 and ranked. Then, in rounds that
alternate between the children (so both see the same machine load):

1. ``--rate`` new events one second later (ingest counters and the top-users tally
   fed as the worker does), and the window indexes flushed (the worker's 1 s timer);
2. one read-model tick against the child's Redis: wall time, and bytes Redis
   received (``INFO stats`` ``total_net_input_bytes`` before and after);
3. one scrape of the worker's ``/metrics`` body (without Faust's sensor), wall time.

The first round (every row new to Redis, every line rendered) is reported apart;
the rest as medians. The event clock drives the windows, so both trees count the
same numbers.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from streams.durations import parse_windows

WINDOWS = parse_windows("5m,1h,1d,7d,30d")
TYPES = ["post", "comment", "reply", "like", "share", "mention", "click", "view", "follow"]
TYPE_WEIGHTS = [5, 10, 5, 30, 5, 2, 15, 25, 3]
PLATFORMS = ["instagram", "tiktok", "x"]
START_MS = 1_764_000_000_000
SPAN_MS = 30 * 86_400_000
PARTITIONS = 4
APP = "bench-scale"


class Traffic:
    """Seeded events: Zipf communities (s = 0.6), 400,000 users."""

    def __init__(self, communities: int, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.names = [f"community-{i}" for i in range(communities)]
        self.weights = [1 / (i + 1) ** 0.6 for i in range(communities)]

    def batch(self, n: int, ts_from: int, ts_step: float) -> list[list]:
        rnd = self.rnd
        comms = rnd.choices(self.names, self.weights, k=n)
        kinds = rnd.choices(TYPES, TYPE_WEIGHTS, k=n)
        out = []
        for i in range(n):
            user = f"user-{rnd.randrange(400_000)}"
            platform = PLATFORMS[zlib.crc32(user.encode()) % 3 if i % 5 else rnd.randrange(3)]
            out.append([ts_from + int(i * ts_step), platform, comms[i], user, kinds[i]])
        return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, f"redis://127.0.0.1:{port}/0"


class Child:
    """One tree's state, collectors and Redis (runs in the child process)."""

    def __init__(self, records: int, communities: int, rate: int, redis_url: str) -> None:
        from agents.labels import CommunityLabels, LabelCap
        from agents.metrics import EngagementCollector, IngestStats
        from agents.top_users import TopUsersTally
        from streams.clock import Clock
        from streams.events import DEFAULT_ACTIVE_TYPES
        from streams.state import WorkerState

        self.rate = rate
        self.traffic = Traffic(communities, seed=1)
        self.state = WorkerState(DEFAULT_ACTIVE_TYPES)
        self.parts = [self.state.assign(p) for p in range(PARTITIONS)]
        self.build(records)
        self.labels = CommunityLabels(1000, (), LabelCap(20))
        self.stats = IngestStats(self.labels)
        self.tally = TopUsersTally(DEFAULT_ACTIVE_TYPES)
        self.clock = Clock("event", self.state.watermark_ms)
        self.rank()
        params = inspect.signature(EngagementCollector).parameters
        extra: dict[str, Any] = {}
        if "live" in params:  # one LiveCounts for both, as the worker shares it
            from streams.live_counts import LiveCounts

            extra["live"] = LiveCounts(self.state, WINDOWS)
            self.collector = EngagementCollector(
                self.state, self.stats, self.clock, WINDOWS, app_id=APP, **extra
            )
        else:
            self.collector = EngagementCollector(self.state, self.stats, self.clock, WINDOWS)
        self.writer = self.make_writer(redis_url, extra)
        self.page = self.make_page()

    def build(self, records: int) -> None:
        """Events in time order until the state holds ``records`` records."""
        i = 0
        step = SPAN_MS / (records * 1.15)
        while len(self.state) < records:
            n = min(50_000, max(1_000, records - len(self.state)))
            for event in self.traffic.batch(n, START_MS + int(i * step), step):
                self.apply(event)
            i += n
            for part in self.parts:
                part.flush()

    def apply(self, event: list) -> None:
        ts, platform, community, user, kind = event
        self.parts[zlib.crc32(user.encode()) % PARTITIONS].apply(
            platform, community, user, ts, kind
        )

    def rank(self) -> None:
        from streams.gauges import gauge_rows

        now = self.clock.now_ms()
        rows = gauge_rows(self.parts, now, {"30d": WINDOWS["30d"]})
        self.labels.rank_counts(rows.active, rows.followers, "30d")

    def make_writer(self, redis_url: str, extra: dict[str, Any]) -> Any:
        from agents.readmodel import connect
        from agents.redis_snapshots import ReadModelWriter

        params = inspect.signature(ReadModelWriter).parameters
        writer = ReadModelWriter(
            redis_url=redis_url,
            app_id=APP,
            state=self.state,
            clock=self.clock,
            windows=WINDOWS,
            partitions=PARTITIONS,
            interval_s=1.0,
            tally=self.tally,
            top_n=100,
            client=connect(redis_url, 60.0),  # a tick is timed, not cut short
            **{k: v for k, v in extra.items() if k in params},
        )
        writer.timeout = 60.0  # (the first, whole one is large)
        # rounds alternate between trees and take longer than the 10 s TTL on a loaded
        # machine: an expired hash would be rewritten whole at every tick
        writer.ttl_ms = 3_600_000
        return writer

    def make_page(self) -> Any:
        """The worker's /metrics body, as agents/app.py builds it in this tree."""
        from prometheus_client import CollectorRegistry, generate_latest

        from agents.metrics import AppLabelled

        registry = CollectorRegistry(auto_describe=True)
        text = getattr(self.collector, "text", None)
        if text is None:
            registry.register(self.collector)
            labelled = AppLabelled(registry, APP)
            return lambda: generate_latest(labelled)
        registry.register(self.collector.rest)
        labelled = AppLabelled(registry, APP)
        return lambda: generate_latest(labelled) + text().encode()

    async def round(self, client: Any) -> dict[str, float]:
        now = self.clock.now_ms()
        assert now is not None
        events = self.traffic.batch(self.rate, now + 1, 1000 / max(self.rate, 1))
        counts: dict[tuple[str, str, str], int] = {}
        for event in events:
            self.apply(event)
            key = (event[1], event[2], event[4])
            counts[key] = counts.get(key, 0) + 1
        add_counts(self.stats, counts)
        for p in range(PARTITIONS):
            self.tally(p, [e for e in events if zlib.crc32(e[3].encode()) % PARTITIONS == p])
        t0 = time.perf_counter()
        for part in self.parts:
            part.flush()
        t1 = time.perf_counter()
        before = (await client.info("stats"))["total_net_input_bytes"]
        t2 = time.perf_counter()
        ok = await self.writer.tick()
        t3 = time.perf_counter()
        after = (await client.info("stats"))["total_net_input_bytes"]
        t4 = time.perf_counter()
        body = self.page()
        t5 = time.perf_counter()
        assert ok, "the tick failed"
        return {
            "flush_s": t1 - t0,
            "tick_s": t3 - t2,
            "scrape_s": t5 - t4,
            "bytes": after - before - 60,  # INFO's own request is counted: ~60 bytes
            "page_bytes": len(body),
        }


def add_counts(stats: Any, counts: dict[tuple[str, str, str], int]) -> None:
    """The ingest counters of one poll, as this tree's ingest stage keeps them."""
    if hasattr(stats, "add"):  # one tally per process
        stats.add(counts, [0] * 15, 0.0)
        return
    from agents.ingest_counters import apply  # per input partition (issue 11)

    tally = stats.tally()
    tally.add(counts, [0] * len(tally.lag_buckets), 0.0)
    stats.partitions[0] = apply(tally, stats.counters(0))[0]


def child_main() -> None:
    import asyncio

    from agents.readmodel import connect

    records, communities, rate, redis_url = sys.argv[2:6]
    t0 = time.perf_counter()
    child = Child(int(records), int(communities), int(rate), redis_url)
    built = time.perf_counter() - t0
    print(json.dumps({"records": len(child.state), "build_s": built}), flush=True)

    async def serve() -> None:
        client = connect(redis_url, 10.0)
        for line in sys.stdin:
            if line.strip() != "round":
                break
            print(json.dumps(await child.round(client)), flush=True)
        await client.aclose()
        await child.writer.close()

    asyncio.run(serve())


def compare(args: argparse.Namespace) -> None:
    """Both trees in lock step; medians and this tree / baseline."""
    trees = {"this tree": str(Path(__file__).resolve().parents[1])}
    if args.baseline:
        trees = {"baseline": str(Path(args.baseline).resolve()), **trees}
    communities = args.communities or 10_000
    workdir = tempfile.mkdtemp(prefix="scale-bench-")
    redis, children = [], {}
    try:
        for name, tree in trees.items():
            proc, url = start_redis(workdir)
            redis.append(proc)
            cmd = [sys.executable, __file__, "--child", str(args.records), str(communities)]
            env = {**os.environ, "PYTHONPATH": tree}
            children[name] = subprocess.Popen(
                [*cmd, str(args.rate), url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                env=env, text=True,
            )  # fmt: skip
        for name, child in children.items():
            assert child.stdout is not None
            print(f"{name}: {child.stdout.readline().strip()}", flush=True)
        results = rounds(children, args.rounds + 1)
    finally:
        for child in children.values():
            if child.stdin:
                child.stdin.close()
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:  # still building after a failure elsewhere
                child.kill()
                child.wait()
        for proc in redis:
            proc.kill()
    report(results, args, communities)


def rounds(children: dict[str, subprocess.Popen[str]], n: int) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {name: [] for name in children}
    for _ in range(n):
        for name, child in children.items():
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write("round\n")
            child.stdin.flush()
            results[name].append(json.loads(child.stdout.readline()))
    return results


def report(results: dict[str, list[dict]], args: argparse.Namespace, communities: int) -> None:
    print(
        f"{args.records:,} records, {communities:,} communities, {args.rate:,} events "
        f"between ticks, median of {args.rounds} rounds after the first; load "
        f"{os.getloadavg()[0]:.1f}"
    )
    medians = {}
    for name, runs in results.items():
        first, rest = runs[0], runs[1:]
        med = {k: statistics.median(r[k] for r in rest) for k in rest[0]}
        medians[name] = med
        print(
            f"{name}: scrape {med['scrape_s'] * 1e3:.0f} ms ({med['page_bytes'] / 1e6:.1f} MB), "
            f"tick {med['tick_s'] * 1e3:.0f} ms, {med['bytes'] / 1e3:.0f} kB to Redis per tick, "
            f"index flush {med['flush_s'] * 1e3:.0f} ms | first round: scrape "
            f"{first['scrape_s'] * 1e3:.0f} ms, tick {first['tick_s'] * 1e3:.0f} ms, "
            f"{first['bytes'] / 1e6:.1f} MB"
        )
    if len(medians) == 2:
        base, new = medians["baseline"], medians["this tree"]
        print(
            "this tree / baseline: "
            + ", ".join(
                f"{what} {new[k] / base[k]:.3f}"
                for what, k in (("scrape", "scrape_s"), ("tick", "tick_s"), ("bytes", "bytes"))
            )
        )


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    child_main()
