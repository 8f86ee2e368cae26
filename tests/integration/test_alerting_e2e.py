"""Alerting end to end on the real stack, with the fast profile of the rules.

Steady simulated traffic in four communities, then one community's traffic drops to
2 %: EngagementDropSudden fires in Prometheus for that community only and arrives at
the alerts-webhook receiver through Alertmanager. Then the worker is SIGKILLed:
EngagementWorkerDown fires and arrives, and the engagement alerts that the dead
pipeline now causes (EngagementStopped for every community: no events counted) are
inhibited in Alertmanager and never reach the receiver.

The fast profile (deploy/prometheus/thresholds.toml [fast]) turns hours into seconds:
windows 10s/1m instead of 5m/1h, `for:` 10-20s, evaluation every 5s. Timeline, from
the simulator's start: the drop at 90s (the rule compares with 1m earlier, so the
steady level must be a minute old first), the alert fires about 30s later; the worker
dies; WorkerDown fires about 15s later, EngagementStopped about 75s later. About 4
minutes in all. The stack's own rules and Alertmanager config are restored at the end.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agents.kafka_admin import ensure_topics
from bench.workers import REPO, Worker, free_port
from tests.integration.conftest import Stack, promcfg

# Bounded polls fail with their own messages first; their bounds add up to ~13 minutes.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

T = TypeVar("T")

# The windows the fast rules query (10s, 1m) plus the defaults.
WINDOWS = "10s,1m,5m,1h,1d,7d,30d"
COMMUNITIES = [f"brand-{i:02d}" for i in range(4)]
DROPPED = "brand-01"
DROP_AFTER_S = 90
# Four communities, 100 events/s, flat: the smallest still has ~10 active users in 10s,
# and none of them falls below half its level a minute earlier (the rule says 0.3).
SIMULATE = [
    "--communities",
    str(len(COMMUNITIES)),
    "--users",
    "2000",
    "--rate",
    "100",
    "--daily-amplitude",
    "0",
    "--burst-every",
    "0",
    "--no-preload-follows",
    "--drop",
    f"{DROPPED}:0.02@{DROP_AFTER_S}s",
    "--quiet",
]
# Bounds: Prometheus fires ~35s after the drop (10s window drains, for: 20s, 5s
# evaluations); Alertmanager notifies within group_wait 1s / group_interval 5s.
DROP_FIRES_WITHIN = 100.0
NOTIFIED_WITHIN = 30.0
WORKER_DOWN_WITHIN = 60.0
INHIBITED_WITHIN = 150.0
# The rules sum over instances and look back up to 2m (`offset 2m` of a 1m window): a
# series of the same communities from an earlier worker in that range would be compared
# with ours. Such series must be older than this before we start.
QUIET_BEFORE = "2m10s"
QUIET_WITHIN = 150.0


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


class Receiver:
    """`engagement-monitor alerts-webhook` in a subprocess on a free port."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/alerts"
        self.log_path = folder / "alerts-webhook.log"
        self.started = time.time()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "commands.cli",
                    "alerts-webhook",
                    "--port",
                    str(self.port),
                    "--record",
                    str(folder / "alerts.jsonl"),
                ],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text(errors="replace")
            try:
                _get(self.url)
                return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"alerts-webhook not listening after {timeout}s")

    def alerts(self, everything: bool = False) -> list[tuple[str, dict[str, str]]]:
        """(status, labels) of the alerts received, oldest first: those that started
        after this receiver did, unless `everything` (Alertmanager may still hold, and
        send here, alerts of an earlier run until they expire)."""
        return [
            (str(a.get("status")), dict(a.get("labels") or {}))
            for payload in _get(self.url)
            for a in payload.get("alerts", [])
            if everything or _epoch(str(a.get("startsAt"))) >= self.started - 1
        ]

    def firing(self, alertname: str) -> list[dict[str, str]]:
        return [
            labels
            for status, labels in self.alerts()
            if status == "firing" and labels.get("alertname") == alertname
        ]

    def describe(self) -> str:
        lines = [
            f"  {status:<8} {labels.get('alertname')} "
            f"{labels.get('platform', '-')}/{labels.get('community', '-')}"
            for status, labels in self.alerts(everything=True)
        ]
        return "received by the webhook:\n" + ("\n".join(lines) or "  (nothing)")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _epoch(rfc3339: str) -> float:
    """Alertmanager's startsAt (nanoseconds, Z) as epoch seconds; 0 if unreadable."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", rfc3339)
    if not match:
        return 0.0
    zone = "+00:00" if match[3] == "Z" else match[3]
    return datetime.fromisoformat(match[1] + (match[2] or "")[:7] + zone).timestamp()


def _alertmanager_alerts(stack: Stack) -> list[dict[str, Any]]:
    """Every alert Alertmanager holds: active, silenced and inhibited."""
    return list(_get(f"{stack.alertmanager_url}/api/v2/alerts"))


# Alerts that inhibit every engagement alert (deploy/alertmanager/alertmanager.yml).
PIPELINE_DOWN = ("EngagementWorkerDown", "EngagementWorkerAbsent", "EngagementWatermarkStale")


def _resolve_in_alertmanager(stack: Stack, keep: Callable[[dict[str, str]], bool]) -> None:
    """Resolve the active alerts whose labels pass `keep`, by posting them with endsAt now.

    Switching rule files orphans alerts: Prometheus drops the old rules' alerts without
    sending them as resolved, so Alertmanager keeps them (and their inhibitions) until
    they expire, up to 4 minutes later. A rule still firing sends its alert again."""
    now = datetime.now(UTC).isoformat()
    stale = [
        {
            "labels": a["labels"],
            "annotations": a.get("annotations", {}),
            "startsAt": a["startsAt"],
            "endsAt": now,
        }
        for a in _alertmanager_alerts(stack)
        if keep(a["labels"])
    ]
    if stale:
        request = urllib.request.Request(
            f"{stack.alertmanager_url}/api/v2/alerts",
            data=json.dumps(stale).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


def _prom_alerts(stack: Stack, where: str = "") -> list[dict[str, str]]:
    return [s["metric"] for s in stack.query(f"ALERTS{{{where}}}")]


def _show(labels: list[dict[str, str]]) -> str:
    return (
        ", ".join(
            f"{m.get('alertname')}[{m.get('alertstate', '')}] "
            f"{m.get('platform', '-')}/{m.get('community', '-')}"
            for m in labels
        )
        or "(none)"
    )


def _poll(
    what: str,
    check: Callable[[], T | None],
    timeout: float,
    explain: Callable[[], str],
    every: float = 1.0,
) -> tuple[T, float]:
    """check() until it returns something; (that, seconds waited); fail after timeout."""
    started = time.monotonic()
    while True:
        got = check()
        if got:
            return got, time.monotonic() - started
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout:.0f}s\n{explain()}")
        time.sleep(every)


def _wait_no_recent_series(stack: Stack) -> None:
    """Until no earlier worker's series of our communities is within the rules' reach."""
    recent = (
        f"count(last_over_time(engagement_active_users{{community=~"
        f'"{"|".join(COMMUNITIES)}"}}[{QUIET_BEFORE}]))'
    )
    if stack.query(recent):
        print(f"\nwaiting for earlier series of {COMMUNITIES} to age past {QUIET_BEFORE}")
        stack.wait_for_query(recent, until=lambda result: not result, timeout=QUIET_WITHIN)


def test_drop_alert_then_worker_down_inhibits(stack: Stack, tmp_path: Path) -> None:
    begin = time.monotonic()
    rules, am_yml = tmp_path / "rules", tmp_path / "alertmanager.yml"
    receiver = Receiver(tmp_path)
    subprocess.run(
        [
            sys.executable,
            str(REPO / "deploy" / "prometheus" / "rules_gen.py"),
            "--profile",
            "fast",
            "--rules-out",
            str(rules),
            "--alertmanager-out",
            str(am_yml),
            "--set",
            f"webhook_url={receiver.url}",
        ],
        check=True,
        capture_output=True,
    )
    app_id = stack.unique_name("e2e-alerts")
    topic, dlq = f"{app_id}-in", f"{app_id}-dlq"
    asyncio.run(ensure_topics(stack.kafka_bootstrap, {topic: 4, dlq: 1}))
    worker = Worker(
        stack.kafka_bootstrap,
        app_id,
        topic,
        dlq,
        tmp_path / "data",
        EM_CLOCK="wall",
        EM_WINDOWS=WINDOWS,
        REDIS_URL=stack.redis_url,
    )
    simulator: subprocess.Popen[bytes] | None = None
    loaded, target = False, ""
    targets_before = promcfg.rendered(promcfg.active_config_path(stack.cfg))[0]
    try:
        receiver.wait_ready()
        _wait_no_recent_series(stack)
        worker.start().wait_metrics()
        target = f"127.0.0.1:{worker.port}"
        # Scrape the worker before loading the fast rules: a dead default target would
        # raise EngagementWorkerDown, which inhibits every engagement alert.
        stack.scrape([target])
        stack.wait_for_query(f'up{{instance="{target}"}} == 1', timeout=30)
        stack.load_rules(rules, am_yml)
        loaded = True
        # Leftovers of an earlier run would inhibit ours, or lend ours their startsAt.
        _resolve_in_alertmanager(
            stack,
            lambda labels: (
                labels.get("alertname") in PIPELINE_DOWN or labels.get("community") in COMMUNITIES
            ),
        )

        with open(tmp_path / "simulate.log", "ab") as log:
            simulator = subprocess.Popen(
                [sys.executable, "-m", "commands.cli", "simulate", *SIMULATE],
                env={**worker.env, "EM_INPUT_TOPIC": topic},
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        sim_start = time.monotonic()
        ours = f'community=~"{"|".join(COMMUNITIES)}"'
        steady = f'community=~"{"|".join(c for c in COMMUNITIES if c != DROPPED)}"'
        drops = 'alertname=~"EngagementDrop.*"'

        def explain() -> str:
            return (
                f"Prometheus ALERTS of ours: {_show(_prom_alerts(stack, ours))}\n"
                f"{receiver.describe()}\nworker log:\n{worker.log_tail(20)}"
            )

        # 1. The drop: firing in Prometheus for the dropped community, and only there.
        def drop_firing() -> list[dict[str, str]] | None:
            assert worker.alive(), f"worker died:\n{worker.log_tail()}"
            assert simulator is not None and simulator.poll() is None, "simulator exited"
            noisy = _prom_alerts(stack, f"{drops}, {steady}")
            assert not noisy, f"steady communities alert: {_show(noisy)}\n{explain()}"
            return _prom_alerts(
                stack,
                f'alertname="EngagementDropSudden", community="{DROPPED}", alertstate="firing"',
            )

        firing, _ = _poll(
            "EngagementDropSudden firing in Prometheus",
            drop_firing,
            DROP_AFTER_S + DROP_FIRES_WITHIN,
            explain,
        )
        fired_at = time.monotonic() - sim_start
        print(
            f"\nEngagementDropSudden firing {fired_at - DROP_AFTER_S:.0f}s after the drop: "
            f"{_show(firing)}"
        )

        # 2. ... and it arrives at the webhook.
        def drop_notified() -> list[dict[str, str]]:
            return [
                a for a in receiver.firing("EngagementDropSudden") if a.get("community") == DROPPED
            ]

        arrived, waited = _poll(
            "EngagementDropSudden at the webhook", drop_notified, NOTIFIED_WITHIN, explain
        )
        print(f"... at the webhook {waited:.0f}s later: {_show(arrived)}")
        wrong = [
            labels
            for status, labels in receiver.alerts()
            if labels.get("alertname", "").startswith("EngagementDrop")
            and labels.get("community") != DROPPED
        ]
        assert not wrong, f"steady communities notified: {_show(wrong)}\n{explain()}"
        assert all(a["severity"] == "page" for a in arrived), arrived

        # 3. The worker dies: WorkerDown fires and arrives.
        worker.kill()
        killed, before_kill = time.monotonic(), len(receiver.alerts())
        down, waited = _poll(
            "EngagementWorkerDown firing in Prometheus",
            lambda: _prom_alerts(
                stack, f'alertname="EngagementWorkerDown", instance="{target}", alertstate="firing"'
            ),
            WORKER_DOWN_WITHIN,
            explain,
        )
        print(f"EngagementWorkerDown firing {waited:.0f}s after SIGKILL")
        _, waited = _poll(
            "EngagementWorkerDown at the webhook",
            lambda: [
                a for a in receiver.firing("EngagementWorkerDown") if a.get("instance") == target
            ],
            NOTIFIED_WITHIN,
            explain,
        )
        print(f"... at the webhook {waited:.0f}s later")

        # 4. The dead pipeline makes engagement alerts fire (no events counted any
        # more: EngagementStopped), and Alertmanager inhibits every one of them.
        def engagement_in_alertmanager() -> list[dict[str, Any]]:
            return [
                a
                for a in _alertmanager_alerts(stack)
                if a["labels"].get("component") == "engagement"
                and a["labels"].get("community") in COMMUNITIES
            ]

        def explain_am() -> str:
            held = [
                f"  {a['labels'].get('alertname')} {a['labels'].get('platform')}/"
                f"{a['labels'].get('community')} state={a['status']['state']} "
                f"inhibitedBy={a['status']['inhibitedBy']}"
                for a in _alertmanager_alerts(stack)
            ]
            return "Alertmanager holds:\n" + "\n".join(held) + "\n" + explain()

        def stopped_everywhere() -> list[dict[str, Any]] | None:
            held = engagement_in_alertmanager()
            stopped = {
                a["labels"]["community"]
                for a in held
                if a["labels"]["alertname"] == "EngagementStopped"
            }
            return held if stopped >= set(COMMUNITIES) - {DROPPED} else None

        held, _ = _poll(
            "EngagementStopped of every steady community in Alertmanager",
            stopped_everywhere,
            INHIBITED_WITHIN,
            explain_am,
            every=2.0,
        )
        print(
            f"engagement alerts in Alertmanager {time.monotonic() - killed:.0f}s after "
            f"SIGKILL: {len(held)}"
        )
        loose = [
            a
            for a in held
            if a["status"]["state"] != "suppressed" or not a["status"]["inhibitedBy"]
        ]
        assert not loose, f"engagement alerts not inhibited\n{explain_am()}"
        time.sleep(3)  # longer than group_wait + a webhook round trip
        leaked = [
            labels
            for status, labels in receiver.alerts()[before_kill:]
            if status == "firing"
            and labels.get("alertname") == "EngagementStopped"
            and labels.get("community") in COMMUNITIES
        ]
        assert not leaked, f"inhibited alerts reached the webhook: {_show(leaked)}"
        print(f"e2e alerting test: {time.monotonic() - begin:.0f}s")
    finally:
        if simulator is not None and simulator.poll() is None:
            simulator.terminate()
            try:
                simulator.wait(30)
            except subprocess.TimeoutExpired:
                simulator.kill()
                simulator.wait(10)
        worker.kill()
        receiver.stop()
        if targets_before is not None:
            stack.scrape(targets_before)
        if loaded:
            stack.reset_rules()
            _resolve_in_alertmanager(
                stack,
                lambda labels: (
                    labels.get("instance") == target or labels.get("community") in COMMUNITIES
                ),
            )
