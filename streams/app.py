"""The Faust app of one worker, wired from :class:`streams.settings.Settings`.

Building the app in a function (not at import time) lets each test and each CLI
invocation have its own app id, topics and store.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from prometheus_client import CollectorRegistry

from agents.changelog import ChangelogWriter
from agents.ingest import IngestStage, Router
from agents.labels import CommunityLabels
from agents.metrics import EngagementCollector, IngestStats
from agents.redis_snapshots import install as install_read_model
from agents.state_stage import UsersTable, expire, make_apply_agent
from streams.clock import Clock
from streams.settings import Settings
from streams.state import WorkerState
from streams.topics import (
    TABLE_NAME,
    by_user_topic,
    changelog_topic,
    ensure_topics,
    ingest_group,
)

log = logging.getLogger(__name__)


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
    #: callables ``(partition, events)`` run on every applied by-user batch
    observers: list
    producer: SharedProducer


class SharedProducer:
    """One aiokafka producer for the by-user batches, dead letters and changelog writes.

    Started lazily by whichever stage needs it first, stopped at shutdown.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def send(self, topic: str, value: bytes | None, **kwargs: Any) -> Any:
        if self._producer is None:
            await self._start()
        return await self._producer.send(topic, value, **kwargs)

    async def send_many(
        self, topic: str, partition: int, records: list[tuple[bytes, bytes | None]]
    ) -> list[Any]:
        """Send (key, value) records to one partition in as few batches as fit.

        Filling aiokafka's batch builder directly skips the per-record future,
        partitioner and accumulator work of ``send()`` — the bulk of the cost of a
        changelog write.
        """
        if self._producer is None:
            await self._start()
        producer = self._producer
        futures = []
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        if batch.record_count():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    async def _start(self) -> None:
        from aiokafka import AIOKafkaProducer

        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    acks="all",
                    linger_ms=5,
                    max_batch_size=1024 * 1024,
                    max_request_size=4 * 1024 * 1024,
                )
                await producer.start()
                self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


def _faust_broker(bootstrap: str) -> str:
    return ";".join(f"kafka://{hostport.strip()}" for hostport in bootstrap.split(","))


async def prepare_topics(settings: Settings) -> None:
    """Create the topics before Faust subscribes: a consumer that subscribes to a
    missing topic ignores it until the next rebalance, and the agent would sit idle."""
    bootstrap = settings.kafka_bootstrap_servers
    await ensure_topics(bootstrap, {
        settings.input_topic: settings.partitions,
        settings.dlq_topic: 1,
        by_user_topic(settings.app_id): settings.partitions,
    })
    await ensure_topics(bootstrap, {changelog_topic(settings.app_id): settings.partitions},
                        compacted=True)


def build(settings: Settings) -> Pipeline:
    settings.check()
    Path(settings.datadir).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=_faust_broker(settings.kafka_bootstrap_servers),
        store=settings.store,
        datadir=settings.datadir,
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        broker_session_timeout=settings.seconds("session_timeout"),
        broker_rebalance_timeout=settings.seconds("rebalance_timeout"),
        broker_heartbeat_interval=settings.seconds("heartbeat_interval"),
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        table_standby_replicas=0,
        value_serializer="raw",
    )
    state = WorkerState(settings.active_type_set)
    labels = CommunityLabels(settings.community_cap)
    stats = IngestStats(labels)
    clock = Clock(settings.clock, state.watermark_ms)
    windows = settings.window_ms
    horizon_ms = max(windows.values())

    registry = CollectorRegistry(auto_describe=True)
    setup_prometheus_sensors(app, pattern="/metrics", registry=registry, name_prefix="faust")
    registry.register(EngagementCollector(state, stats, clock, windows))

    internal = by_user_topic(settings.app_id)
    topic = app.topic(internal, partitions=settings.partitions, internal=True,
                      value_serializer="raw", key_serializer="raw")
    table = UsersTable(
        app, name=TABLE_NAME, default=None, partitions=settings.partitions,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
    )
    table.worker_state = state
    table.partitions_total = settings.partitions
    table.source_topics = frozenset({internal})
    app.tables.add(table)

    producer = SharedProducer(settings.kafka_bootstrap_servers)
    writer = ChangelogWriter(producer, table.changelog_topic_name, state)
    observers: list = []  # filled by optional read models (see Pipeline.observers)
    make_apply_agent(app, topic, table, writer, observers)

    metrics = getattr(app.monitor, "metrics", None)
    offsets_gauges = (
        (metrics.topic_partition_end_offset, metrics.topic_partition_offset_commited)
        if metrics is not None
        else None
    )

    @app.task
    async def ingest() -> None:
        stage = IngestStage(
            bootstrap=settings.kafka_bootstrap_servers,
            group_id=ingest_group(settings.app_id),
            input_topic=settings.input_topic,
            by_user_topic=internal,
            dlq_topic=settings.dlq_topic,
            router=Router(settings.partitions, settings.limits, stats),
            producer=producer,
            consumer_settings={
                "session_timeout_ms": int(settings.seconds("session_timeout") * 1000),
                "rebalance_timeout_ms": int(settings.seconds("rebalance_timeout") * 1000),
                "heartbeat_interval_ms": int(settings.seconds("heartbeat_interval") * 1000),
            },
            offsets_gauges=offsets_gauges,
        )
        await stage.run()

    @app.timer(1.0)
    async def update_indexes() -> None:
        """Keep the window indexes current, so a scrape never pays for a backlog."""
        for part in list(state.partitions.values()):
            part.flush()

    @app.timer(settings.seconds("expiry_interval"))
    async def expire_old_records() -> None:
        now = clock.now_ms()
        if now is not None:
            removed = await expire(state, writer, now, horizon_ms)
            if removed:
                log.info("state: expired %d records older than %s", removed,
                         max(windows, key=lambda w: windows[w]))

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_producer(app: faust.App, **kwargs: Any) -> None:
        await producer.stop()

    pipeline = Pipeline(settings, app, state, stats, clock, registry, table, observers, producer)
    install_read_model(pipeline)  # Redis snapshots + top users, on a timer (EM_READ_MODEL=off)
    return pipeline
