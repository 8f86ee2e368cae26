"""``engagement-monitor demo``: the whole pipeline, live, in one terminal.

Starts a worker and the simulator against the running local stack, points
Prometheus at the worker, and shows the live table until Ctrl-C (or
``--seconds`` / ``DEMO_SECONDS``). Everything it started is stopped by PID on the
way out; the stack stays up (``make down`` stops it) so Prometheus keeps the data.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "deploy" / "local" / "stack"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float,
                        default=float(os.environ.get("DEMO_SECONDS") or 0),
                        help="stop after N seconds [DEMO_SECONDS] (default: until Ctrl-C)")
    parser.add_argument("--rate", type=float, default=300, help="simulated events/s")
    parser.add_argument("--communities", type=int, default=20)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--invalid-share", default="0.01")
    parser.add_argument("--drop", action="append", default=[], metavar="COMMUNITY[:F][@AFTER]",
                        help="passed to the simulator: cut a community's traffic")
    parser.add_argument("--worker-port", type=int, default=int(os.environ.get("EM_WEB_PORT", 6066)))


def stack_env() -> dict[str, str]:
    """The client settings of the running stack (``stack env``)."""
    out = subprocess.run([str(STACK), "env"], check=True, capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
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


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from streams import watch

    console = Console()
    env = {**os.environ, **stack_env()}
    state = Path(env.get("EM_STATE_DIR", REPO / ".state"))
    logs = state / "demo"
    logs.mkdir(parents=True, exist_ok=True)
    env.update({
        "EM_APP_ID": env.get("EM_APP_ID", "engagement-monitor-demo"),
        "EM_DATA_DIR": str(logs / "worker-data"),
        "EM_WEB_PORT": str(args.worker_port),
        "EM_SESSION_TIMEOUT": "10s", "EM_REBALANCE_TIMEOUT": "10s",
        "EM_HEARTBEAT_INTERVAL": "2s", "EM_LOG_LEVEL": "warn",
    })
    exe = [sys.executable, "-m", "streams.cli"]
    target = f"127.0.0.1:{args.worker_port}"
    subprocess.run([str(STACK), "scrape", target], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        with open(logs / "worker.log", "ab") as log:
            worker = subprocess.Popen([*exe, "worker"], env=env, stdout=log, stderr=log)
        started.append((worker, "worker"))
        sim_cmd = [*exe, "simulate", "--rate", str(args.rate), "--communities",
                   str(args.communities), "--users", str(args.users), "--invalid-share",
                   args.invalid_share, "--quiet"]
        for drop in args.drop:
            sim_cmd += ["--drop", drop]
        with open(logs / "simulate.log", "ab") as log:
            simulator = subprocess.Popen(sim_cmd, env=env, stdout=log, stderr=log)
        started.append((simulator, "simulator"))
        prom = env.get("PROMETHEUS_URL", "http://127.0.0.1:9090")
        query = 'sum without (instance, job) (engagement_active_users{community="*"})'
        console.print(f"worker pid {worker.pid} → http://{target}/metrics (log {logs}/worker.log)")
        console.print(f"simulator pid {simulator.pid}, {args.rate:g} events/s")
        console.print(f"Prometheus: {prom}/graph?g0.expr={urllib.parse.quote(query)}")
        console.print(f"  PromQL to paste: [bold]{query}[/bold]")
        console.print("Ctrl-C stops the worker and the simulator; `make down` stops the stack.")
        watch_args = argparse.Namespace(url=f"http://{target}/metrics",
                                        windows="5m,1h,1d,7d,30d", top=12, interval=1.0,
                                        seconds=args.seconds, once=False)
        try:
            watch.run(watch_args)
        except KeyboardInterrupt:
            pass
        for proc, name in started:
            if proc.poll() is not None:
                console.print(f"[red]{name} exited with {proc.returncode}; see {logs}[/red]")
                return 1
        watch_args.once = True
        watch.run(watch_args)
        return 0
    finally:
        for proc, name in reversed(started):
            stop(proc, name)
        time.sleep(0)
