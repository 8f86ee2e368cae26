"""Topics the worker creates take the cluster's default replication factor."""

from __future__ import annotations

from typing import Any

import pytest

from agents import kafka_admin


class FakeConfigs:
    def __init__(self, value: str) -> None:
        self.value = value

    def to_object(self) -> dict[str, Any]:
        entry = {"config_names": "default.replication.factor", "config_value": self.value}
        return {"resources": [{"config_entries": [entry]}]}


class FakeAdmin:
    """What ensure_topics asks a broker whose default.replication.factor is 3."""

    created: list[Any] = []

    def __init__(self, **kwargs: Any) -> None:
        pass

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return ["exists"]

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": 7}]}

    async def describe_configs(self, resources: list[Any]) -> list[FakeConfigs]:
        assert resources[0].name == "7"
        return [FakeConfigs("3")]

    async def create_topics(self, topics: list[Any]) -> None:
        FakeAdmin.created.extend(topics)


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> type[FakeAdmin]:
    import aiokafka.admin

    FakeAdmin.created = []
    monkeypatch.setattr(aiokafka.admin, "AIOKafkaAdminClient", FakeAdmin)
    return FakeAdmin


async def test_cluster_default_when_not_configured(admin: type[FakeAdmin]) -> None:
    assert await kafka_admin.ensure_topics("b:1", {"new": 4, "exists": 4}) == ["new"]
    assert [(t.name, t.replication_factor) for t in admin.created] == [("new", 3)]
    assert await kafka_admin.replication_factor("b:1", 0) == 3


async def test_a_configured_factor_wins(admin: type[FakeAdmin]) -> None:
    await kafka_admin.ensure_topics("b:1", {"new": 4}, replication=2)
    assert [t.replication_factor for t in admin.created] == [2]
    assert await kafka_admin.replication_factor("b:1", 5) == 5
