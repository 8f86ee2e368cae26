"""The Redis read model: key layout, the partition snapshot format, and the readers.

Workers write (see :mod:`agents.redis_snapshots`); the CLI (``status``, ``top``) and
the JSON API (:mod:`commands.api`) read, through the functions at the end of this
module, never from a worker's memory.

Why per-partition snapshots: users are partitioned by user id, so the counts of
different partitions cover disjoint sets of users and their sum is exact — whichever
worker holds which partition, and however many workers there are. Each snapshot is
a Redis hash holding the full state of its partition — one field per (platform,
community), so a tick rewrites only the fields that changed — with a TTL, so the
partitions of a dead worker expire instead of being counted forever.

Everything above the reader section is pure (no I/O) and unit-tested without Redis.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from agents.kafka_security import redis_kwargs
from streams import metric_names as names
from streams.events import ALL_COMMUNITIES
from streams.gauges import PC, Gauges, ratio, stickiness
from streams.json_bytes import kept
from streams.state import Lifecycle

SCHEMA_VERSION = 2
#: Hash fields of a partition snapshot besides its rows (rows are JSON arrays).
META_FIELD = "meta"
EPOCH_FIELD = "epoch"
_ZERO = Lifecycle(0, 0, 0, 0)
STATUS_SCHEMA = "engagement-monitor/status/1"
TOP_SCHEMA = "engagement-monitor/top/1"
DAY_MS = 86_400_000
#: Most users a top-users read returns (the API's and ``top --limit``'s cap).
MAX_TOP_LIMIT = 1000


# -- keys ------------------------------------------------------------------------------


def _escape(part: str) -> str:
    """Make a key component unambiguous: ``:`` separates components, ``%`` escapes."""
    return part.replace("%", "%25").replace(":", "%3A")


def _glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so an app id is matched literally by SCAN."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def snapshot_key(app_id: str, partition: int) -> str:
    """The hash of one partition's snapshot (``snap:`` held JSON strings up to schema 1)."""
    return f"em:{_escape(app_id)}:part:{partition}"


def snapshot_pattern(app_id: str) -> str:
    return f"em:{_glob_escape(_escape(app_id))}:part:*"


def top_key(app_id: str, day: str, platform: str, community: str) -> str:
    """Sorted set of the most engaged users of one community (and platform) on one UTC day."""
    return f"em:{_escape(app_id)}:top:{day}:{_escape(platform)}:{_escape(community)}"


def top_index_key(app_id: str, day: str) -> str:
    """Set of ``[platform, community]`` (JSON) that have a top-users set on that day."""
    return f"em:{_escape(app_id)}:topidx:{day}"


def utc_day(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d")


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


# -- snapshots -------------------------------------------------------------------------


@dataclass
class Snapshot:
    """One partition's counts at one time of its worker's clock."""

    partition: int
    partitions: int  # partitions of the by-user topic (what a complete sum covers)
    now_ms: int | None  # the worker's clock (None: event clock before any event)
    written_ms: int  # wall time of the write (freshness, not a window bound)
    windows: dict[str, int]  # label -> width in ms, in configured order
    active: dict[PC, dict[str, int]] = field(default_factory=dict)
    followers: dict[PC, int] = field(default_factory=dict)
    lifecycle: dict[PC, dict[str, Lifecycle]] = field(default_factory=dict)


def meta_value(
    partition: int, partitions: int, now_ms: int | None, written_ms: int, windows: dict[str, int]
) -> bytes:
    """The ``meta`` field: everything of a snapshot but its rows."""
    return orjson.dumps(
        {
            "v": SCHEMA_VERSION,
            "partition": partition,
            "partitions": partitions,
            "now_ms": now_ms,
            "written_ms": written_ms,
            "windows": [[label, width] for label, width in windows.items()],
        }
    )


def row_field(pc: PC) -> bytes:
    """A row's field name: ``["platform","community"]``. Copied to size (as the row):
    a whole snapshot holds one field and value per community until Redis has them,
    and each ``orjson.dumps`` output holds ~4 KiB (json_bytes.kept)."""
    return kept(orjson.dumps(pc))


def row_value(
    labels: list[str],
    active: Mapping[str, int] | None,
    followers: int | None,
    lifecycle: Mapping[str, Lifecycle] | None,
) -> bytes:
    """``[active per window, followers, [active followers, new, returning, dormant] per
    window]`` in the meta's window order; null where the partition has no such count."""
    return kept(
        orjson.dumps(
            [
                None if active is None else [active.get(label, 0) for label in labels],
                followers,
                None if lifecycle is None else [[*lifecycle.get(label, _ZERO)] for label in labels],
            ]
        )
    )


def encode_snapshot(snap: Snapshot) -> dict[bytes, bytes]:
    """The hash fields of a whole snapshot (without the writer's ``epoch``)."""
    labels = list(snap.windows)
    fields = {
        META_FIELD.encode(): meta_value(
            snap.partition, snap.partitions, snap.now_ms, snap.written_ms, snap.windows
        )
    }
    for pc in {**dict.fromkeys(snap.active), **dict.fromkeys(snap.followers), **snap.lifecycle}:
        fields[row_field(pc)] = row_value(
            labels, snap.active.get(pc), snap.followers.get(pc), snap.lifecycle.get(pc)
        )
    return fields


def decode_snapshot(fields: Mapping[bytes, bytes]) -> Snapshot:
    """A snapshot from its hash fields (HGETALL)."""
    meta_raw = fields.get(META_FIELD.encode())
    if meta_raw is None:
        raise ValueError("snapshot without its meta field")
    meta = orjson.loads(meta_raw)
    if meta.get("v") != SCHEMA_VERSION:
        raise ValueError(f"unknown snapshot version {meta.get('v')!r}")
    windows = {str(label): int(width) for label, width in meta["windows"]}
    labels = list(windows)
    snap = Snapshot(
        int(meta["partition"]), int(meta["partitions"]), meta["now_ms"], int(meta["written_ms"]),
        windows,
    )  # fmt: skip
    for field_name, raw in fields.items():
        if not field_name.startswith(b"["):
            continue
        p, c = orjson.loads(field_name)
        active, followers, lifecycle = orjson.loads(raw)
        if active is not None:
            snap.active[(p, c)] = dict(zip(labels, active, strict=True))
        if followers is not None:
            snap.followers[(p, c)] = int(followers)
        if lifecycle is not None:
            snap.lifecycle[(p, c)] = {
                label: Lifecycle(*n) for label, n in zip(labels, lifecycle, strict=True)
            }
    return snap


@dataclass
class Totals:
    """The sum of the partition snapshots present in Redis."""

    partitions_present: list[int]
    partitions_expected: int  # the largest count the snapshots report (0: none present)
    windows: dict[str, int]
    active: dict[PC, dict[str, int]]
    followers: dict[PC, int]
    lifecycle: dict[PC, dict[str, Lifecycle]]
    as_of_ms: int | None  # the oldest worker clock among the snapshots
    newest_ms: int | None  # the newest one (differs when workers' clocks differ)
    written_ms: int | None  # the oldest write: how stale the sum can be

    @property
    def complete(self) -> bool:
        return self.partitions_expected > 0 and set(self.partitions_present) == set(
            range(self.partitions_expected)
        )


def sum_snapshots(snapshots: Iterable[Snapshot]) -> Totals:
    """Exact totals: partitions hold disjoint users, so counts simply add up.

    A (platform, community) missing from a partition counts 0 there; windows are the
    union over snapshots (they only differ during a rolling config change).
    """
    snaps = sorted(snapshots, key=lambda s: s.partition)
    windows: dict[str, int] = {}
    for snap in snaps:
        for label, width in snap.windows.items():
            windows.setdefault(label, width)
    windows = dict(sorted(windows.items(), key=lambda item: item[1]))
    gauges = Gauges()
    for snap in snaps:
        gauges.add_active(snap.active)
        gauges.add_lifecycle(snap.lifecycle)
        gauges.add_followers(snap.followers)
    active = {pc: {w: counts.get(w, 0) for w in windows} for pc, counts in gauges.active.items()}
    lifecycle = {
        pc: {w: counts.get(w, _ZERO) for w in windows} for pc, counts in gauges.lifecycle.items()
    }
    clocks = [s.now_ms for s in snaps if s.now_ms is not None]
    return Totals(
        partitions_present=[s.partition for s in snaps],
        partitions_expected=max((s.partitions for s in snaps), default=0),
        windows=windows,
        active=active,
        followers=gauges.followers,
        lifecycle=lifecycle,
        as_of_ms=min(clocks) if clocks else None,
        newest_ms=max(clocks) if clocks else None,
        written_ms=min((s.written_ms for s in snaps), default=None),
    )


def community_row(
    platform: str,
    community: str,
    active: Mapping[str, int],
    followers: int,
    windows: Iterable[str],
    lifecycle: Mapping[str, Lifecycle] | None = None,
) -> dict[str, Any]:
    """One row of the status document (see docs/readmodel.md for the schema)."""
    counts = {label: int(active.get(label, 0)) for label in windows}
    audience = {label: (lifecycle or {}).get(label, _ZERO) for label in counts}
    ghost = audience.get(names.GHOST_WINDOW)
    return {
        "platform": platform,
        "community": community,
        "active": counts,
        "followers": followers,
        "active_per_follower": {label: ratio(n, followers) for label, n in counts.items()},
        "stickiness": stickiness(counts),
        "audience": {
            label: {
                **n._asdict(),
                "non_follower_active": counts[label] - n.active_followers,
                "active_follower_share": ratio(n.active_followers, followers),
            }
            for label, n in audience.items()
        },
        # followers not active in GHOST_WINDOW (None when that window is not configured)
        "ghost_followers": None if ghost is None else followers - ghost.active_followers,
    }


def status_document(
    totals: Totals, app_id: str, communities: Iterable[str] = (), platform: str | None = None
) -> dict[str, Any]:
    """The ``status --json`` / ``/api/communities`` document, optionally filtered.

    Rows: every (platform, community) with active or follower counts; "*" (all
    communities of a platform) first, then by name.
    """
    wanted = set(communities)
    labels = list(totals.windows)
    keys = sorted(
        set(totals.active) | set(totals.followers) | set(totals.lifecycle),
        key=lambda pc: (pc[0], pc[1] != ALL_COMMUNITIES, pc[1]),
    )
    rows = [
        community_row(
            p,
            c,
            totals.active.get((p, c), {}),
            totals.followers.get((p, c), 0),
            labels,
            totals.lifecycle.get((p, c)),
        )
        for p, c in keys
        if (not wanted or c in wanted) and (platform is None or p == platform)
    ]
    missing = sorted(set(range(totals.partitions_expected)) - set(totals.partitions_present))
    return {
        "schema": STATUS_SCHEMA,
        "app_id": app_id,
        "as_of_ms": totals.as_of_ms,
        "newest_ms": totals.newest_ms,
        "written_ms": totals.written_ms,
        "partitions": {
            "expected": totals.partitions_expected,
            "present": totals.partitions_present,
            "missing": missing,
            "complete": totals.complete,
        },
        "windows": labels,
        "communities": rows,
    }


def top_document(
    app_id: str,
    community: str,
    day: str,
    limit: int,
    by_platform: Mapping[str, list[tuple[str, float]]],
) -> dict[str, Any]:
    """The ``top --json`` / ``/api/communities/{id}/top`` document."""
    return {
        "schema": TOP_SCHEMA,
        "app_id": app_id,
        "community": community,
        "day": day,
        "limit": limit,
        "platforms": [
            {"platform": p, "users": [{"user_id": u, "score": int(s)} for u, s in users]}
            for p, users in sorted(by_platform.items())
        ],
    }


def check_day(day: str) -> str:
    """``YYYY-MM-DD`` or ValueError (user input goes into a key)."""
    try:
        datetime.strptime(day, "%Y-%m-%d")
    except ValueError:
        raise ValueError(f"day must be YYYY-MM-DD, not {day!r}") from None
    return day


# -- reading Redis ---------------------------------------------------------------------


def connect(url: str, timeout: float = 2.0) -> Any:
    """An asyncio Redis client for redis://, rediss:// (TLS) and password URLs
    (``redis://:PASSWORD@host:port/0``, ``rediss://user:PASSWORD@host:6380/0``).

    A password (EM_REDIS_PASSWORD, or its file) and TLS files (EM_REDIS_SSL_*) come
    from :func:`agents.kafka_security.redis_kwargs`, so the URL need not carry a secret.
    Short socket timeouts and no client-side retries: callers decide what a failure
    means (the worker skips one tick; a reader reports it).
    """
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return aioredis.from_url(
        url,
        **redis_kwargs(url),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
    )


async def read_snapshots(client: Any, app_id: str) -> list[Snapshot]:
    """Every partition snapshot of ``app_id`` present now (expired ones are gone)."""
    keys = [key async for key in client.scan_iter(match=snapshot_pattern(app_id), count=1000)]
    out = []
    for key in keys:
        fields = await client.hgetall(key)
        if fields:  # expired between the scan and the read
            out.append(decode_snapshot(fields))
    return out


async def read_status(
    client: Any, app_id: str, communities: Iterable[str] = (), platform: str | None = None
) -> dict[str, Any]:
    return status_document(
        sum_snapshots(await read_snapshots(client, app_id)), app_id, communities, platform
    )


async def top_platforms(client: Any, app_id: str, community: str, day: str) -> list[str]:
    """Platforms with a top-users set for ``community`` on ``day``."""
    members = await client.smembers(top_index_key(app_id, day))
    pairs = (orjson.loads(m) for m in members)
    return sorted(p for p, c in pairs if c == community)


async def read_top(
    client: Any, app_id: str, community: str, day: str, limit: int, platform: str | None = None
) -> dict[str, Any]:
    """The most engaged users of ``community`` on ``day``, per platform, highest first
    (ties by user id)."""
    platforms = [platform] if platform else await top_platforms(client, app_id, community, day)
    by_platform: dict[str, list[tuple[str, float]]] = {}
    for p in platforms:
        rows = await client.zrevrange(
            top_key(app_id, day, p, community), 0, max(limit, 1) - 1, withscores=True
        )
        if rows or platform:
            users = [(u.decode() if isinstance(u, bytes) else u, s) for u, s in rows]
            by_platform[p] = sorted(users, key=lambda us: (-us[1], us[0]))
    return top_document(app_id, community, day, limit, by_platform)
