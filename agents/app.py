"""The Faust app of one worker, wired from :class:`streams.settings.Settings`.

Building the app in a function (not at import time) lets each test and each CLI
invocation have its own app id, topics and store. The parts are assembled in
small steps: the Faust app, its metrics page, the state stage (table + agent),
the ingest task and the housekeeping timers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from faust.sensors.prometheus import FaustMetrics
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from agents import codec_guard
from agents.changelog import ChangelogWriter
from agents.faust_txn import CommittedTableManager
from agents.faust_txn import install as install_transactions
from agents.heap_trim import TRIM_INTERVAL_S, HeapTrim
from agents.ingest import IngestStage, Router
from agents.ingest_counters import TOPIC_CONFIGS as COUNTER_TOPIC_CONFIGS
from agents.kafka_admin import ensure_topics, replication_factor
from agents.kafka_security import current as current_security
from agents.kafka_security import faust_settings
from agents.label_ranking import install as install_label_ranking
from agents.labels import worker_labels
from agents.lag_offsets import OffsetGauges, TransactionMonitor
from agents.metrics import AppLabelled, EngagementCollector, IngestStats, Only
from agents.producer import PartitionProducers
from agents.redis_snapshots import install as install_read_model
from agents.state_stage import BatchObserver, UsersTable, expire, flush_indexes, make_apply_agent
from agents.store_options import store_options
from agents.store_sync import StoreSync
from streams.clock import Clock
from streams.live_counts import LiveCounts
from streams.metric_names import FAUST_METRIC_PREFIX
from streams.security import bearer_ok, pseudonymiser
from streams.settings import Settings
from streams.state import WorkerState
from streams.topics import (
    TABLE_NAME,
    by_user_topic,
    changelog_topic,
    ingest_counters_topic,
    ingest_group,
)

log = logging.getLogger(__name__)

#: How long a stopping worker waits for its staged changelog writes.
SHUTDOWN_DRAIN_S = 10.0


@dataclass
class Pipeline:
    """What the worker is made of; tests and the CLI reach the parts through it."""

    settings: Settings
    app: faust.App
    state: WorkerState
    stats: IngestStats
    clock: Clock
    registry: CollectorRegistry
    table: UsersTable
    writer: ChangelogWriter
    #: every held partition's gauge rows, shared by /metrics and the read model
    live: LiveCounts
    #: callables ``(partition, events)`` run on every applied by-user batch
    observers: list[BatchObserver] = field(default_factory=list)


def _faust_broker(bootstrap: str) -> str:
    return ";".join(f"kafka://{hostport.strip()}" for hostport in bootstrap.split(","))


async def prepare_topics(settings: Settings) -> int:
    """Create the topics before Faust subscribes: a consumer that subscribes to a
    missing topic ignores it until the next rebalance, and the agent would sit idle.
    Returns the replication factor used (EM_REPLICATION_FACTOR, else the cluster's
    default), for the topics Faust creates itself."""
    bootstrap = settings.kafka_bootstrap_servers
    factor = await replication_factor(bootstrap, settings.replication_factor)
    await ensure_topics(
        bootstrap,
        {
            settings.input_topic: settings.partitions,
            settings.dlq_topic: 1,
            by_user_topic(settings.app_id): settings.partitions,
        },
        replication=factor,
    )
    await ensure_topics(
        bootstrap,
        {changelog_topic(settings.app_id): settings.partitions},
        compacted=True,
        replication=factor,
    )
    await ensure_topics(
        bootstrap,
        {ingest_counters_topic(settings.app_id): settings.partitions},
        configs=COUNTER_TOPIC_CONFIGS,
        replication=factor,
    )
    return factor


def _faust_app(settings: Settings) -> faust.App:
    Path(settings.app_datadir).mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.app_id,
        broker=_faust_broker(settings.kafka_bootstrap_servers),
        store=settings.store,
        datadir=settings.app_datadir,
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor or 1,
        web_enabled=True,
        # /metrics and / (health) only: Faust's table and router pages would hand out
        # user records and the cluster layout to anyone who reaches the port.
        web_tables_enabled=False,
        web_router_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_metrics_enabled=False,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_rebalance_timeout=settings.rebalance_timeout_ms / 1000,
        broker_heartbeat_interval=settings.heartbeat_interval_ms / 1000,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        table_standby_replicas=0,
        value_serializer="raw",
        # discards stale local stores before recovery; recovers committed records only
        TableManager=CommittedTableManager,
        **faust_settings(),
    )


def _metrics_page(
    app: faust.App,
    registry: CollectorRegistry,
    app_id: str,
    bootstrap: str,
    gauges: EngagementCollector,
) -> OffsetGauges:
    """``/metrics``: Faust's sensor and our collectors on one registry, every sample
    labelled ``app="<app id>"``, then the per-community families, which ``gauges``
    renders itself (only what changed since the last scrape; the registry holds its
    other families).

    Does what ``faust.sensors.prometheus.setup_prometheus_sensors`` does, but keeps
    Faust's two offset gauges behind :class:`OffsetGauges`, which both stages'
    transactions report to (one lag rule covers every stage).
    """
    faust_metrics = FaustMetrics.create(registry, FAUST_METRIC_PREFIX)
    monitor = TransactionMonitor(metrics=faust_metrics)
    monitor.offsets = OffsetGauges(
        faust_metrics.topic_partition_end_offset,
        faust_metrics.topic_partition_offset_commited,
        bootstrap,
    )
    app.monitor = monitor
    labelled = AppLabelled(registry, app_id)

    token = current_security().http_token

    @app.page("/metrics")
    async def metrics(self: Any, request: Any) -> Any:
        from faust.web.drivers.aiohttp import Response

        if not bearer_ok(request.headers.get("Authorization"), token):
            return Response(
                body=b"unauthorized\n", status=401, headers={"WWW-Authenticate": "Bearer"}
            )
        # name[]=<family>: only those families, as Prometheus client libraries serve
        # them (a probe or a federation reading one gauge need not take 6 MB of text)
        only = frozenset(request.query.getall("name[]", [])) or None
        await flush_indexes(gauges.state)  # the loop served between partitions
        source = labelled if only is None else Only(labelled, only)
        live = gauges.live
        async with live.lock:  # the rows stay as refreshed until the text is made
            await live.refresh(gauges.clock.now_ms())  # the loop let through after 50 ms turns
            body = generate_latest(source) + gauges.text(only).encode()
        return Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST}, status=200)

    return monitor.offsets


def _state_stage(
    app: faust.App,
    settings: Settings,
    state: WorkerState,
    observers: list[BatchObserver],
    late: BatchObserver,
    offsets: OffsetGauges,
) -> tuple[UsersTable, ChangelogWriter]:
    internal = by_user_topic(settings.app_id)
    topic = app.topic(
        internal,
        partitions=settings.partitions,
        internal=True,
        value_serializer="raw",
        key_serializer="raw",
    )
    table = UsersTable(
        app,
        name=TABLE_NAME,
        default=None,
        partitions=settings.partitions,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        options=store_options(),
    )
    table.worker_state = state
    table.partitions_total = settings.partitions
    table.source_topics = frozenset({internal})
    app.tables.add(table)
    producers = PartitionProducers(
        settings.kafka_bootstrap_servers,
        f"{settings.app_id}-state",
        on_given_up=lambda _partition: app.consumer.request_rejoin(),  # type: ignore[attr-defined]
    )
    writer = ChangelogWriter(
        producers, table.changelog_topic_name, state, internal, settings.app_id, offsets
    )
    writer.on_committed = StoreSync(table, table.changelog_topic_name).committed
    table.writer = writer
    make_apply_agent(app, topic, table, writer, observers, late)
    return table, writer


def _ingest_task(
    app: faust.App,
    settings: Settings,
    stats: IngestStats,
    offsets: OffsetGauges,
) -> None:
    codec_guard.install(settings.max_batch_bytes)  # before the consumer reads a batch

    @app.task
    async def ingest() -> None:
        stage = IngestStage(
            bootstrap=settings.kafka_bootstrap_servers,
            group_id=ingest_group(settings.app_id),
            input_topic=settings.input_topic,
            by_user_topic=by_user_topic(settings.app_id),
            dlq_topic=settings.dlq_topic,
            counters_topic=ingest_counters_topic(settings.app_id),
            router=Router(
                settings.partitions,
                settings.limits,
                stats,
                pseudonymiser(current_security().user_id_key),
                settings.mapping,
            ),
            producers=PartitionProducers(
                settings.kafka_bootstrap_servers, f"{settings.app_id}-ingest"
            ),
            consumer_settings={
                "session_timeout_ms": settings.session_timeout_ms,
                "rebalance_timeout_ms": settings.rebalance_timeout_ms,
                "heartbeat_interval_ms": settings.heartbeat_interval_ms,
            },
            offsets=offsets,
            txn_spacing=settings.ingest_txn_spacing_ms / 1000,
        )
        await stage.run()


def _housekeeping(
    app: faust.App,
    settings: Settings,
    state: WorkerState,
    clock: Clock,
    writer: ChangelogWriter,
) -> None:
    windows = settings.window_ms
    longest = max(windows, key=lambda w: windows[w])

    @app.timer(1.0)
    async def update_indexes() -> None:
        """Keep the window indexes current, so a scrape never pays for a backlog."""
        await flush_indexes(state)

    heap = HeapTrim()
    heap.configure()

    @app.timer(TRIM_INTERVAL_S)
    async def trim_heap() -> None:
        """Free memory back to the system (agents/heap_trim.py: why)."""
        took = heap.trim()
        if took > 0.05:
            log.info("heap trim: %.0f ms", took * 1e3)

    @app.timer(settings.expiry_interval_ms / 1000)
    async def expire_old_records() -> None:
        now = clock.now_ms()
        if now is not None:
            # Twice the longest window: dormant users reach back to now - 2W.
            removed = await expire(state, writer, now, 2 * windows[longest])
            if removed:
                log.info("state: expired %d records older than 2 x %s", removed, longest)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_producers(app: faust.App, **kwargs: Any) -> None:
        try:  # what was applied is committed: the next owner need not read it again
            await asyncio.wait_for(writer.drain(), SHUTDOWN_DRAIN_S)
        except Exception as exc:  # noqa: BLE001 - the next owner reads those events again
            log.warning("state: staged changelog writes not drained at shutdown: %r", exc)
        await writer.producers.revoke_all()


def _lag_probe(app: faust.App, offsets: OffsetGauges) -> None:
    @app.timer(2.0)
    async def probe_offsets() -> None:
        """Show partitions whose only offsets left are transaction markers as caught up."""
        try:
            await offsets.probe()
        except Exception as exc:  # noqa: BLE001 - a gauge correction; retried next tick
            log.debug("lag probe: %r", exc)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_probe(app: faust.App, **kwargs: Any) -> None:
        await offsets.stop()


def build(settings: Settings) -> Pipeline:
    settings.check()
    app = _faust_app(settings)
    state = WorkerState(settings.active_type_set)
    labels = worker_labels(settings)
    stats = IngestStats(labels)
    clock = Clock(settings.clock, state.watermark_ms)
    registry = CollectorRegistry(auto_describe=True)
    live = LiveCounts(state, settings.window_ms)
    gauges = EngagementCollector(state, stats, clock, settings.window_ms, live, settings.app_id)
    offsets = _metrics_page(
        app, registry, settings.app_id, settings.kafka_bootstrap_servers, gauges
    )
    registry.register(gauges.rest)

    install_transactions(app)
    observers: list[BatchObserver] = []  # filled by optional read models
    table, writer = _state_stage(
        app,
        settings,
        state,
        observers,
        lambda _partition, events: stats.late.observe(events, clock.watermark_ms()),
        offsets,
    )
    _ingest_task(app, settings, stats, offsets)
    _housekeeping(app, settings, state, clock, writer)
    _lag_probe(app, offsets)

    pipeline = Pipeline(
        settings, app, state, stats, clock, registry, table, writer, live, observers
    )
    install_read_model(pipeline)  # Redis snapshots + top users, on a timer (EM_READ_MODEL=off)
    install_label_ranking(pipeline, labels)  # the label caps, the same on every worker
    return pipeline
