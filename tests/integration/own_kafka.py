"""A private one-node Kafka broker for tests that must kill and restart a broker.

The shared stack's broker belongs to every developer's tests at once; a test that
restarts a broker starts its own, on free ports, from the stack's own scripts
(same release, same server properties — transaction state log with replication
factor 1), and stops it by its PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import emstack.health as health  # noqa: E402, I001
import emstack.kafka as kafka  # noqa: E402
from bench.workers import free_port
from emstack.config import Config  # noqa: E402
from tests.integration.conftest import REPO  # noqa: F401 - puts deploy/local on sys.path


class OwnKafka:
    """``start()``, ``kill()`` (SIGKILL, then ``start()`` again on the same data) and ``stop()``."""

    def __init__(self, folder: Path) -> None:
        env = {
            **os.environ,
            "EM_STATE_DIR": str(folder),
            "KAFKA_PORT": str(free_port()),
            "KAFKA_CONTROLLER_PORT": str(free_port()),
        }
        self.cfg = Config.from_env(env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = folder / "kafka.log"

    @property
    def bootstrap(self) -> str:
        return self.cfg.kafka_bootstrap

    def start(self, timeout: float = 120) -> OwnKafka:
        kafka.ensure_fetched(self.cfg)
        props = kafka.write_config(self.cfg)
        kafka.format_storage(self.cfg, props)
        env = kafka.java_env(self.cfg) | {"KAFKA_HEAP_OPTS": "-Xmx512m -Xms128m"}
        cmd = kafka.server_cmd(self.cfg, props)
        cmd = [part.replace(kafka.HEAP, env["KAFKA_HEAP_OPTS"]) for part in cmd]
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not health.kafka_ok(self.bootstrap):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"own Kafka did not start; see {self.log_path}")
            time.sleep(0.5)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def running(folder: Path) -> Iterator[OwnKafka]:
    """For a pytest fixture (``yield from running(tmp_path / "kafka")``): a started
    broker of the test's own, stopped by its PID afterwards."""
    own = OwnKafka(folder)
    try:
        yield own.start()
    finally:
        own.stop()
