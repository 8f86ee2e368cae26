"""Kafka topic ids (the UUID a broker gives each topic incarnation).

A topic deleted and created again under the same name gets a new id, and its
offsets start at 0 again; a local copy of the old topic's data is then stale even
where its offsets happen to fit the new topic. aiokafka 0.14 speaks Metadata up to
v5, which has no topic ids (they came with v10), so this module carries the v12
request and response schemas itself and asks for nothing else.
"""

from __future__ import annotations

import uuid
from io import BytesIO

from aiokafka.protocol.abstract import AbstractType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

#: The id Kafka reports for "no id" (a broker without topic ids, or an error).
ZERO_ID = "00000000-0000-0000-0000-000000000000"


class Uuid(AbstractType[bytes]):
    """Kafka's UUID field: 16 raw bytes."""

    @classmethod
    def encode(cls, value: bytes) -> bytes:
        return value

    @classmethod
    def decode(cls, data: BytesIO) -> bytes:
        raw = data.read(16)
        if len(raw) != 16:
            raise ValueError("Buffer underrun decoding UUID")
        return raw


class MetadataResponse_v12(Response):  # noqa: N801 - Kafka's naming, as in aiokafka
    API_KEY = 3
    API_VERSION = 12
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            CompactArray(
                ("node_id", Int32),
                ("host", CompactString("utf-8")),
                ("port", Int32),
                ("rack", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            CompactArray(
                ("error_code", Int16),
                ("name", CompactString("utf-8")),
                ("topic_id", Uuid),
                ("is_internal", Boolean),
                (
                    "partitions",
                    CompactArray(
                        ("error_code", Int16),
                        ("partition_index", Int32),
                        ("leader_id", Int32),
                        ("leader_epoch", Int32),
                        ("replica_nodes", CompactArray(Int32)),
                        ("isr_nodes", CompactArray(Int32)),
                        ("offline_replicas", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("topic_authorized_operations", Int32),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class MetadataRequest_v12(RequestStruct):  # noqa: N801
    FLEXIBLE_VERSION = True
    API_KEY = 3
    API_VERSION = 12
    RESPONSE_TYPE = MetadataResponse_v12
    SCHEMA = Schema(
        (
            "topics",
            CompactArray(
                ("topic_id", Uuid),
                ("name", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("allow_auto_topic_creation", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


class TopicIdRequest(Request[MetadataRequest_v12]):
    """Metadata v12 for some topics, never creating them."""

    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[MetadataRequest_v12]) -> MetadataRequest_v12:
        topics: list[tuple[bytes, str, dict[int, bytes]]] = [
            (bytes(16), name, {}) for name in self._topics
        ]
        return request_struct_class(topics, False, False, {})


def topic_ids_from(response: MetadataResponse_v12) -> dict[str, str]:
    """{topic: id} for the topics the broker knows (an unknown topic is left out)."""
    out: dict[str, str] = {}
    for error_code, name, raw_id, *_ in response.topics:
        topic_id = str(uuid.UUID(bytes=raw_id))
        if error_code == 0 and name and topic_id != ZERO_ID:
            out[name] = topic_id
    return out


async def topic_ids(client: object, topics: list[str]) -> dict[str, str]:
    """{topic: id} through a started ``aiokafka.AIOKafkaClient``; {} when the broker
    is too old for Metadata v10+ (then topic identity can't be checked)."""
    from aiokafka.errors import IncompatibleBrokerVersion

    node = client.get_random_node()  # type: ignore[attr-defined]
    try:
        response = await client.send(node, TopicIdRequest(topics))  # type: ignore[attr-defined]
    except (IncompatibleBrokerVersion, NotImplementedError):
        return {}
    return topic_ids_from(response)
