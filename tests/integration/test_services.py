"""Each service of the local stack is real and does its job."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from emstack import promcfg

from .conftest import REPO, STACK_SCRIPT, Stack

pytestmark = pytest.mark.integration

MESSAGES = 5000
PARTITIONS = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, group: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        for _ in range(120):  # bounded: about a minute at most
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            records += [r for rs in batch.values() for r in rs]
            if len(records) >= count:
                break
        records += [r for rs in (await consumer.getmany(timeout_ms=1000)).values() for r in rs]
        await consumer.commit()
    finally:
        await consumer.stop()
    return records


async def test_kafka_round_trip(stack: Stack) -> None:
    topic, group = stack.unique_name("svc-kafka"), stack.unique_name("svc-group")
    sent = [
        (f"k{i % 97}".encode(), f"value-{i}-{random.random()}".encode()) for i in range(MESSAGES)
    ]
    await _create_topic(stack.kafka_bootstrap, topic)
    await _produce(stack.kafka_bootstrap, topic, sent)

    records = await _consume(stack.kafka_bootstrap, topic, group, MESSAGES)

    assert len(records) == MESSAGES
    assert sorted((r.key, r.value) for r in records) == sorted(sent)
    assert {r.partition for r in records} == set(range(PARTITIONS))
    for key in {k for k, _ in sent}:  # per-key order is the send order
        assert [r.value for r in records if r.key == key] == [v for k, v in sent if k == key]


async def test_kafka_group_committed_offsets(stack: Stack) -> None:
    topic, group = stack.unique_name("svc-offsets"), stack.unique_name("svc-group")
    await _create_topic(stack.kafka_bootstrap, topic)
    await _produce(stack.kafka_bootstrap, topic, [(b"k%d" % i, b"v") for i in range(200)])
    await _consume(stack.kafka_bootstrap, topic, group, 200)

    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=group)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = [await consumer.committed(tp) or 0 for tp in partitions]
    finally:
        await consumer.stop()
    assert sum(committed) == 200


def test_redis_round_trip(stack: Stack) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    key = stack.unique_name("svc-redis")
    try:
        client.zadd(key, {"u-1": 3, "u-2": 7, "u-3": 5})
        assert client.zrevrange(key, 0, 1, withscores=True) == [(b"u-2", 7.0), (b"u-3", 5.0)]
        assert client.expire(key, 60)
    finally:
        client.delete(key)
        client.close()


def test_prometheus_scrapes_a_live_target(stack: Stack) -> None:
    registry = CollectorRegistry()
    value = round(random.uniform(1, 1_000_000), 3)
    Gauge("em_stack_probe", "random value for the stack test", registry=registry).set(value)
    port = _free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    target = f"127.0.0.1:{port}"
    try:
        stack.scrape([target])
        result = stack.wait_for_query(f'em_stack_probe{{instance="{target}"}}', timeout=60)
    finally:
        server.shutdown()
        thread.join(5)
    assert len(result) == 1
    assert result[0]["metric"]["job"] == "engagement-monitor"
    assert float(result[0]["value"][1]) == value


def _alertmanager(stack: Stack, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{stack.alertmanager_url}{path}",
        data=data,
        headers={"Content-Type": "application/json"},
        method="POST" if data else "GET",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def test_alertmanager_accepts_and_lists_an_alert(stack: Stack) -> None:
    name = stack.unique_name("EmStackProbe")
    ends = datetime.now(UTC) + timedelta(minutes=2)
    alert = {
        "labels": {"alertname": name, "severity": "test"},
        "annotations": {"summary": "stack test"},
        "endsAt": ends.isoformat().replace("+00:00", "Z"),
    }
    _alertmanager(stack, "/api/v2/alerts", [alert])

    query = urllib.parse.urlencode({"filter": f'alertname="{name}"'})
    listed = _alertmanager(stack, f"/api/v2/alerts?{query}")
    assert [a["labels"]["alertname"] for a in listed] == [name]
    assert listed[0]["status"]["state"] == "active"


def test_promtool_accepts_config_and_rules(stack: Stack) -> None:
    config = promcfg.active_config_path(stack.cfg)
    check = subprocess.run(
        ["promtool", "check", "config", str(config)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    rules = sorted(promcfg.RULES_DIR.glob("*.yml"))
    if rules:
        check = subprocess.run(
            ["promtool", "check", "rules", *map(str, rules)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr


def test_rendered_config_uses_ports_targets_and_absolute_rules(stack: Stack) -> None:
    text = promcfg.render(stack.cfg, ["127.0.0.1:1", "127.0.0.1:2"])
    assert '["127.0.0.1:1", "127.0.0.1:2"]' in text
    assert f'["127.0.0.1:{stack.cfg.ports["ALERTMANAGER_PORT"]}"]' in text
    assert f'"{REPO}/deploy/prometheus/rules/*.yml"' in text


def test_up_refuses_a_taken_port(stack: Stack, tmp_path: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        env = {**stack.worker_env(), "EM_STATE_DIR": str(tmp_path), "REDIS_PORT": str(port)}
        for var in ("KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "PROMETHEUS_PORT", "ALERTMANAGER_PORT"):
            env[var] = str(_free_port())
        result = subprocess.run(
            [str(STACK_SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=120
        )
    assert result.returncode != 0
    assert f"port {port} (REDIS_PORT" in result.stderr
    assert not list((tmp_path / "run").glob("*.pid"))
