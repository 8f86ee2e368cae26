"""The four services: how each is prepared, started and found ready."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from emstack import health, kafka, promcfg, tls
from emstack.config import Config, StackError


@dataclass(frozen=True)
class Service:
    name: str
    port_vars: tuple[str, ...]  # first one is the address shown to users
    prepare: Callable[[Config], list[str]]  # writes config, returns the command
    ready: Callable[[Config], bool]
    start_timeout: float
    stop_timeout: float
    secure_port_vars: tuple[str, ...] = ()  # also used with EM_STACK_SECURE

    def env(self, cfg: Config) -> dict[str, str]:
        return kafka.java_env(cfg) if self.name == "kafka" else dict(os.environ)

    def address(self, cfg: Config) -> str:
        return f"127.0.0.1:{cfg.ports[self.port_vars[0]]}"


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(f"{name} is missing (Debian: apt-get install -y {package})")
    return path


def _folder(cfg: Config, *parts: str) -> Path:
    path = cfg.state_dir.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _prepare_kafka(cfg: Config) -> list[str]:
    kafka.ensure_fetched(cfg)
    if cfg.secure:
        tls.ensure(cfg)
    props = kafka.write_config(cfg)
    kafka.format_storage(cfg, props, scram_users=tls.kafka_users(cfg) if cfg.secure else None)
    return kafka.server_cmd(cfg, props)


def _prepare_redis(cfg: Config) -> list[str]:
    return [
        _binary("redis-server", "redis-server"),
        "--bind",
        "127.0.0.1",
        "--port",
        str(cfg.ports["REDIS_PORT"]),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        str(_folder(cfg, "redis")),
        *(_redis_tls(cfg) if cfg.secure else []),
    ]


def _redis_tls(cfg: Config) -> list[str]:
    """EM_STACK_SECURE: a TLS port beside the plaintext one, and an ACL user."""
    folder = tls.ensure(cfg)
    return [
        "--tls-port", str(cfg.ports["REDIS_TLS_PORT"]),
        "--tls-cert-file", str(folder / "server.pem"),
        "--tls-key-file", str(folder / "server.key"),
        "--tls-ca-cert-file", str(folder / "ca.pem"),
        "--tls-auth-clients", "no",
        "--aclfile", str(folder / "redis-users.acl"),
    ]  # fmt: skip


def _prepare_prometheus(cfg: Config) -> list[str]:
    config = promcfg.write(cfg)
    return [
        _binary("prometheus", "prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={_folder(cfg, 'prometheus', 'data')}",
        f"--web.listen-address=127.0.0.1:{cfg.ports['PROMETHEUS_PORT']}",
        "--web.enable-lifecycle",
    ]


def _prepare_alertmanager(cfg: Config) -> list[str]:
    return [
        _binary("prometheus-alertmanager", "prometheus-alertmanager"),
        f"--config.file={promcfg.write_alertmanager_config(cfg)}",
        f"--storage.path={_folder(cfg, 'alertmanager')}",
        f"--web.listen-address=127.0.0.1:{cfg.ports['ALERTMANAGER_PORT']}",
        "--cluster.listen-address=",
    ]


SERVICES = (
    Service(
        "kafka",
        ("KAFKA_PORT", "KAFKA_CONTROLLER_PORT"),
        _prepare_kafka,
        lambda cfg: health.kafka_ok(cfg.kafka_bootstrap),
        120,
        30,
        ("KAFKA_SASL_SSL_PORT", "KAFKA_SSL_PORT"),
    ),
    Service(
        "redis",
        ("REDIS_PORT",),
        _prepare_redis,
        lambda cfg: health.redis_ok(cfg.ports["REDIS_PORT"]),
        20,
        10,
        ("REDIS_TLS_PORT",),
    ),
    Service(
        "prometheus",
        ("PROMETHEUS_PORT",),
        _prepare_prometheus,
        lambda cfg: health.http_ok(f"{cfg.prometheus_url}/-/ready"),
        60,
        20,
    ),
    Service(
        "alertmanager",
        ("ALERTMANAGER_PORT",),
        _prepare_alertmanager,
        lambda cfg: health.http_ok(f"{cfg.alertmanager_url}/-/ready"),
        30,
        10,
    ),
)


def by_name(name: str) -> Service:
    for service in SERVICES:
        if service.name == name:
            return service
    raise StackError(f"no service {name!r}; services: {', '.join(s.name for s in SERVICES)}")
