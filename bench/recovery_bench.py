"""How long after a worker dies until the surviving worker's gauges are exact again.

    python bench/recovery_bench.py [--records 1000000] [--store rocksdb://]

Two workers (the default settings: 10s session, 30s rebalance, 3s heartbeat) share a
topic of ``--records`` events, each of a user of its own, so the state holds that many
records. The truth is computed here from the same events: per community, its users
active in 30d and its followers (the events span 20 days, so every 30d window that
starts at a worker's event clock counts them all; the shorter windows move with each
worker's own clock — the newest event of *its* partitions — so their sums over two
workers differ from one worker's and are not compared). When both stages have
committed everything, the two workers' summed gauges must equal it. Then one worker
is stopped — SIGTERM (it leaves the group) and, after it was started again, holds
partitions again and the sums were exact again, SIGKILL (the group waits for its
session to expire) — and the survivor's /metrics is polled until its gauges equal the
truth: the time printed is from the signal to that moment (rebalance, fencing,
changelog recovery, rebuild of the partitions' mirrors). Progress shows every 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.pipeline_bench import produce_all  # noqa: E402
from bench.workers import Worker, gauges, running_workers, stack_bootstrap, wait_caught_up  # noqa: E402
from streams.events import DEFAULT_ACTIVE_TYPES, format_ts  # noqa: E402
from streams.json_bytes import kept  # noqa: E402
from streams.settings import Settings  # noqa: E402

print = functools.partial(print, flush=True)  # noqa: A001 - progress shows live

#: the worker's own defaults (bench.workers.Worker sets the tests' short ones)
DEFAULT_TIMEOUTS = {
    "EM_SESSION_TIMEOUT": Settings.session_timeout,
    "EM_REBALANCE_TIMEOUT": Settings.rebalance_timeout,
    "EM_HEARTBEAT_INTERVAL": Settings.heartbeat_interval,
}


TYPES = ["like", "comment", "follow", "view", "share"]
ACTIVE = DEFAULT_ACTIVE_TYPES  # the workers run with the default active types


def payloads(n: int, communities: int, now_ms: int) -> list[bytes]:
    return [
        kept(
            orjson.dumps(
                {
                    "event_id": f"rec-{i}",
                    "ts": format_ts(now_ms - (i * 7919) % (20 * 86_400_000)),
                    "platform": "twitter",
                    "community": f"community-{i % communities:04d}",
                    "user_id": f"user-{i}",
                    "type": TYPES[i % len(TYPES)],
                }
            )
        )
        for i in range(n)
    ]


Counts = tuple[dict[Any, int], dict[Any, int]]


def truth(n: int, communities: int) -> Counts:
    """({(platform, community): users active in 30d}, {…: followers}) of :func:`payloads`,
    "*" included: every event is a user of its own."""
    active: dict[Any, int] = {}
    followers: dict[Any, int] = {}
    for i in range(n):
        kind = TYPES[i % len(TYPES)]
        for key in (("twitter", f"community-{i % communities:04d}"), ("twitter", "*")):
            if kind in ACTIVE:
                active[key] = active.get(key, 0) + 1
            if kind == "follow":
                followers[key] = followers.get(key, 0) + 1
    return active, followers


def summed(workers: list[Worker]) -> Counts:
    """The workers' summed 30d active users and followers (zeros left out)."""
    active: dict[Any, int] = {}
    followers: dict[Any, int] = {}
    for worker in workers:
        got_active, got_followers = gauges(worker.scrape())
        for key, counts in got_active.items():
            active[key] = active.get(key, 0) + counts.get("30d", 0)
        for key, n in got_followers.items():
            followers[key] = followers.get(key, 0) + n
    return (
        {k: n for k, n in active.items() if n},
        {k: n for k, n in followers.items() if n},
    )


async def wait_equal(
    workers: list[Worker], expected: Counts, timeout: float = 600, holding: Worker | None = None
) -> float:
    """Seconds until the workers' summed gauges equal ``expected`` — and ``holding`` (a
    restarted worker) shows counts of its own: until it has rejoined, the survivor
    alone holds every partition, the sums are already exact, and killing it then
    would time no failover at all."""
    started = last_shown = time.perf_counter()
    want = expected[0][("twitter", "*")]
    unanswered = 0  # scrapes that got no answer within 10 s (a busy event loop)
    while True:
        try:
            got = await asyncio.to_thread(summed, workers)
            exact = got == expected and (
                holding is None or bool((await asyncio.to_thread(summed, [holding]))[0])
            )
        except OSError as exc:  # timed out, refused: not exact yet
            unanswered += 1
            print(f"  {time.perf_counter() - started:.0f}s: a /metrics scrape failed ({exc})")
            got, exact = ({}, {}), False
        if exact:
            if unanswered:
                print(f"  ({unanswered} scrapes unanswered meanwhile)")
            return time.perf_counter() - started
        now = time.perf_counter()
        if now - started > timeout:
            raise SystemExit(f"not exact after {timeout:.0f}s")
        if now - last_shown >= 10:
            last_shown = now
            print(
                f"  {now - started:.0f}s: all communities' 30d active users "
                f"{got[0].get(('twitter', '*'), 0):,} of {want:,}"
            )
        await asyncio.sleep(0.2)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--communities", type=int, default=1000)
    parser.add_argument("--store", default="rocksdb://")
    parser.add_argument(
        "--log-level", default="warn", help="the workers' (info: where the time goes)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the workers' logs and data")
    args = parser.parse_args()
    bootstrap = stack_bootstrap()
    tag = f"recovery-{os.getpid()}-{int(time.time())}"
    topic = f"{tag}-interactions"
    data = payloads(args.records, args.communities, int(time.time() * 1000))
    await produce_all(bootstrap, topic, data, 4)
    print(f"produced {args.records:,} events, one user each")
    with (
        (
            contextlib.nullcontext(tempfile.mkdtemp(prefix=f"{tag}-"))
            if args.keep
            else tempfile.TemporaryDirectory()
        ) as tmp,
        running_workers(
            bootstrap,
            tag,
            topic,
            Path(tmp),
            2,
            store=args.store,
            EM_EXPIRY_INTERVAL="600s",
            EM_LOG_LEVEL=args.log_level,
            **DEFAULT_TIMEOUTS,
        ) as workers,
    ):
        if args.keep:
            print(f"workers' logs and data in {tmp}")
        started = time.perf_counter()
        await wait_caught_up(bootstrap, tag, topic, workers[0], timeout=1800)
        print(f"both workers caught up in {time.perf_counter() - started:.0f}s")
        expected = truth(args.records, args.communities)
        seconds = await wait_equal(workers, expected, timeout=120)
        print(f"both workers' summed gauges exact {seconds:.1f}s later")
        survivor, victim = workers
        for how in ("SIGTERM", "SIGKILL"):
            (victim.stop if how == "SIGTERM" else victim.kill)()
            seconds = await wait_equal([survivor], expected)
            print(f"{how}: the survivor's gauges exact again after {seconds:.1f}s")
            victim.start().wait_metrics()
            seconds = await wait_equal(workers, expected, holding=victim)
            print(f"restarted: both workers' sums exact again after {seconds:.1f}s")


if __name__ == "__main__":
    asyncio.run(main())
