"""How long after a worker dies until the surviving worker's gauges are exact again.

    python bench/recovery_bench.py [--records 1000000] [--store rocksdb://]

Two workers (the default settings: 10s session, 30s rebalance, 3s heartbeat) share a
topic of ``--records`` events, each of a user of its own, so the state holds that many
records. When both stages have committed everything, the summed gauges are the
truth. Then one worker is stopped — SIGTERM (it leaves the group) and, after it was
started again, holds partitions again and the sums were exact again, SIGKILL (the
group waits for its session to expire) — and the survivor's /metrics is polled until
its gauges equal the truth: the time printed is from the signal to that moment
(rebalance, fencing, changelog recovery, rebuild of the partitions' mirrors).
"""

from __future__ import annotations

import argparse
import asyncio
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
from streams.events import format_ts  # noqa: E402
from streams.settings import Settings  # noqa: E402

print = functools.partial(print, flush=True)  # noqa: A001 - progress shows live

#: the worker's own defaults (bench.workers.Worker sets the tests' short ones)
DEFAULT_TIMEOUTS = {
    "EM_SESSION_TIMEOUT": Settings.session_timeout,
    "EM_REBALANCE_TIMEOUT": Settings.rebalance_timeout,
    "EM_HEARTBEAT_INTERVAL": Settings.heartbeat_interval,
}


def payloads(n: int, communities: int, now_ms: int) -> list[bytes]:
    types = ["like", "comment", "follow", "view", "share"]
    return [
        orjson.dumps(
            {
                "event_id": f"rec-{i}",
                "ts": format_ts(now_ms - (i * 7919) % (20 * 86_400_000)),
                "platform": "twitter",
                "community": f"community-{i % communities:04d}",
                "user_id": f"user-{i}",
                "type": types[i % len(types)],
            }
        )
        for i in range(n)
    ]


def summed(workers: list[Worker]) -> tuple[dict[Any, dict[str, int]], dict[Any, int]]:
    active: dict[Any, dict[str, int]] = {}
    followers: dict[Any, int] = {}
    for worker in workers:
        got_active, got_followers = gauges(worker.scrape())
        for key, counts in got_active.items():
            total = active.setdefault(key, {})
            for window, n in counts.items():
                total[window] = total.get(window, 0) + n
        for key, n in got_followers.items():
            followers[key] = followers.get(key, 0) + n
    return active, followers


def wait_equal(
    workers: list[Worker], truth: Any, timeout: float = 600, holding: Worker | None = None
) -> float:
    """Seconds until the workers' summed gauges equal ``truth`` — and ``holding`` (a
    restarted worker) shows counts of its own: until it has rejoined, the survivor
    alone holds every partition, the sums are already exact, and killing it then
    would time no failover at all."""
    started = time.perf_counter()
    while summed(workers) != truth or (holding is not None and not summed([holding])[0]):
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"not exact after {timeout:.0f}s")
        time.sleep(0.2)
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--communities", type=int, default=1000)
    parser.add_argument("--store", default="rocksdb://")
    args = parser.parse_args()
    bootstrap = stack_bootstrap()
    tag = f"recovery-{os.getpid()}-{int(time.time())}"
    topic = f"{tag}-interactions"
    data = payloads(args.records, args.communities, int(time.time() * 1000))
    await produce_all(bootstrap, topic, data, 4)
    print(f"produced {args.records:,} events, one user each")
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_workers(
            bootstrap,
            tag,
            topic,
            Path(tmp),
            2,
            store=args.store,
            EM_EXPIRY_INTERVAL="600s",
            **DEFAULT_TIMEOUTS,
        ) as workers,
    ):
        started = time.perf_counter()
        await wait_caught_up(bootstrap, tag, topic, workers[0], timeout=1800)
        print(f"both workers caught up in {time.perf_counter() - started:.0f}s")
        time.sleep(5)
        truth = summed(workers)
        survivor, victim = workers
        for how in ("SIGTERM", "SIGKILL"):
            (victim.stop if how == "SIGTERM" else victim.kill)()
            seconds = wait_equal([survivor], truth)
            print(f"{how}: the survivor's gauges exact again after {seconds:.1f}s")
            victim.start().wait_metrics()
            seconds = wait_equal(workers, truth, holding=victim)
            print(f"restarted: both workers' sums exact again after {seconds:.1f}s")


if __name__ == "__main__":
    asyncio.run(main())
