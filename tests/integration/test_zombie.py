"""A zombie worker: paused past its session timeout while its partitions move on.

Worker A is SIGSTOPped in the middle of a batch; the group expels it and worker B
takes its partitions, recovers them from the changelog and goes on. Then A is
resumed: it finishes the batch it was in — from a mirror that no longer is the
newest state — and rejoins, possibly getting the same partitions back. None of
its late writes may reach the changelog or the by-user topic (its producers were
fenced by B's), and the counts stay exact, live and after a fresh recovery.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bench.workers import Worker, gauges, produce, wait_caught_up
from tests.eventgen import make_traffic
from tests.integration.test_chaos import assert_exact, settle, want
from tests.integration.test_pipeline import newest_in_every_partition

pytestmark = pytest.mark.integration


def wait_holding(worker: Worker, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not gauges(worker.scrape())[1]:
        assert time.monotonic() < deadline, f"no partitions:\n{worker.log_tail()}"
        time.sleep(0.5)


async def test_a_paused_worker_resumed_after_its_partitions_moved_writes_nothing(
    stack, tmp_path: Path
) -> None:
    app_id, topic = stack.unique_name("zombie"), stack.unique_name("interactions")
    traffic = make_traffic(
        seed=97, count=40_000, now_ms=int(time.time() * 1000) - 60_000, users=3000
    )
    newest_in_every_partition(traffic, 4)
    messages = traffic.messages
    quarter = len(messages) // 4

    def worker(name: str) -> Worker:
        return Worker(
            stack.kafka_bootstrap,
            app_id,
            topic,
            f"{topic}.dlq",
            tmp_path / name / "data",
            store="rocksdb://",
            EM_READ_MODEL="off",
            EM_LOG_LEVEL=os.environ.get("EM_CHAOS_LOG_LEVEL", "warn"),
        ).start()

    await produce(stack.kafka_bootstrap, topic, messages[:quarter])
    a = worker("a")
    b = fresh = None
    try:
        a.wait_metrics()
        await wait_caught_up(stack.kafka_bootstrap, app_id, topic, a)
        b = worker("b")
        b.wait_metrics()
        wait_holding(b)
        # A is busy with the second quarter when it is paused: the quarter arrives in
        # chunks and the pause comes right after one of the middle, while A reads and
        # writes it (paused after the whole quarter, A had sometimes finished it and had
        # nothing left to write on resuming: CI of 48037bd)
        second = messages[quarter : 2 * quarter]
        chunk = 500  # a multiple of the 4 partitions: the round-robin stays the same
        middle = len(second) // 2 // chunk * chunk
        for start in range(0, len(second), chunk):
            await produce(stack.kafka_bootstrap, topic, second[start : start + chunk])
            if start == middle:
                a.pause()
        await produce(stack.kafka_bootstrap, topic, messages[2 * quarter : 3 * quarter])
        # B alone catches up: the group expelled A (6s session) and B took its partitions
        await wait_caught_up(stack.kafka_bootstrap, app_id, topic, b, timeout=180)
        a.resume()
        await produce(stack.kafka_bootstrap, topic, messages[3 * quarter :])
        await wait_caught_up(stack.kafka_bootstrap, app_id, topic, b, timeout=180)
        expected = want(traffic)
        live = settle([a, b], expected)
        # the scenario happened: A did try to write after B took over, and was refused
        log = a.log_path.read_text(errors="replace")
        assert "fenced, another worker owns the partition now" in log, a.log_tail()
        a.stop()
        b.stop()
        fresh = worker("fresh")
        fresh.wait_metrics()
        await assert_exact(live, settle([fresh], expected), stack.kafka_bootstrap, app_id, traffic)
    finally:
        for w in (a, b, fresh):
            if w is not None:
                w.stop()
