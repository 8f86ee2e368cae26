"""deploy/local/stack: install | up | down | status | logs | scrape | rules | env."""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from emstack import health, install, procs, promcfg
from emstack.config import Config, StackError, parse_targets
from emstack.log import say, warn
from emstack.services import SERVICES, Service, by_name


@contextmanager
def _state_lock(cfg: Config) -> Iterator[None]:
    """One up/down at a time per state folder."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    with open(cfg.state_dir / "stack.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _check_ports(cfg: Config, services: list[Service]) -> None:
    for service in services:
        if procs.read_pid(cfg.pid_file(service.name)) is not None:
            continue
        for var in service.port_vars + (service.secure_port_vars if cfg.secure else ()):
            port = cfg.ports[var]
            if not procs.port_free(port):
                raise StackError(
                    f"port {port} ({var}, for {service.name}) is already in use by another "
                    f"process; set {var} to a free port"
                )


def _wait_ready(cfg: Config, service: Service, started: float) -> None:
    deadline = started + service.start_timeout
    pid_file = cfg.pid_file(service.name)
    while not service.ready(cfg):
        if procs.read_pid(pid_file) is None:
            raise StackError(
                f"{service.name} exited; last lines of {cfg.log_file(service.name)}:"
                f"\n{procs.tail(cfg.log_file(service.name), 25)}"
            )
        if time.monotonic() > deadline:
            raise StackError(
                f"{service.name} not ready after {service.start_timeout:.0f}s; "
                f"see {cfg.log_file(service.name)}"
            )
        time.sleep(0.3)
    say(f"{service.name} up on {service.address(cfg)} ({time.monotonic() - started:.1f}s)")


def _start(cfg: Config, service: Service) -> bool:
    """Start service unless ours runs already; True if this call started it."""
    pid = procs.read_pid(cfg.pid_file(service.name))
    if pid is not None:
        say(f"{service.name} already running (pid {pid})")
        if service.name == "prometheus":
            promcfg.write(cfg)
            promcfg.reload(cfg)
        elif service.name == "alertmanager":
            promcfg.write_alertmanager_config(cfg)
            promcfg.reload_alertmanager(cfg)
        return False
    cmd = service.prepare(cfg)
    procs.spawn(cmd, cfg.log_file(service.name), cfg.pid_file(service.name), service.env(cfg))
    return True


def cmd_up(cfg: Config, _args: argparse.Namespace) -> int:
    install.ensure_installed(with_maven=cfg.kafka_home is None)
    health.require_aiokafka()
    promcfg.ensure_alertmanager_config(cfg)
    started_at = time.monotonic()
    with _state_lock(cfg):
        _check_ports(cfg, list(SERVICES))
        started: list[Service] = []
        try:
            for service in SERVICES:
                if _start(cfg, service):
                    started.append(service)
            for service in SERVICES:
                _wait_ready(cfg, service, started_at)
        except BaseException:
            for service in started:
                procs.stop(cfg.pid_file(service.name), service.stop_timeout)
            raise
    say(f"stack up in {time.monotonic() - started_at:.1f}s (state: {cfg.state_dir})")
    return 0


def cmd_down(cfg: Config, _args: argparse.Namespace) -> int:
    stopped = 0
    with _state_lock(cfg):
        for service in reversed(SERVICES):
            if procs.stop(cfg.pid_file(service.name), service.stop_timeout):
                say(f"{service.name} stopped")
                stopped += 1
    if not stopped:
        say(f"nothing was running (state: {cfg.state_dir})")
    return 0


def cmd_status(cfg: Config, _args: argparse.Namespace) -> int:
    running = 0
    for service in SERVICES:
        pid = procs.read_pid(cfg.pid_file(service.name))
        if pid is not None:
            state = "ready" if service.ready(cfg) else "not ready"
            running += state == "ready"
            say(f"{service.name:<13} running (pid {pid}, {state}) on {service.address(cfg)}")
        elif not procs.port_free(cfg.ports[service.port_vars[0]]):
            say(f"{service.name:<13} stopped; {service.address(cfg)} is used by another process")
        else:
            say(f"{service.name:<13} stopped")
    say(f"state: {cfg.state_dir}")
    return 0 if running == len(SERVICES) else 1


def cmd_logs(cfg: Config, args: argparse.Namespace) -> int:
    names = [args.service] if args.service else [s.name for s in SERVICES]
    files = [cfg.log_file(by_name(name).name) for name in names]
    if args.follow:
        os.execvp("tail", ["tail", "-n", str(args.lines), "-F", *map(str, files)])
    for name, path in zip(names, files, strict=True):
        say(f"==> {name}: {path}")
        say(procs.tail(path, args.lines) or "(no log yet)")
    return 0


def cmd_scrape(cfg: Config, args: argparse.Namespace) -> int:
    path = promcfg.scrape(cfg, parse_targets(args.targets))
    say(f"prometheus reloaded: {path} scrapes {args.targets}")
    return 0


def cmd_rules(cfg: Config, args: argparse.Namespace) -> int:
    if args.reset:
        if args.dir or args.alertmanager:
            raise StackError("--reset takes no rules folder and no --alertmanager")
        rules, alertmanager = cfg.rules_dir, cfg.alertmanager_source
    else:
        if args.dir is None:
            raise StackError("name a rules folder, or --reset")
        rules, alertmanager = Path(args.dir), args.alertmanager and Path(args.alertmanager)
    path = promcfg.load_rules(cfg, rules, alertmanager)
    say(f"prometheus reloaded: {path} loads {rules.resolve()}/*.yml")
    if alertmanager:
        say(f"alertmanager reloaded: {cfg.alertmanager_config} (from {alertmanager})")
    return 0


def cmd_env(cfg: Config, _args: argparse.Namespace) -> int:
    say(f"export KAFKA_BOOTSTRAP_SERVERS={cfg.kafka_bootstrap}")
    say(f"export REDIS_URL={cfg.redis_url}")
    say(f"export PROMETHEUS_URL={cfg.prometheus_url}")
    say(f"export ALERTMANAGER_URL={cfg.alertmanager_url}")
    if cfg.secure:
        for line in secure_env_lines(cfg):
            say(line)
    return 0


def secure_env_lines(cfg: Config) -> list[str]:
    """EM_STACK_SECURE: the settings for each secure listener, as comments to pick from."""
    folder, ports = cfg.state_dir / "tls", cfg.ports
    ca = f"EM_KAFKA_SSL_CA_FILE={folder / 'ca.pem'}"
    return [
        "# SASL_SSL, SCRAM-SHA-512:",
        f"#   export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{ports['KAFKA_SASL_SSL_PORT']} "
        "EM_KAFKA_SECURITY_PROTOCOL=SASL_SSL EM_KAFKA_SASL_MECHANISM=SCRAM-SHA-512 "
        "EM_KAFKA_SASL_USERNAME=em-monitor "
        f"EM_KAFKA_SASL_PASSWORD_FILE={folder / 'kafka-password'} {ca}",
        "# mutual TLS:",
        f"#   export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{ports['KAFKA_SSL_PORT']} "
        f"EM_KAFKA_SECURITY_PROTOCOL=SSL {ca} EM_KAFKA_SSL_CERT_FILE={folder / 'client.pem'} "
        f"EM_KAFKA_SSL_KEY_FILE={folder / 'client.key'}",
        "# Redis over TLS with the ACL user:",
        f"#   export REDIS_URL=rediss://em-monitor@127.0.0.1:{ports['REDIS_TLS_PORT']}/0 "
        f"EM_REDIS_PASSWORD_FILE={folder / 'redis-password'} "
        f"EM_REDIS_SSL_CA_FILE={folder / 'ca.pem'}",
    ]


def cmd_install(cfg: Config, _args: argparse.Namespace) -> int:
    install.ensure_installed(with_maven=cfg.kafka_home is None)
    say("all stack packages are installed")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="apt-get install the missing packages").set_defaults(
        func=cmd_install
    )
    sub.add_parser("up", help="start what is not running; return when all are ready").set_defaults(
        func=cmd_up
    )
    sub.add_parser("down", help="stop what up started").set_defaults(func=cmd_down)
    sub.add_parser("status", help="exit 0 only if all services run").set_defaults(func=cmd_status)
    logs = sub.add_parser("logs", help="last lines of the services' logs")
    logs.add_argument("service", nargs="?", choices=[s.name for s in SERVICES])
    logs.add_argument("-n", "--lines", type=int, default=40)
    logs.add_argument("-f", "--follow", action="store_true")
    logs.set_defaults(func=cmd_logs)
    scrape = sub.add_parser("scrape", help="point Prometheus at worker targets and reload")
    scrape.add_argument("targets", help="host:port[,host:port...]")
    scrape.set_defaults(func=cmd_scrape)
    rules = sub.add_parser(
        "rules", help="load another rules folder (and Alertmanager config) and reload"
    )
    rules.add_argument("dir", nargs="?", help="folder of *.yml rule files")
    rules.add_argument("--alertmanager", metavar="FILE", help="alertmanager.yml to load too")
    rules.add_argument(
        "--reset",
        action="store_true",
        help="back to EM_RULES_DIR and EM_ALERTMANAGER_CONFIG (the defaults)",
    )
    rules.set_defaults(func=cmd_rules)
    sub.add_parser("env", help="print client settings as shell exports").set_defaults(func=cmd_env)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(Config.from_env(), args))
    except StackError as exc:
        warn(str(exc))
        return 1
    except KeyboardInterrupt:
        warn("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
