"""Throughput of one worker process against two on this machine, same run, same topic.

    python bench/scale_out_bench.py [--events 600000] [--rounds 2] [--processes 1,2]

Needs the local stack (``deploy/local/stack up``; KAFKA_BOOTSTRAP_SERVERS or
KAFKA_PORT pick the broker, REDIS_URL or REDIS_PORT the read model's Redis). N
events (bench/pipeline_bench.py's generator) go to a fresh 4-partition topic once;
then, alternating, ``n`` worker processes of one fresh app id (each its own
``/metrics`` port and data folder, as docs/several-apps.md runs them) process the
whole topic — timed from the first committed offset until both stages of every
process have committed everything — for each ``n`` in ``--processes``, ``--rounds``
times. Printed: events/s per run, the medians, their ratio to one process, and
where the CPU went during each run (the workers, the Kafka broker of the stack,
everything else on the machine; from /proc), which says what limits the scaling
when Kafka shares the cores.

All processes start together on a topic that already holds the events, so the
first seconds include the consumer groups' rebalance as the second process joins.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.pipeline_bench import first_progress, make_payloads, print, produce_all  # noqa: E402
from bench.workers import running_workers, stack_bootstrap, wait_caught_up  # noqa: E402
from streams.topics import ingest_group  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent not idle so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def broker_pid() -> int | None:
    """The stack's Kafka broker (its PID file), if this machine runs it."""
    state = os.environ.get("EM_STATE_DIR", str(Path(__file__).resolve().parents[1] / ".state"))
    try:
        return int((Path(state) / "run" / "kafka.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def run(bootstrap: str, topic: str, app_id: str, n: int, events: int) -> dict[str, float]:
    """``n`` workers of one app over the whole topic: events/s and CPU seconds used."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{app_id}-"))
    broker = broker_pid()
    with running_workers(bootstrap, app_id, topic, tmp, n, EM_EXPIRY_INTERVAL="60s") as workers:
        cpu0 = [cpu_s(w.proc.pid) for w in workers if w.proc]
        broker0 = cpu_s(broker) if broker else 0.0
        busy0, wall0 = machine_busy_s(), time.perf_counter()
        started = await first_progress(bootstrap, ingest_group(app_id), workers[0])
        await wait_caught_up(bootstrap, app_id, topic, workers[0], timeout=1800)
        elapsed = time.perf_counter() - started
        wall = time.perf_counter() - wall0
        worker_cpu = sum(cpu_s(w.proc.pid) for w in workers if w.proc) - sum(cpu0)
        broker_cpu = (cpu_s(broker) if broker else 0.0) - broker0
        busy = machine_busy_s() - busy0
    shutil.rmtree(tmp, ignore_errors=True)  # kept for reading when the run failed
    return {
        "rate": events / elapsed,
        "workers": worker_cpu / wall,
        "kafka": broker_cpu / wall,
        "other": (busy - worker_cpu - broker_cpu) / wall,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=600_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--communities", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--processes", default="1,2")
    args = parser.parse_args()
    bootstrap = stack_bootstrap()
    tag = f"scaleout-{os.getpid()}-{int(time.time())}"
    topic = f"{tag}-interactions"
    payloads = make_payloads(args.events, args.users, args.communities, int(time.time() * 1000))
    produce_s = await produce_all(bootstrap, topic, payloads, 4)
    print(f"produced {args.events:,} events in {produce_s:.1f}s; {os.cpu_count()} cores")
    counts = [int(n) for n in args.processes.split(",")]
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
    for r in range(args.rounds):
        for n in counts:
            result = await run(bootstrap, topic, f"{tag}-{r}-{n}", n, args.events)
            runs[n].append(result)
            print(
                f"  {n} process(es): {result['rate']:,.0f} events/s; cores busy: workers "
                f"{result['workers']:.2f}, Kafka {result['kafka']:.2f}, other {result['other']:.2f}"
                f" (load {os.getloadavg()[0]:.1f})"
            )
    one = statistics.median(r["rate"] for r in runs[counts[0]])
    for n, results in runs.items():
        rate = statistics.median(r["rate"] for r in results)
        cores = {k: statistics.median(r[k] for r in results) for k in ("workers", "kafka", "other")}
        print(
            f"{n} process(es): median {rate:,.0f} events/s, {rate / one:.2f} x {counts[0]}; "
            f"cores busy: workers {cores['workers']:.2f}, Kafka {cores['kafka']:.2f}, "
            f"other {cores['other']:.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
