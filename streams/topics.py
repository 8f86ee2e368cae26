"""Topic names and the one partitioning rule every stage agrees on.

Users are routed to partitions of the internal by-user topic with a hash of their
id that the ingest stage, the state stage and the tools (rebuild, tests) all compute
the same way; per-partition counts then cover disjoint sets of users and add up
exactly across partitions and workers.
"""

from __future__ import annotations

import logging
import zlib

log = logging.getLogger(__name__)


def partition_for_user(user_id: str, partitions: int) -> int:
    return zlib.crc32(user_id.encode()) % partitions


def by_user_topic(app_id: str) -> str:
    """The internal topic whose messages each carry a batch of one partition's events."""
    return f"{app_id}-events-by-user"


TABLE_NAME = "users"


def changelog_topic(app_id: str) -> str:
    """Faust's name for the users table's changelog."""
    return f"{app_id}-{TABLE_NAME}-changelog"


def ingest_group(app_id: str) -> str:
    """Consumer group of the ingest stage (the state stage uses the app id itself)."""
    return f"{app_id}-ingest"


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

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap,
                                request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        configs = {"cleanup.policy": "compact"} if compacted else {}
        wanted = [
            NewTopic(name, num_partitions=n, replication_factor=replication,
                     topic_configs=configs)
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
        log.info("created topics %s", ", ".join(t.name for t in wanted))
        return [t.name for t in wanted]
    finally:
        await admin.close()
