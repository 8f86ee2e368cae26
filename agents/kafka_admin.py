"""Topic administration shared by the worker and the commands.

Every client that creates topics goes through :func:`ensure_topics`, so what it
created is remembered and aiokafka's "not found in cluster metadata" noise about a
topic created a moment ago is filtered once, here.
"""

from __future__ import annotations

import logging

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
    replication: int = 1,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics that don't exist yet ({name: partitions}); return those created.

    Existing topics are left as they are (their partition count is not changed);
    a topic created meanwhile by another client is not an error.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(timeout_s * 1000),
        **client_kwargs(),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        configs = {"cleanup.policy": "compact"} if compacted else {}
        wanted = [
            NewTopic(name, num_partitions=n, replication_factor=replication, topic_configs=configs)
            for name, n in topics.items()
            if name not in existing
        ]
        if not wanted:
            return []
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
