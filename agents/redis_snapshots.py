"""The worker side of the Redis read model: a timer that writes, and nothing else.

Every ``EM_SNAPSHOT_INTERVAL`` (default 1 s) one MULTI/EXEC round trip carries

* for every by-user partition the worker holds, the rows of its snapshot hash that
  changed since the last write that landed (the counts come from the worker's
  shared :class:`streams.live_counts.LiveCounts`, which recomputes only what
  changed), its ``meta`` field, and ``PEXPIRE`` (TTL = 3 × interval, at least 10 s: a
  dead worker's partitions expire). A small Lua script applies them only if the
  hash still carries the ``epoch`` this worker gave it at its last full write; a
  hash that is gone (Redis restarted or flushed, TTL ran out) or was rewritten by
  another worker makes the script refuse, and the partition is written whole
  right away, in a second round trip, with a new epoch. The first write of a
  partition, and every write after a failed one, is whole too; and
* the top-users deltas tallied since the last tick (:mod:`agents.top_users`), as
  one JSON argument to a small Lua script that runs ``ZINCRBY`` per user, then
  ``ZREMRANGEBYRANK key 0 -(N+1)`` and ``EXPIRE`` per set, inside Redis. Sending a
  command per user instead costs redis-py ~50 µs each: ~0.7 s of the event loop per
  tick at 20,000 events/s (measured), against a few ms for one ``orjson.dumps``.

Why Redis never slows the pipeline: the apply agent only increments dicts; all I/O
happens here, on the timer, bounded by a timeout (:func:`write_timeout_s`). A failed
write is counted (``engagement_redis_write_failures_total``), logged once per outage
(and once on recovery); the first write after an outage rewrites every partition
whole, so it is exact again, and the top-users deltas are kept (capped) and merged
into the next write.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.outage import Outage
from agents.readmodel import (
    EPOCH_FIELD,
    META_FIELD,
    Snapshot,
    connect,
    meta_value,
    row_field,
    row_value,
    snapshot_key,
    top_index_key,
)
from agents.readmodel import top_key as make_top_key
from agents.state_stage import flush_indexes
from agents.top_users import (
    TOP_TTL_S,
    SetDelta,
    TopUsersTally,
    plan,
)
from streams import metric_names as names
from streams.clock import Clock
from streams.gauges import gauge_rows
from streams.live_counts import EMPTY, LiveCounts
from streams.state import WorkerState

log = logging.getLogger(__name__)


def snapshot_ttl_ms(interval_s: float) -> int:
    return max(int(interval_s * 3000), 10_000)


#: The last write at shutdown: short, so that a hung Redis cannot hold the worker's
#: stop (bounded at 8 s by commands.worker) — what it misses, the TTL expires.
SHUTDOWN_TIMEOUT_S = 1.0


def write_timeout_s(interval_s: float) -> float:
    """How long one write may take before it counts as failed: 5 s, or 3 intervals.

    Not "well within a tick": with a 1 s limit a CPU-bound worker (pipeline_bench,
    9,000 events/s, event times over 30 days) timed out every other write — its event
    loop was busy with batches, and Redis spent 25–270 ms on each top-users script
    call — and each timeout cost a whole rewrite of every partition and re-sent
    top-users deltas that had most likely landed (counted twice). A dead Redis
    fails at once (connection refused); a hung one costs this much of the timer
    task per tick, never the pipeline, whose agents do no I/O to Redis."""
    return max(5.0, 3 * interval_s)


def build_snapshots(
    state: WorkerState,
    now_ms: int | None,
    windows: dict[str, int],
    partitions: int,
    written_ms: int,
) -> list[Snapshot]:
    """Snapshots of the partitions held now (pure: the gauge rows of each partition)."""
    out = []
    for partition, part in list(state.partitions.items()):
        rows = gauge_rows([part], now_ms, windows)
        out.append(
            Snapshot(
                partition,
                partitions,
                now_ms,
                written_ms,
                windows,
                rows.active,
                rows.followers,
                rows.lifecycle,
            )
        )
    return out


#: ARGV[1] = JSON [keep, ttl, [[key, [user, n, user, n, ...]], ...], [[index, member], ...]].
#: Keys travel in ARGV (not KEYS): fine on a standalone Redis, which is what the
#: read model uses; a Redis Cluster would need one call per hash slot.
TOP_USERS_LUA = """
local doc = cjson.decode(ARGV[1])
local keep, ttl = doc[1], doc[2]
for _, set in ipairs(doc[3]) do
  local key, incs = set[1], set[2]
  for i = 1, #incs, 2 do
    redis.call('ZINCRBY', key, incs[i + 1], incs[i])
  end
  redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1))
  redis.call('EXPIRE', key, ttl)
end
for _, pair in ipairs(doc[4]) do
  redis.call('SADD', pair[1], pair[2])
  redis.call('EXPIRE', pair[1], ttl)
end
return #doc[3]
"""

#: increments per script call: bounds how long one call blocks Redis (~10 ms)
CHUNK = 20_000

#: KEYS[1] = a partition's hash; ARGV = [epoch, ttl ms, meta, n, field1, value1, ...,
#: fieldn, valuen, deleted field, ...]. Changes only a hash this worker wrote whole
#: (its epoch): 0 tells the writer to write the partition whole.
SNAPSHOT_DIFF_LUA = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'meta', ARGV[3])
local last = 4 + 2 * tonumber(ARGV[4])
for i = 5, last, 2000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 1999, last)))
end
for i = last + 1, #ARGV, 2000 do
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(i + 1999, #ARGV)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_epochs = itertools.count()


def top_payloads(app_id: str, sets: list[SetDelta], keep: int) -> list[bytes]:
    """The Lua script's arguments for these set deltas, in chunks of about CHUNK users."""
    payloads: list[bytes] = []
    chunk: list[list] = []
    index: dict[tuple[str, str], None] = {}  # (index key, JSON [platform, community])
    size = 0
    for delta in sets:
        key = make_top_key(app_id, delta.day, delta.platform, delta.community)
        flat: list[str | int] = []
        for user, n in delta.increments.items():
            flat += (user, n)
        chunk.append([key, flat])
        member = orjson.dumps([delta.platform, delta.community]).decode()
        index[(top_index_key(app_id, delta.day), member)] = None
        size += len(delta.increments)
        if size >= CHUNK:
            payloads.append(orjson.dumps([keep, TOP_TTL_S, chunk, list(index)]))
            chunk, index, size = [], {}, 0
    if chunk:
        payloads.append(orjson.dumps([keep, TOP_TTL_S, chunk, list(index)]))
    return payloads


class ReadModelWriter:
    """Owns the Redis client, the tally and the outage bookkeeping of one worker."""

    def __init__(
        self,
        *,
        redis_url: str,
        app_id: str,
        state: WorkerState,
        clock: Clock,
        windows: dict[str, int],
        partitions: int,
        interval_s: float,
        tally: TopUsersTally,
        top_n: int,
        client: Any = None,
        live: LiveCounts | None = None,
    ) -> None:
        self.app_id = app_id
        self.state = state
        self.clock = clock
        self.windows = windows
        self.labels = list(windows)
        self.partitions = partitions
        self.tally = tally
        self.top_n = top_n
        self.ttl_ms = snapshot_ttl_ms(interval_s)
        self.timeout = write_timeout_s(interval_s)
        self.client = client if client is not None else connect(redis_url, self.timeout)
        self.redis_url = redis_url
        self.script = self.client.register_script(TOP_USERS_LUA)
        self.diff_script = self.client.register_script(SNAPSHOT_DIFF_LUA)
        self.live = live if live is not None else LiveCounts(state, windows)
        self.feed = self.live.feed()
        # partition -> the epoch of our last whole write of it that landed (absent:
        # the next write of it is whole), and the rows changed since that write
        self.epochs: dict[int, str] = {}
        self.changed: dict[int, dict[tuple[str, str], None]] = {}
        self.failures = 0
        self.writes = 0
        self.last_ok_s: float | None = None
        self.outage = Outage(
            "read model: Redis write failed, processing continues",
            "read model: Redis writes resumed",
        )

    def _whole(self, pipe: Any, p: int, meta: bytes) -> str:
        """Queue a partition's whole hash; its new epoch."""
        epoch = f"{os.getpid()}-{next(_epochs)}-{time.time_ns()}"
        key = snapshot_key(self.app_id, p)
        fields = {META_FIELD.encode(): meta, EPOCH_FIELD.encode(): epoch.encode()}
        for pc, row in self.live.rows(p).items():
            fields[row_field(pc)] = row_value(self.labels, row.active, row.followers, row.lifecycle)
        pipe.delete(key)
        pipe.hset(key, mapping=fields)
        pipe.pexpire(key, self.ttl_ms)
        return epoch

    async def _diff(self, pipe: Any, p: int, meta: bytes) -> None:
        """Queue the script that applies a partition's changed rows."""
        rows = self.live.rows(p)
        sets: list[bytes] = []
        deletes: list[bytes] = []
        for pc in self.changed.get(p, {}):
            row = rows.get(pc, EMPTY)
            if row:
                sets += (
                    row_field(pc),
                    row_value(self.labels, row.active, row.followers, row.lifecycle),
                )
            else:
                deletes.append(row_field(pc))
        args = [self.epochs[p], self.ttl_ms, meta, len(sets) // 2, *sets, *deletes]
        await self.diff_script(keys=[snapshot_key(self.app_id, p)], args=args, client=pipe)

    async def _write(
        self,
        now_ms: int | None,
        sets: list[SetDelta],
        whole: set[int],
        held: list[int],
        timeout: float,
    ) -> None:
        """One MULTI/EXEC: the snapshots of ``held`` (``whole`` ones whole) and the
        top-users sets; a partition whose diff Redis refused is written whole in a
        second one."""
        written_ms = int(time.time() * 1000)
        new_epochs: dict[int, str] = {}
        diffs = [p for p in held if p not in whole]
        async with self.client.pipeline(transaction=True) as pipe:
            for p in held:
                if p in whole:  # three commands each, first in the results
                    meta = meta_value(p, self.partitions, now_ms, written_ms, self.windows)
                    new_epochs[p] = self._whole(pipe, p, meta)
            for p in diffs:
                meta = meta_value(p, self.partitions, now_ms, written_ms, self.windows)
                await self._diff(pipe, p, meta)
            for payload in top_payloads(self.app_id, sets, self.top_n):
                await self.script(keys=[], args=[payload], client=pipe)  # queues EVALSHA
            results = await asyncio.wait_for(pipe.execute(), timeout)
        self.epochs.update(new_epochs)
        diff_results = results[3 * len(new_epochs) : 3 * len(new_epochs) + len(diffs)]
        refused = [p for p, ok in zip(diffs, diff_results, strict=True) if not ok]
        self.changed = {}
        if refused:  # gone, or rewritten by another worker: whole, now
            for p in refused:
                del self.epochs[p]
            await self._write(now_ms, [], set(refused), refused, timeout)

    async def tick(self, timeout: float | None = None) -> bool:
        """One write of what changed; True if it reached Redis. Never raises.
        ``timeout``: seconds the write may take (default :func:`write_timeout_s`)."""
        await flush_indexes(self.state)  # the loop served between partitions
        now_ms = self.clock.now_ms()
        async with self.live.lock:  # see LiveCounts.refresh
            await self.live.refresh(now_ms)  # the loop let through after 50 ms turns
            for p, pc, _before, _after in self.feed.take():
                self.changed.setdefault(p, {})[pc] = None
        held = set(self.live.partitions())
        for p in set(self.epochs) - held:  # revoked: its new owner writes it whole
            del self.epochs[p]
        deltas = self.tally.take()
        if not held and not deltas:
            return True
        try:
            await self._write(
                now_ms,
                plan(deltas),
                held - set(self.epochs),
                sorted(held),
                self.timeout if timeout is None else timeout,
            )
        except Exception as exc:  # noqa: BLE001 - any failure: count, log once, go on
            self.tally.restore(deltas)
            self.epochs.clear()  # what landed is unknown: every partition whole next time
            self._failed(exc)
            return False
        self._succeeded()
        return True

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.outage.failed(exc)

    def _succeeded(self) -> None:
        self.writes += 1
        self.last_ok_s = time.time()
        self.outage.ok()

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except Exception:  # noqa: BLE001 - shutting down anyway
            pass


class ReadModelCollector(Collector):
    """Prometheus families of the read model (see docs/metrics.md, "Read model")."""

    def __init__(self, writer: ReadModelWriter) -> None:
        self.writer = writer

    def collect(self) -> Iterator[Metric]:
        w = self.writer
        failures = CounterMetricFamily(
            names.REDIS_WRITE_FAILURES, names.HELP[names.REDIS_WRITE_FAILURES]
        )
        failures.add_metric([], w.failures)
        yield failures
        dropped = CounterMetricFamily(names.TOP_USERS_DROPPED, names.HELP[names.TOP_USERS_DROPPED])
        dropped.add_metric([], w.tally.dropped)
        yield dropped
        last = GaugeMetricFamily(names.REDIS_LAST_WRITE, names.HELP[names.REDIS_LAST_WRITE])
        if w.last_ok_s is not None:
            last.add_metric([], w.last_ok_s)
        yield last


def install(pipeline: Any) -> ReadModelWriter | None:
    """Wire the read model into a built :class:`agents.app.Pipeline`: the tally as a
    batch observer, the timer, the metrics, a last write at shutdown."""
    settings = pipeline.settings
    if settings.read_model == "off":  # benchmarks, a worker without Redis
        return None
    interval = settings.snapshot_interval_ms / 1000
    tally = TopUsersTally(settings.active_type_set, settings.top_users_pending)
    writer = ReadModelWriter(
        redis_url=settings.redis_url,
        app_id=settings.app_id,
        live=pipeline.live,
        state=pipeline.state,
        clock=pipeline.clock,
        windows=settings.window_ms,
        partitions=settings.partitions,
        interval_s=interval,
        tally=tally,
        top_n=settings.top_users,
    )
    pipeline.observers.append(tally)
    pipeline.registry.register(ReadModelCollector(writer))
    app = pipeline.app

    @app.timer(interval, name="readmodel-snapshots")
    async def write_read_model() -> None:
        await writer.tick()

    @app.on_before_shutdown.connect
    async def flush_read_model(app: Any, **kwargs: Any) -> None:
        await writer.tick(SHUTDOWN_TIMEOUT_S)
        await writer.close()

    return writer
