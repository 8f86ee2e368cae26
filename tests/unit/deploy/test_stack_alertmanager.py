"""The local stack's Alertmanager: the repo's receivers without their webhooks (a plain
stack runs no alerts-webhook on 127.0.0.1:9099, and would log "connection refused"
every few seconds), the webhooks kept with EM_ALERTS_WEBHOOK=on or another config."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "deploy" / "local"))

from emstack import promcfg  # noqa: E402
from emstack.config import DEFAULT_ALERTMANAGER_CONFIG, Config  # noqa: E402

RECEIVERS = ("page", "ticket", "info", "watchdog")


def stack(tmp_path: Path, **env: str) -> Config:
    return Config.from_env({"EM_STATE_DIR": str(tmp_path), **env})


def test_plain_stack_drops_the_webhooks_keeps_the_receivers(tmp_path: Path) -> None:
    written = promcfg.write_alertmanager_config(stack(tmp_path)).read_text()
    original = DEFAULT_ALERTMANAGER_CONFIG.read_text()
    assert original.count("webhook_configs:") == len(RECEIVERS)
    assert "webhook_configs" not in written and "9099" not in written
    for name in RECEIVERS:
        assert f"  - name: {name}\n" in written
    assert written.split("receivers:")[0] == original.split("receivers:")[0]  # routes, inhibits
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool is missing")
    path = tmp_path / "alertmanager" / "alertmanager.yml"
    done = subprocess.run(
        [amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_webhooks_on_request_and_other_configs_untouched(tmp_path: Path) -> None:
    on = stack(tmp_path, EM_ALERTS_WEBHOOK="on")
    assert on.alerts_webhook
    written = promcfg.write_alertmanager_config(on).read_bytes()
    assert written == DEFAULT_ALERTMANAGER_CONFIG.read_bytes()
    mine = tmp_path / "mine.yml"
    mine.write_text(DEFAULT_ALERTMANAGER_CONFIG.read_text())
    plain = dataclasses.replace(stack(tmp_path), alertmanager_source=mine)
    assert promcfg.write_alertmanager_config(plain).read_bytes() == mine.read_bytes()
