"""A worker stopped while it starts stops promptly, and nothing is lost or written twice.

SIGTERM reaches a starting worker at every phase of its start-up: before Faust
has installed its signal handlers, while its services start, while it joins the
groups (a rebalance with a second worker that keeps working), while it fences the
previous owners and recovers the changelog, and just after. Each one must exit
within :data:`BOUND_S`, however its stop goes (``commands.worker`` bounds it). The
second worker then holds every partition: its gauges must equal the oracle — no
update lost, none applied twice, no transaction of a stopped worker left half
written or open (an open one would hold the second worker's read_committed
consumers at its first offset).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bench.workers import Worker, gauges, produce, wait_caught_up
from streams.events import DEFAULT_ACTIVE_TYPES
from tests.eventgen import make_traffic
from tests.integration.test_pipeline import WINDOWS, nonzero
from tests.oracle import event_clock, expected_active, expected_followers

pytestmark = pytest.mark.integration

BOUND_S = 10.0
#: when the SIGTERM is sent: seconds after the start, or when the worker's log first
#: shows this line (each phase of the start-up, in the order they usually come)
MOMENTS: list[float | str] = [
    0.5,
    2.0,
    "Worker]: Starting",  # Faust's worker, the first thing after the imports
    "Waiting for tables to be registered",
    "(Re-)joining group",
    "Executing _on_partitions_assigned",
    "Restoring state from changelog topics",
    "Resuming flow",
    "ingest: reading",
]


def stop_at(worker: Worker, moment: float | str) -> tuple[float, str]:
    """SIGTERM at ``moment``; (seconds until the process was gone, what happened)."""
    started = time.monotonic()
    while isinstance(moment, str) and worker.alive():
        if moment in worker.log_path.read_text(errors="replace"):
            break
        if time.monotonic() - started > 90:
            return 0.0, f"{moment!r} not seen in 90s:\n{worker.log_tail()}"
        time.sleep(0.02)
    if isinstance(moment, float):
        time.sleep(moment)
    assert worker.proc is not None
    sent = time.monotonic()
    os.kill(worker.proc.pid, signal.SIGTERM)
    try:
        code = worker.proc.wait(BOUND_S + 30)
    except subprocess.TimeoutExpired:
        worker.kill()
        code = None
    return (
        time.monotonic() - sent,
        f"SIGTERM {sent - started:.1f}s after start ({moment!r}), exit {code}",
    )


def exact(worker: Worker, expected: tuple[dict, dict], timeout: float = 90) -> tuple[dict, dict]:
    """The worker's (active, followers) once they equal ``expected``, or at the deadline
    (a partition may still be moving back when the groups have caught up)."""
    deadline = time.monotonic() + timeout
    while True:
        active, followers = gauges(worker.scrape())
        got = (nonzero(active), followers)
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


async def test_sigterm_at_every_start_up_phase_stops_promptly_and_loses_nothing(
    stack: Any, tmp_path: Path
) -> None:
    bootstrap = stack.kafka_bootstrap
    app_id, topic = stack.unique_name("startstop"), stack.unique_name("interactions")
    traffic = make_traffic(seed=29, count=8000, now_ms=int(time.time() * 1000) - 60_000)
    half = len(traffic.messages) // 2
    await produce(bootstrap, topic, traffic.messages[:half])

    def worker(name: str) -> Worker:
        return Worker(
            bootstrap, app_id, topic, f"{topic}.dlq", tmp_path / name / "data", EM_LOG_LEVEL="info"
        )

    keeper = worker("keeper").start()
    stops: list[tuple[float, str, Worker]] = []
    try:
        keeper.wait_metrics()
        for i, moment in enumerate(MOMENTS):
            if i == len(MOMENTS) // 2:  # more input while workers come and go
                await produce(bootstrap, topic, traffic.messages[half:])
            starter = worker(f"starter-{i}").start()
            seconds, what = await asyncio.to_thread(stop_at, starter, moment)
            stops.append((seconds, what, starter))
            print(f"stopped in {seconds:.1f}s: {what}")
        slow = [f"{s:.1f}s: {what}\n{w.log_tail(30)}" for s, what, w in stops if s >= BOUND_S]
        assert not slow, "\n\n".join(slow)
        assert not [what for _s, what, _w in stops if "not seen" in what]
        await wait_caught_up(bootstrap, app_id, topic, keeper, timeout=180)
        now_ms = event_clock(traffic.valid)
        assert now_ms is not None
        active = expected_active(traffic.valid, now_ms, WINDOWS, DEFAULT_ACTIVE_TYPES)
        expected = (nonzero(active), expected_followers(traffic.valid))
        assert len(expected[0]) > 20 and len(expected[1]) > 10  # not trivially empty
        assert exact(keeper, expected) == expected
    finally:
        keeper.stop()
        for _s, _what, starter in stops:
            starter.kill()
