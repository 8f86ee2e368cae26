"""The `stack` fixture: real Kafka, Redis, Prometheus and Alertmanager on loopback.

It uses the stack reachable on the configured ports (KAFKA_PORT, REDIS_PORT,
PROMETHEUS_PORT, ALERTMANAGER_PORT, EM_STATE_DIR — the same variables as
deploy/local/stack), or starts one with `deploy/local/stack up` and stops it at the
end of the session, only if it started it.

    def test_x(stack):
        topic = stack.unique_name("events")          # unique per test and run
        stack.scrape(["127.0.0.1:16066"])            # Prometheus now scrapes your worker
        stack.wait_for_query("up{instance='127.0.0.1:16066'} == 1")
        stack.load_rules(tmp / "rules", tmp / "am.yml")  # e.g. rules_gen.py --profile fast
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
STACK_SCRIPT = REPO / "deploy" / "local" / "stack"
sys.path.insert(0, str(REPO / "deploy" / "local"))

import emstack.health as health  # noqa: E402
import emstack.promcfg as promcfg  # noqa: E402
from emstack.config import Config  # noqa: E402

# Short consumer-group timeouts: a worker joins in about half the rebalance timeout.
SHORT_TIMEOUTS = {
    "EM_SESSION_TIMEOUT": "6s",
    "EM_REBALANCE_TIMEOUT": "6s",
    "EM_HEARTBEAT_INTERVAL": "1s",
}

Sample = dict[str, Any]


@dataclass
class Stack:
    """Addresses of the running services, and helpers for tests that use them."""

    cfg: Config

    @property
    def kafka_bootstrap(self) -> str:
        return self.cfg.kafka_bootstrap

    @property
    def redis_url(self) -> str:
        return self.cfg.redis_url

    @property
    def prometheus_url(self) -> str:
        return self.cfg.prometheus_url

    @property
    def alertmanager_url(self) -> str:
        return self.cfg.alertmanager_url

    @property
    def state_dir(self) -> Path:
        return self.cfg.state_dir

    @staticmethod
    def unique_name(prefix: str) -> str:
        """A topic name / Faust app id no other test or run uses."""
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    def worker_env(self, **extra: str) -> dict[str, str]:
        """Environment for a worker subprocess: this stack, short group timeouts."""
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "REDIS_URL": self.redis_url,
            **SHORT_TIMEOUTS,
            **extra,
        }

    def reload_prometheus(self, targets: Sequence[str]) -> Path:
        """Re-render Prometheus' config with these worker targets and reload it."""
        return promcfg.scrape(self.cfg, targets)

    scrape = reload_prometheus

    def load_rules(self, rules_dir: Path, alertmanager: Path | None = None) -> None:
        """Prometheus loads rules_dir/*.yml (targets kept), Alertmanager `alertmanager`.
        Undo with reset_rules(); the session restores both at its end anyway."""
        promcfg.load_rules(self.cfg, rules_dir, alertmanager)

    def reset_rules(self) -> None:
        """Back to the stack's own rules and Alertmanager config."""
        promcfg.load_rules(self.cfg, self.cfg.rules_dir, self.cfg.alertmanager_source)

    def query(self, promql: str) -> list[Sample]:
        """Prometheus instant query; the `result` list of the HTTP API."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def wait_for_query(
        self,
        promql: str,
        until: Callable[[list[Sample]], bool] = bool,
        timeout: float = 60.0,
    ) -> list[Sample]:
        """Poll `promql` until `until(result)` (default: non-empty); fail after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if until(result):
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"Prometheus: {promql!r} still {result!r} after {timeout:.0f}s")
            time.sleep(0.5)


def _reachable(cfg: Config) -> list[bool]:
    return [
        health.kafka_ok(cfg.kafka_bootstrap),
        health.redis_ok(cfg.ports["REDIS_PORT"]),
        health.http_ok(f"{cfg.prometheus_url}/-/ready"),
        health.http_ok(f"{cfg.alertmanager_url}/-/ready"),
    ]


def _run_stack(command: str) -> None:
    result = subprocess.run([str(STACK_SCRIPT), command], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"deploy/local/stack {command} failed:\n{result.stdout}{result.stderr}")


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    cfg = Config.from_env()
    running = _reachable(cfg)
    if not all(running):
        _run_stack("up")
    config_path = promcfg.active_config_path(cfg)
    original = config_path.read_text() if config_path.exists() else None
    am_path = cfg.alertmanager_config
    am_original = am_path.read_text() if am_path.exists() else None
    try:
        yield Stack(cfg)
    finally:
        if original is not None and config_path.read_text() != original:
            config_path.write_text(original)
            promcfg.reload(cfg)
        if am_original is not None and am_path.read_text() != am_original:
            am_path.write_text(am_original)
            promcfg.reload_alertmanager(cfg)
        if not any(running):
            _run_stack("down")
