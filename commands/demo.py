"""``engagement-monitor demo``: the whole pipeline, live, in one terminal.

Starts a worker and the simulator against the running local stack, points
Prometheus at the worker, and shows the live table until Ctrl-C (or
``--seconds`` / ``DEMO_SECONDS``). Everything it started is stopped by PID on the
way out; the stack stays up (``make down`` stops it) so Prometheus keeps the data.

``--alerts`` (``make demo-drop``) makes it an alerting demo: the stack loads the fast
profile of the rules (deploy/prometheus/rules_gen.py --profile fast: minutes instead of
hours), the ``alerts-webhook`` receiver runs on ``--alerts-port``, traffic is flat (no
daily cycle, no bursts) and the alerts that arrive are shown under the table. With
``--drop`` one community's traffic falls and EngagementDropSudden arrives about half a
minute later. The stack's own rules are loaded back on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from commands import watch
from commands.alerts_webhook import summary_lines
from streams import metric_names as names
from streams.durations import DEFAULT_WINDOWS

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "deploy" / "local" / "stack"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds",
        type=float,
        default=float(os.environ.get("DEMO_SECONDS") or 0),
        help="stop after N seconds [DEMO_SECONDS] (default: until Ctrl-C)",
    )
    parser.add_argument("--rate", type=float, default=300, help="simulated events/s")
    parser.add_argument("--communities", type=int, default=20)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--invalid-share", default="0.01")
    parser.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="COMMUNITY[:F][@AFTER]",
        help="passed to the simulator: cut a community's traffic",
    )
    parser.add_argument("--worker-port", type=int, default=int(os.environ.get("EM_WEB_PORT", 6066)))
    parser.add_argument(
        "--alerts",
        action="store_true",
        help="fast alert rules, flat traffic, the alerts-webhook receiver, "
        "and the alerts it gets shown under the table",
    )
    parser.add_argument(
        "--alerts-port",
        type=int,
        default=9099,
        help="port of the alerts-webhook receiver (default 9099)",
    )


# With --alerts: the windows the fast rules query (10s, 1m), and the ones shown.
FAST_WINDOWS = "10s,1m,5m,1h,1d,7d,30d"
FAST_SHOWN = "10s,1m,5m,1h,1d"


def stack_env() -> dict[str, str]:
    """The client settings of the running stack (``stack env``)."""
    out = subprocess.run([str(STACK), "env"], check=True, capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export ") :].partition("=")
            env[key] = value.strip("'\"")
    return env


def stop(proc: subprocess.Popen[bytes], name: str) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    print(f"stopped {name} (pid {proc.pid})")


def start_alerting(
    args: argparse.Namespace, folder: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """Render the fast profile for the receiver's URL, start the receiver; (it, URL)."""
    url = f"http://127.0.0.1:{args.alerts_port}/alerts"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "deploy" / "prometheus" / "rules_gen.py"),
            "--profile",
            "fast",
            "--rules-out",
            str(folder / "rules"),
            "--alertmanager-out",
            str(folder / "alertmanager.yml"),
            "--set",
            f"webhook_url={url}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with open(folder / "alerts-webhook.log", "ab") as log:
        receiver = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "commands.cli",
                "alerts-webhook",
                "--port",
                str(args.alerts_port),
                "--record",
                str(folder / "alerts.jsonl"),
            ],
            env=env,
            stdout=log,
            stderr=log,
        )
    return receiver, url


def load_fast_rules(folder: Path, env: dict[str, str], metrics_url: str) -> None:
    """Once the worker answers (a target down would inhibit every engagement alert)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            watch.fetch(metrics_url)
            break
        except OSError:
            time.sleep(0.5)
    subprocess.run(
        [
            str(STACK),
            "rules",
            str(folder / "rules"),
            "--alertmanager",
            str(folder / "alertmanager.yml"),
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def alerts_view(url: str, since: str, lines: int = 8) -> Any:
    """The last alerts the receiver got that started after `since` (UTC ISO), one line
    each: Alertmanager may still hold alerts of an earlier run and send them here."""
    from rich.text import Text

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            received = [
                line
                for payload in json.load(response)
                for line in summary_lines(
                    {
                        **payload,
                        "alerts": [
                            a for a in payload.get("alerts", []) if str(a.get("startsAt")) >= since
                        ],
                    }
                )
                if "Watchdog" not in line
            ]
    except (OSError, ValueError) as exc:
        return Text(f"alerts: waiting for the receiver at {url} ({exc})", style="yellow")
    text = Text(f"alerts received at {url} (Watchdog not shown): {len(received)}\n", style="bold")
    for line in received[-lines:] or ["(none yet)"]:
        text.append(line + "\n", style="red" if line.startswith("[FIRING]") else "green")
    return text


def show(watch_args: argparse.Namespace, alerts_url: str, since: str) -> None:
    """watch.run with the alerts (started after `since`) under the table."""
    from rich.console import Console, Group
    from rich.live import Live

    def view() -> Any:
        return Group(watch.render(watch_args), alerts_view(alerts_url, since))

    if watch_args.once:
        Console().print(view())
        return
    deadline = time.monotonic() + watch_args.seconds if watch_args.seconds else None
    with Live(view(), refresh_per_second=4) as live:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(watch_args.interval)
            live.update(view())


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    env = {**os.environ, **stack_env()}
    state = Path(env.get("EM_STATE_DIR", REPO / ".state"))
    logs = state / "demo"
    logs.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "EM_APP_ID": env.get("EM_APP_ID", "engagement-monitor-demo"),
            "EM_DATA_DIR": str(logs / "worker-data"),
            "EM_WEB_PORT": str(args.worker_port),
            "EM_SESSION_TIMEOUT": "10s",
            "EM_REBALANCE_TIMEOUT": "10s",
            "EM_HEARTBEAT_INTERVAL": "2s",
            "EM_LOG_LEVEL": "warn",
        }
    )
    exe = [sys.executable, "-m", "commands.cli"]
    target = f"127.0.0.1:{args.worker_port}"
    subprocess.run([str(STACK), "scrape", target], check=True, env=env, stdout=subprocess.DEVNULL)
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    alerts_url, since = "", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    if args.alerts:
        env["EM_WINDOWS"] = FAST_WINDOWS
    try:
        if args.alerts:
            receiver, alerts_url = start_alerting(args, logs, env)
            started.append((receiver, "alerts-webhook"))
        with open(logs / "worker.log", "ab") as log:
            worker = subprocess.Popen([*exe, "worker"], env=env, stdout=log, stderr=log)
        started.append((worker, "worker"))
        if args.alerts:
            load_fast_rules(logs, env, f"http://{target}/metrics")
            console.print(
                f"fast alert rules loaded; alerts-webhook on {alerts_url} "
                f"(log {logs}/alerts-webhook.log)"
            )
        sim_cmd = [
            *exe,
            "simulate",
            "--rate",
            str(args.rate),
            "--communities",
            str(args.communities),
            "--users",
            str(args.users),
            "--invalid-share",
            args.invalid_share,
            "--quiet",
        ]
        if args.alerts:  # the daily cycle and bursts would be "drops" in minutes
            sim_cmd += ["--daily-amplitude", "0", "--burst-every", "0"]
        for drop in args.drop:
            sim_cmd += ["--drop", drop]
        with open(logs / "simulate.log", "ab") as log:
            simulator = subprocess.Popen(sim_cmd, env=env, stdout=log, stderr=log)
        started.append((simulator, "simulator"))
        prom = env.get("PROMETHEUS_URL", "http://127.0.0.1:9090")
        query = f'sum without (instance, job) ({names.ACTIVE_USERS}{{community="*"}})'
        console.print(f"worker pid {worker.pid} → http://{target}/metrics (log {logs}/worker.log)")
        console.print(f"simulator pid {simulator.pid}, {args.rate:g} events/s")
        console.print(f"Prometheus: {prom}/graph?g0.expr={urllib.parse.quote(query)}")
        console.print(f"  PromQL to paste: [bold]{query}[/bold]")
        console.print("Ctrl-C stops the worker and the simulator; `make down` stops the stack.")
        watch_args = argparse.Namespace(
            url=f"http://{target}/metrics",
            windows=FAST_SHOWN if args.alerts else DEFAULT_WINDOWS,
            top=12,
            interval=1.0,
            seconds=args.seconds,
            once=False,
        )
        display = (lambda a: show(a, alerts_url, since)) if args.alerts else watch.run
        try:
            display(watch_args)
        except KeyboardInterrupt:
            pass
        for proc, name in started:
            if proc.poll() is not None:
                console.print(f"[red]{name} exited with {proc.returncode}; see {logs}[/red]")
                return 1
        watch_args.once = True
        display(watch_args)
        return 0
    finally:
        for proc, name in reversed(started):
            stop(proc, name)
        if args.alerts:
            subprocess.run([str(STACK), "rules", "--reset"], env=env, stdout=subprocess.DEVNULL)
            console.print("the stack's own alert rules are loaded again")
