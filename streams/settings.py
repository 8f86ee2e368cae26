"""Configuration: one dataclass, filled from environment variables and CLI flags.

Every setting has an environment variable (so the stack scripts, CI and
docker-compose configure the worker the same way) and a flag of the same name on
the commands that use it. Defaults are production-sane; tests shorten timeouts.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from streams.durations import parse_duration_ms, parse_windows
from streams.events import DEFAULT_ACTIVE_TYPES, EVENT_TYPES, Limits


def _default_datadir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "engagement-monitor" / "worker")


@dataclass
class Settings:
    """All settings; ``env`` in each field's metadata names its environment variable."""

    kafka_bootstrap_servers: str = field(
        default="127.0.0.1:9092",
        metadata={"env": "KAFKA_BOOTSTRAP_SERVERS", "help": "Kafka brokers, host:port[,...]"},
    )
    redis_url: str = field(
        default="redis://127.0.0.1:6379/0",
        metadata={
            "env": "REDIS_URL",
            "help": "Redis for the live read model (redis:// or rediss://)",
        },
    )
    app_id: str = field(
        default="engagement-monitor",
        metadata={
            "env": "EM_APP_ID",
            "help": "Faust app id: consumer group and internal topic prefix",
        },
    )
    input_topic: str = field(
        default="interactions", metadata={"env": "EM_INPUT_TOPIC", "help": "topic of raw events"}
    )
    dlq_topic: str = field(
        default="interactions.dlq",
        metadata={"env": "EM_DLQ_TOPIC", "help": "dead-letter topic for invalid messages"},
    )
    partitions: int = field(
        default=4,
        metadata={"env": "EM_PARTITIONS", "help": "partitions of the internal (by-user) topics"},
    )
    store: str = field(
        default="rocksdb://",
        metadata={"env": "EM_STORE", "help": "table store: rocksdb:// (durable) or memory://"},
    )
    datadir: str = field(
        default_factory=_default_datadir,
        metadata={"env": "EM_DATA_DIR", "help": "worker data folder (RocksDB tables)"},
    )
    web_host: str = field(
        default="127.0.0.1", metadata={"env": "EM_WEB_HOST", "help": "web server bind address"}
    )
    web_port: int = field(
        default=6066,
        metadata={"env": "EM_WEB_PORT", "help": "web server port (/metrics, /api)"},
    )
    clock: str = field(
        default="wall",
        metadata={
            "env": "EM_CLOCK",
            "help": "wall: windows end now (live); event: they end at the newest event time seen",
            "choices": ("wall", "event"),
        },
    )
    windows: str = field(
        default="5m,1h,1d,7d,30d",
        metadata={"env": "EM_WINDOWS", "help": "active-user windows, comma-separated"},
    )
    active_types: str = field(
        default=",".join(sorted(DEFAULT_ACTIVE_TYPES)),
        metadata={"env": "EM_ACTIVE_TYPES", "help": "event types that make a user active"},
    )
    future_tolerance: str = field(
        default="5m",
        metadata={"env": "EM_FUTURE_TOLERANCE", "help": "how far in the future a ts may be"},
    )
    max_message_bytes: int = field(
        default=4096,
        metadata={"env": "EM_MAX_MESSAGE_BYTES", "help": "largest accepted message"},
    )
    community_cap: int = field(
        default=1000,
        metadata={
            "env": "EM_COMMUNITY_CAP",
            "help": 'distinct community label values; more are shown as community="_other"',
        },
    )
    expiry_interval: str = field(
        default="60s",
        metadata={"env": "EM_EXPIRY_INTERVAL", "help": "how often old table entries are deleted"},
    )
    snapshot_interval: str = field(
        default="1s",
        metadata={"env": "EM_SNAPSHOT_INTERVAL", "help": "how often snapshots go to Redis"},
    )
    read_model: str = field(
        default="on",
        metadata={
            "env": "EM_READ_MODEL",
            "help": "on: write snapshots and top users to Redis; off: nothing to Redis",
            "choices": ("on", "off"),
        },
    )
    top_users: int = field(
        default=100,
        metadata={"env": "EM_TOP_USERS", "help": "entries kept per top-users set in Redis"},
    )
    top_users_pending: int = field(
        default=200_000,
        metadata={
            "env": "EM_TOP_USERS_PENDING",
            "help": "top-users deltas kept in memory while Redis is down (then dropped, counted)",
        },
    )
    session_timeout: str = field(
        default="30s",
        metadata={"env": "EM_SESSION_TIMEOUT", "help": "Kafka consumer session timeout"},
    )
    rebalance_timeout: str = field(
        default="30s",
        metadata={"env": "EM_REBALANCE_TIMEOUT", "help": "Kafka rebalance timeout"},
    )
    heartbeat_interval: str = field(
        default="3s",
        metadata={"env": "EM_HEARTBEAT_INTERVAL", "help": "Kafka heartbeat interval"},
    )
    log_level: str = field(
        default="info",
        metadata={"env": "EM_LOG_LEVEL", "help": "log level: debug, info, warn, error"},
    )

    # Derived views -------------------------------------------------------

    @property
    def window_ms(self) -> dict[str, int]:
        return parse_windows(self.windows)

    @property
    def active_type_set(self) -> frozenset[str]:
        chosen = frozenset(t.strip() for t in self.active_types.split(",") if t.strip())
        unknown = chosen - EVENT_TYPES
        if unknown:
            raise ValueError(
                f"unknown active types {sorted(unknown)}; known: {sorted(EVENT_TYPES)}"
            )
        return chosen

    @property
    def limits(self) -> Limits:
        return Limits(
            max_message_bytes=self.max_message_bytes,
            future_tolerance_ms=parse_duration_ms(self.future_tolerance),
        )

    def seconds(self, name: str) -> float:
        """A duration setting in seconds."""
        return parse_duration_ms(getattr(self, name)) / 1000

    def check(self) -> None:
        """Fail early, with the setting's name, on values that would break later."""
        for name in (
            "future_tolerance",
            "expiry_interval",
            "snapshot_interval",
            "session_timeout",
            "rebalance_timeout",
            "heartbeat_interval",
        ):
            try:
                parse_duration_ms(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"{name} ({_env(name)}): {exc}") from None
        try:
            self.window_ms  # noqa: B018 - parse for the error
            self.active_type_set  # noqa: B018
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if self.store.split("://")[0] not in ("memory", "rocksdb"):
            raise ValueError(f"store ({_env('store')}) must be memory:// or rocksdb://")
        if self.partitions < 1:
            raise ValueError("partitions must be at least 1")
        if self.top_users < 1:
            raise ValueError("top_users (EM_TOP_USERS) must be at least 1")
        if self.read_model not in ("on", "off"):
            raise ValueError("read_model (EM_READ_MODEL) must be on or off")


def _env(name: str) -> str:
    for f in fields(Settings):
        if f.name == name:
            return str(f.metadata["env"])
    raise KeyError(name)


def from_env(environ: dict[str, str] | None = None) -> Settings:
    """Settings from environment variables, defaults for the rest."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for f in fields(Settings):
        raw = env.get(str(f.metadata["env"]))
        if raw is None or raw == "":
            continue
        values[f.name] = int(raw) if f.type in ("int", int) else raw
    return Settings(**values)  # type: ignore[arg-type]


def add_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """Add ``--flag`` options for settings (all, or ``names``); defaults come from the env."""
    defaults = from_env()
    group = parser.add_argument_group("settings (flag, or the environment variable in brackets)")
    for f in fields(Settings):
        if names is not None and f.name not in names:
            continue
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict[str, object] = {
            "dest": f.name,
            "default": getattr(defaults, f.name),
            "help": f"{f.metadata['help']} [{f.metadata['env']}] (default: %(default)s)",
        }
        if f.type in ("int", int):
            kwargs["type"] = int
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        group.add_argument(flag, **kwargs)  # type: ignore[arg-type]


def from_args(args: argparse.Namespace) -> Settings:
    """Settings from parsed flags (which already default to the environment)."""
    base = from_env()
    for f in fields(Settings):
        if hasattr(args, f.name):
            setattr(base, f.name, getattr(args, f.name))
    base.check()
    return base
