"""Configuration: one dataclass, filled from environment variables and CLI flags.

Every setting has an environment variable (so the stack scripts, CI and
docker-compose configure the worker the same way) and a flag of the same name on
the commands that use it. Defaults are production-sane; tests shorten timeouts.

A field's metadata says everything the rest of the module needs: ``env`` (its
variable), ``help``, and what a valid value is — ``kind`` (``duration``,
``windows``, ``event_types``, ``store``), ``choices``, ``min``. :meth:`Settings.check`
is derived from that metadata, so a new field is validated by declaring it. Values
stay the text the user gave (window labels are part of the metric contract);
typed views (``<duration>_ms``, ``window_ms``, ``active_type_set``, ``limits``)
are parsed once per Settings object, which is frozen so they cannot go stale.

Adding a duration setting: a ``str`` field with ``"kind": "duration"`` and a
``<name>_ms`` cached property returning ``self._duration_ms("<name>")``
(tests/unit/streams/test_settings.py checks the pair exists).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from streams import security
from streams.durations import DEFAULT_WINDOWS, parse_duration_ms, parse_windows
from streams.events import DEFAULT_ACTIVE_TYPES, EVENT_TYPES, Limits
from streams.mapping import InputMapping, from_file

#: Table stores Faust is given; ``store`` must start with one of these + ``://``.
STORE_SCHEMES = ("memory", "rocksdb")


def _default_datadir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "engagement-monitor" / "worker")


def parse_event_types(text: str) -> frozenset[str]:
    """Parse "like,comment" into a set of known event types."""
    chosen = frozenset(t.strip() for t in text.split(",") if t.strip())
    unknown = chosen - EVENT_TYPES
    if unknown:
        raise ValueError(f"unknown event types {sorted(unknown)}; known: {sorted(EVENT_TYPES)}")
    return chosen


def _check_folder_name(text: str) -> None:
    """The app id names a folder under the data dir (and Kafka topics): no ``/``."""
    if not text or text in (".", "..") or "/" in text:
        raise ValueError(f"must be a non-empty name without '/', got {text!r}")


def _check_store(text: str) -> None:
    if text.split("://")[0] not in STORE_SCHEMES:
        raise ValueError(f"must be memory:// or rocksdb://, got {text!r}")


def _check_file(text: str) -> None:
    if text and not Path(text).is_file():
        raise ValueError(f"no such file: {text!r}")


#: ``kind`` metadata -> a function that raises ValueError on an invalid value.
KIND_CHECKS: dict[str, Callable[[str], object]] = {
    "duration": parse_duration_ms,
    "windows": parse_windows,
    "event_types": parse_event_types,
    "store": _check_store,
    "folder_name": _check_folder_name,
    "file": _check_file,
    "mapping_file": lambda path: from_file(path) if path else None,
}


@dataclass(frozen=True)
class Settings:
    """All settings; each field's metadata names its environment variable and its rules."""

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
            "kind": "folder_name",
        },
    )
    input_topic: str = field(
        default="interactions", metadata={"env": "EM_INPUT_TOPIC", "help": "topic of raw events"}
    )
    dlq_topic: str = field(
        default="interactions.dlq",
        metadata={"env": "EM_DLQ_TOPIC", "help": "dead-letter topic for invalid messages"},
    )
    input_mapping: str = field(
        default="",
        metadata={
            "env": "EM_INPUT_MAPPING",
            "help": "TOML file mapping another JSON shape onto the event contract "
            "(docs/own-kafka.md); empty: messages are in the contract's shape",
            "kind": "mapping_file",
        },
    )
    partitions: int = field(
        default=4,
        metadata={
            "env": "EM_PARTITIONS",
            "help": "partitions of the internal (by-user) topics",
            "min": 1,
        },
    )
    replication_factor: int = field(
        default=0,
        metadata={
            "env": "EM_REPLICATION_FACTOR",
            "help": "replication of the topics the worker creates (internal, DLQ); "
            "0: the cluster's default.replication.factor",
            "min": 0,
        },
    )
    store: str = field(
        default="rocksdb://",
        metadata={
            "env": "EM_STORE",
            "help": "table store: rocksdb:// (durable) or memory://",
            "kind": "store",
        },
    )
    datadir: str = field(
        default_factory=_default_datadir,
        metadata={
            "env": "EM_DATA_DIR",
            "help": "worker data folder; each app id gets its own subfolder (RocksDB tables)",
        },
    )
    web_host: str = field(
        default="127.0.0.1", metadata={"env": "EM_WEB_HOST", "help": "web server bind address"}
    )
    web_port: int = field(
        default=6066,
        metadata={"env": "EM_WEB_PORT", "help": "web server port (/metrics)"},
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
        default=DEFAULT_WINDOWS,
        metadata={
            "env": "EM_WINDOWS",
            "help": "active-user windows, comma-separated",
            "kind": "windows",
        },
    )
    active_types: str = field(
        default=",".join(sorted(DEFAULT_ACTIVE_TYPES)),
        metadata={
            "env": "EM_ACTIVE_TYPES",
            "help": "event types that make a user active",
            "kind": "event_types",
        },
    )
    future_tolerance: str = field(
        default="5m",
        metadata={
            "env": "EM_FUTURE_TOLERANCE",
            "help": "how far in the future a ts may be",
            "kind": "duration",
        },
    )
    max_event_age: str = field(
        default="400d",
        metadata={
            "env": "EM_MAX_EVENT_AGE",
            "help": "events older than this are refused (too_old): bounds per-day keys",
            "kind": "duration",
        },
    )
    max_message_bytes: int = field(
        default=4096,
        metadata={"env": "EM_MAX_MESSAGE_BYTES", "help": "largest accepted message"},
    )
    max_batch_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata={
            "env": "EM_MAX_BATCH_BYTES",
            "help": "largest input batch once decompressed (any codec); a bomb is dead-lettered",
            "min": 1024 * 1024,
        },
    )
    community_cap: int = field(
        default=1000,
        metadata={
            "env": "EM_COMMUNITY_CAP",
            "help": 'most active communities with their own series; the rest are "_other"',
            "min": 0,
        },
    )
    platform_cap: int = field(
        default=20,
        metadata={
            "env": "EM_PLATFORM_CAP",
            "help": 'most active platforms with their own series; the rest are "_other"',
            "min": 0,
        },
    )
    label_allowlist: str = field(
        default="",
        metadata={
            "env": "EM_LABEL_ALLOWLIST",
            "help": "file of community/platform names (one a line) that always keep their series",
            "kind": "file",
        },
    )
    # Records expire 2 x the longest window (60 days) after their newest event, so
    # expiring more often frees almost nothing; each run holds the state agent for
    # its scan (~80 ms per 140,000 records: ~3 s at 5M records), which every minute
    # (the default before session 9) was a latency spike every minute.
    expiry_interval: str = field(
        default="10m",
        metadata={
            "env": "EM_EXPIRY_INTERVAL",
            "help": "how often old table entries are deleted",
            "kind": "duration",
        },
    )
    snapshot_interval: str = field(
        default="1s",
        metadata={
            "env": "EM_SNAPSHOT_INTERVAL",
            "help": "how often snapshots go to Redis",
            "kind": "duration",
        },
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
        metadata={
            "env": "EM_TOP_USERS",
            "help": "entries kept per top-users set in Redis",
            "min": 1,
        },
    )
    top_users_pending: int = field(
        default=200_000,
        metadata={
            "env": "EM_TOP_USERS_PENDING",
            "help": "top-users deltas kept in memory while Redis is down (then dropped, counted)",
        },
    )
    # One transaction per input partition at a time, each starting at least this long
    # after the one before: at a steady rate the polls then go in fewer, larger
    # transactions (docs/benchmarks.md, "Latency, session 13"); an event that finds
    # the partition idle goes at once.
    ingest_txn_spacing: str = field(
        default="150ms",
        metadata={
            "env": "EM_INGEST_TXN_SPACING",
            "help": "least time between the starts of two ingest transactions of a partition",
            "kind": "duration",
        },
    )
    # 10s (Kafka's default before 3.0): a SIGKILLed worker's partitions wait this long
    # before they move, and recovery after a crash is meant to take under 30s
    session_timeout: str = field(
        default="10s",
        metadata={
            "env": "EM_SESSION_TIMEOUT",
            "help": "Kafka consumer session timeout (how long a dead worker's partitions wait)",
            "kind": "duration",
        },
    )
    rebalance_timeout: str = field(
        default="30s",
        metadata={
            "env": "EM_REBALANCE_TIMEOUT",
            "help": "Kafka rebalance timeout",
            "kind": "duration",
        },
    )
    heartbeat_interval: str = field(
        default="3s",
        metadata={
            "env": "EM_HEARTBEAT_INTERVAL",
            "help": "Kafka heartbeat interval",
            "kind": "duration",
        },
    )
    log_level: str = field(
        default="info",
        metadata={"env": "EM_LOG_LEVEL", "help": "log level: debug, info, warn, error"},
    )

    # Typed views, parsed once --------------------------------------------

    @cached_property
    def future_tolerance_ms(self) -> int:
        return self._duration_ms("future_tolerance")

    @cached_property
    def max_event_age_ms(self) -> int:
        return self._duration_ms("max_event_age")

    @cached_property
    def expiry_interval_ms(self) -> int:
        return self._duration_ms("expiry_interval")

    @cached_property
    def snapshot_interval_ms(self) -> int:
        return self._duration_ms("snapshot_interval")

    @cached_property
    def ingest_txn_spacing_ms(self) -> int:
        return self._duration_ms("ingest_txn_spacing")

    @cached_property
    def session_timeout_ms(self) -> int:
        return self._duration_ms("session_timeout")

    @cached_property
    def rebalance_timeout_ms(self) -> int:
        return self._duration_ms("rebalance_timeout")

    @cached_property
    def heartbeat_interval_ms(self) -> int:
        return self._duration_ms("heartbeat_interval")

    @property
    def app_datadir(self) -> str:
        """Faust's data folder for this app id: ``<datadir>/<app_id>``. Two app ids on
        one host (same ``EM_DATA_DIR``) then never open the same RocksDB files."""
        return str(Path(self.datadir) / self.app_id)

    @cached_property
    def mapping(self) -> InputMapping | None:
        """The input mapping (read once), None without EM_INPUT_MAPPING."""
        return _parsed(self, "input_mapping", from_file) if self.input_mapping else None

    @cached_property
    def window_ms(self) -> dict[str, int]:
        """{label: milliseconds}, shortest first."""
        return _parsed(self, "windows", parse_windows)

    @cached_property
    def active_type_set(self) -> frozenset[str]:
        return _parsed(self, "active_types", parse_event_types)

    @cached_property
    def limits(self) -> Limits:
        return Limits(
            max_message_bytes=self.max_message_bytes,
            future_tolerance_ms=self.future_tolerance_ms,
            max_event_age_ms=self.max_event_age_ms,
        )

    def _duration_ms(self, name: str) -> int:
        return _parsed(self, name, parse_duration_ms)

    def check(self) -> None:
        """Fail early, naming the flag and the variable, on values that would break later.

        Derived from each field's metadata (``kind``, ``choices``, ``min``), then the
        typed views are built, so whatever uses them later cannot fail.
        """
        for f in fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            if "kind" in meta:
                _parsed(self, f.name, KIND_CHECKS[meta["kind"]])
            if "choices" in meta and value not in meta["choices"]:
                raise ValueError(f"{describe(f.name)}: must be one of {', '.join(meta['choices'])}")
            if "min" in meta and value < meta["min"]:
                raise ValueError(f"{describe(f.name)}: must be at least {meta['min']}, got {value}")
        for name in _typed_views():
            getattr(self, name)


def _parsed(settings: Settings, name: str, parse: Callable[[str], Any]) -> Any:
    """``parse`` applied to setting ``name``; its error names the flag and the variable."""
    try:
        return parse(getattr(settings, name))
    except ValueError as exc:
        raise ValueError(f"{describe(name)}: {exc}") from None


def _typed_views() -> list[str]:
    return [n for n, v in vars(Settings).items() if isinstance(v, cached_property)]


def _field(name: str) -> dataclasses.Field[Any]:
    for f in fields(Settings):
        if f.name == name:
            return f
    raise KeyError(name)


def flag(name: str) -> str:
    """The command-line flag of setting ``name``."""
    return "--" + name.replace("_", "-")


def describe(name: str) -> str:
    """How errors name a setting: ``--session-timeout (EM_SESSION_TIMEOUT)``."""
    return f"{flag(name)} ({_field(name).metadata['env']})"


def from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from environment variables, defaults for the rest."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for f in fields(Settings):
        raw = env.get(str(f.metadata["env"]))
        if raw is None or raw == "":
            continue
        values[f.name] = _int(f, raw) if f.type in ("int", int) else raw
    return Settings(**values)  # type: ignore[arg-type]


def _int(f: dataclasses.Field[Any], raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{describe(f.name)}: expected an integer, got {raw!r}") from None


def add_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """Add ``--flag`` options for settings (all, or ``names``); defaults come from the env."""
    defaults = from_env()
    group = parser.add_argument_group("settings (flag, or the environment variable in brackets)")
    for f in fields(Settings):
        if names is not None and f.name not in names:
            continue
        # a URL may carry a password (redis://:PASSWORD@host): help shows it redacted
        shown = security.redact_url(str(getattr(defaults, f.name))).replace("%", "%%")
        kwargs: dict[str, object] = {
            "dest": f.name,
            "default": getattr(defaults, f.name),
            "help": f"{f.metadata['help']} [{f.metadata['env']}] (default: {shown})",
        }
        if f.type in ("int", int):
            kwargs["type"] = int
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        group.add_argument(flag(f.name), **kwargs)  # type: ignore[arg-type]
    _add_security_help(parser, names)


def _add_security_help(parser: argparse.ArgumentParser, names: tuple[str, ...] | None) -> None:
    """List the security variables the command honours: environment only, values never
    shown (see streams/security.py)."""
    groups = {"kafka": "kafka_bootstrap_servers", "redis": "redis_url", "http": "web_port"}
    wanted = [g for g, setting in groups.items() if names is None or setting in names]
    if names is None:
        wanted.append("worker")
    if wanted:
        parser.add_argument_group(
            "security (environment only; secrets also as VAR_FILE; values never shown)",
            security.describe(wanted),
        )


def from_args(args: argparse.Namespace) -> Settings:
    """Settings from parsed flags (which already default to the environment), checked."""
    given = {f.name: getattr(args, f.name) for f in fields(Settings) if hasattr(args, f.name)}
    settings = dataclasses.replace(from_env(), **given)
    settings.check()
    security.from_env().check()
    return settings
