"""Topic administration shared by the worker and the commands.

Every client that creates topics goes through :func:`ensure_topics`, so what it
created is remembered and aiokafka's "not found in cluster metadata" noise about a
topic created a moment ago is filtered once, here.
"""

from __future__ import annotations

import logging
from typing import Any

from agents.kafka_security import client_kwargs

log = logging.getLogger(__name__)


class _JustCreated(logging.Filter):
    """Hides aiokafka's "Topic X not found in cluster metadata" errors for topics this
    process has just created: the metadata lags the creation by a moment, and the
    message would read like a failure on every fresh replay."""

    topics: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.msg == "Topic %s not found in cluster metadata"
            and bool(record.args)
            and str(record.args[0]) in self.topics  # type: ignore[index]
        )


_just_created = _JustCreated()
logging.getLogger("aiokafka.cluster").addFilter(_just_created)


async def ensure_topics(
    bootstrap: str,
    topics: dict[str, int],
    *,
    compacted: bool = False,
    configs: dict[str, str] | None = None,
    replication: int | None = None,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics that don't exist yet ({name: partitions}); return those created.

    Existing topics are left as they are (their partition count is not changed);
    a topic created meanwhile by another client is not an error. ``replication``
    None: the cluster's ``default.replication.factor`` (aiokafka's CreateTopics
    cannot ask the broker for its default with -1, so it is looked up).
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    extra_configs = dict(configs or {})

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(timeout_s * 1000),
        **client_kwargs(),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        configs = {"cleanup.policy": "compact"} if compacted else {}
        configs.update(extra_configs)
        wanted = [
            NewTopic(
                name, num_partitions=n, replication_factor=replication or 1, topic_configs=configs
            )
            for name, n in topics.items()
            if name not in existing
        ]
        if not wanted:
            return []
        if replication is None:
            factor = await cluster_replication(admin)
            for topic in wanted:
                topic.replication_factor = factor
        try:
            response = await admin.create_topics(wanted)
        except TopicAlreadyExistsError:
            return []
        for name, code, *_ in getattr(response, "topic_errors", []):
            if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (a concurrent creator)
                raise RuntimeError(f"creating topic {name!r} failed with Kafka error {code}")
        created = [t.name for t in wanted]
        _JustCreated.topics.update(created)
        log.info("created topics %s", ", ".join(created))
        return created
    finally:
        await admin.close()


class MissingTopic(ValueError):
    """A topic a command reads does not exist. Reading must not create it: a typo
    would otherwise become a new, empty topic and an answer of "0 events"."""


async def require_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> int:
    """The partition count of an existing topic; :class:`MissingTopic` naming it if
    absent. Asks for the metadata of *all* topics, which never auto-creates one (a
    metadata request naming the topic would, on brokers with auto-creation on)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000), **client_kwargs()
    )
    await admin.start()
    try:
        described = await admin.describe_topics()  # all topics (None): creates none
    finally:
        await admin.close()
    partitions = [p for d in described if d["topic"] == topic for p in d["partitions"]]
    if not partitions:
        raise MissingTopic(f"topic {topic!r} does not exist at {bootstrap} (nothing was created)")
    return len(partitions)


async def cluster_replication(admin: Any) -> int:
    """The cluster's ``default.replication.factor`` (a broker's), 1 if it can't be read
    (e.g. no DescribeConfigs permission; then set EM_REPLICATION_FACTOR)."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    key = "default.replication.factor"
    try:
        node = (await admin.describe_cluster())["brokers"][0]["node_id"]
        resource = ConfigResource(ConfigResourceType.BROKER, str(node), {key: None})
        answer = (await admin.describe_configs([resource]))[0].to_object()
        entries = answer["resources"][0]["config_entries"]
        return int(next(e["config_value"] for e in entries if e["config_names"] == key))
    except Exception as exc:  # noqa: BLE001 - any failure: the safe single-node default
        log.warning("could not read %s (%r): creating topics with replication 1", key, exc)
        return 1


async def replication_factor(bootstrap: str, configured: int) -> int:
    """``configured`` if set (> 0), else the cluster's default."""
    if configured > 0:
        return configured
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs())
    await admin.start()
    try:
        return await cluster_replication(admin)
    finally:
        await admin.close()
