"""A Kafka broker restart in the middle of a stream must not corrupt counts.

The stack's only broker is SIGKILLed while the worker is processing, then started
again with the stack script (same data folder). The worker rides through the
outage — its clients reconnect, uncommitted input is read again, merges are
idempotent — and its final gauges equal the oracle.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bench.workers import Worker, produce, wait_caught_up
from tests.eventgen import make_traffic
from tests.integration.test_pipeline import assert_gauges_match

pytestmark = pytest.mark.integration

STACK = Path(__file__).resolve().parents[2] / "deploy" / "local" / "stack"


def kafka_pid(state_dir: Path) -> int:
    pid_file = state_dir / "run" / "kafka.pid"
    if not pid_file.exists():
        pytest.fail(
            f"{pid_file} missing: this test restarts the broker that "
            "deploy/local/stack started, and needs its PID file"
        )
    return int(pid_file.read_text().split()[0])


def wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise AssertionError(f"kafka (pid {pid}) still running after SIGKILL")


async def test_broker_restart_mid_stream_keeps_counts_exact(stack, tmp_path: Path) -> None:
    app_id, topic = stack.unique_name("krestart"), stack.unique_name("interactions")
    traffic = make_traffic(seed=41, count=5000, now_ms=int(time.time() * 1000) - 60_000)
    third = len(traffic.messages) // 3
    await produce(stack.kafka_bootstrap, topic, traffic.messages[:third])
    worker = Worker(
        stack.kafka_bootstrap, app_id, topic, f"{topic}.dlq", tmp_path / "data", store="rocksdb://"
    ).start()
    try:  # the worker is stopped by its PID however the test ends
        try:
            worker.wait_metrics()
            await wait_caught_up(stack.kafka_bootstrap, app_id, topic, worker)
            await produce(stack.kafka_bootstrap, topic, traffic.messages[third : 2 * third])
            pid = kafka_pid(stack.state_dir)
            os.kill(pid, signal.SIGKILL)  # mid-stream: the worker is on the second third
            wait_gone(pid)
            time.sleep(8)  # longer than the session timeout (6s): group memberships expire
            assert worker.alive(), f"the worker died with the broker:\n{worker.log_tail()}"
        finally:
            # whatever happened, the broker comes back for the tests after this one
            up = subprocess.run([str(STACK), "up"], capture_output=True, text=True)
            assert up.returncode == 0, up.stdout + up.stderr
        await produce(stack.kafka_bootstrap, topic, traffic.messages[2 * third :])
        await wait_caught_up(stack.kafka_bootstrap, app_id, topic, worker, timeout=240)
        assert worker.alive(), worker.log_tail()
        assert_gauges_match(worker, traffic)
    finally:
        worker.stop()
