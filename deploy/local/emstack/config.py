"""Where the stack lives and which ports it uses, all from environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

# The Kafka release the project is tested with (Maven Central, org.apache.kafka:kafka_2.13).
KAFKA_VERSION = "4.4.0"

# env var -> default port; the controller listener is Kafka's KRaft quorum port.
PORT_DEFAULTS = {
    "KAFKA_PORT": 9092,
    "KAFKA_CONTROLLER_PORT": 9095,
    "REDIS_PORT": 6379,
    "PROMETHEUS_PORT": 9090,
    "ALERTMANAGER_PORT": 9093,
    # EM_STACK_SECURE=1 only: Kafka SASL_SSL (SCRAM) and mutual-TLS listeners, Redis TLS
    "KAFKA_SASL_SSL_PORT": 9094,
    "KAFKA_SSL_PORT": 9096,
    "REDIS_TLS_PORT": 6380,
}

DEFAULT_SCRAPE_TARGETS = "127.0.0.1:6066"

# What Prometheus and Alertmanager load at `up` (EM_RULES_DIR, EM_ALERTMANAGER_CONFIG);
# `stack rules` swaps them at run time (e.g. the fast profile of rules_gen.py).
DEFAULT_RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
DEFAULT_ALERTMANAGER_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"


class StackError(Exception):
    """A failure with a message meant for the person running the stack."""


def _port(env: dict[str, str], name: str) -> int:
    raw = env.get(name) or str(PORT_DEFAULTS[name])
    try:
        port = int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise StackError(f"{name}={port} is out of range 1-65535")
    return port


def _cache_root(env: dict[str, str]) -> Path:
    if env.get("EM_CACHE_DIR"):
        return Path(env["EM_CACHE_DIR"])
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "engagement-monitor"


def _token_file(env: dict[str, str], state: Path) -> Path | None:
    if env.get("EM_HTTP_TOKEN_FILE"):
        return Path(env["EM_HTTP_TOKEN_FILE"]).resolve()
    if env.get("EM_HTTP_TOKEN"):
        return state / "prometheus" / "http-token"
    return None


@dataclass(frozen=True)
class Config:
    """Everything `up`, `down` and the tests need to know about one stack."""

    state_dir: Path
    cache_dir: Path
    kafka_version: str
    kafka_home: Path | None
    ports: dict[str, int]
    scrape_targets: tuple[str, ...]
    rules_dir: Path = DEFAULT_RULES_DIR
    alertmanager_source: Path = DEFAULT_ALERTMANAGER_CONFIG
    #: EM_STACK_SECURE: Kafka and Redis also get TLS (and SASL) listeners
    secure: bool = False
    #: EM_HTTP_TOKEN (the workers' bearer token), for Prometheus' scrape config
    http_token: str = field(default="", repr=False)
    #: EM_HTTP_TOKEN_FILE, or where the stack writes EM_HTTP_TOKEN for Prometheus
    http_token_file: Path | None = None
    #: EM_ALERTS_WEBHOOK=on: keep the repo config's webhook receivers (127.0.0.1:9099;
    #: run `engagement-monitor alerts-webhook`); else a plain stack drops them
    alerts_webhook: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Config:
        env = dict(os.environ if env is None else env)
        state = Path(env.get("EM_STATE_DIR") or REPO / ".state").resolve()
        home = env.get("KAFKA_HOME")
        targets = parse_targets(env.get("EM_SCRAPE_TARGETS") or DEFAULT_SCRAPE_TARGETS)
        return cls(
            state_dir=state,
            cache_dir=_cache_root(env),
            kafka_version=env.get("EM_KAFKA_VERSION") or KAFKA_VERSION,
            kafka_home=Path(home).resolve() if home else None,
            ports={name: _port(env, name) for name in PORT_DEFAULTS},
            scrape_targets=targets,
            rules_dir=Path(env.get("EM_RULES_DIR") or DEFAULT_RULES_DIR).resolve(),
            alertmanager_source=Path(
                env.get("EM_ALERTMANAGER_CONFIG") or DEFAULT_ALERTMANAGER_CONFIG
            ).resolve(),
            secure=env.get("EM_STACK_SECURE", "").lower() in ("1", "true", "yes"),
            http_token=env.get("EM_HTTP_TOKEN", ""),
            http_token_file=_token_file(env, state),
            alerts_webhook=env.get("EM_ALERTS_WEBHOOK", "").lower() in ("1", "on", "true"),
        )

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['KAFKA_PORT']}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports['REDIS_PORT']}/0"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['PROMETHEUS_PORT']}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['ALERTMANAGER_PORT']}"

    @property
    def prometheus_config(self) -> Path:
        """The rendered config that the running Prometheus reads."""
        return self.state_dir / "prometheus" / "prometheus.yml"

    @property
    def alertmanager_config(self) -> Path:
        """The copy the running Alertmanager reads (`stack rules` replaces it)."""
        return self.state_dir / "alertmanager" / "alertmanager.yml"

    def log_file(self, service: str) -> Path:
        return self.state_dir / "logs" / f"{service}.log"

    def pid_file(self, service: str) -> Path:
        return self.state_dir / "run" / f"{service}.pid"


def parse_targets(raw: str) -> tuple[str, ...]:
    """`host:port,host:port` -> a tuple; every entry must name a port."""
    targets = tuple(t.strip() for t in raw.split(",") if t.strip())
    for target in targets:
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            raise StackError(f"scrape target {target!r} is not host:port")
    return targets
