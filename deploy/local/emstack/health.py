"""Readiness checks: each returns True once the service does real work."""

from __future__ import annotations

import asyncio
import logging
import socket
import urllib.error
import urllib.request

from emstack.config import StackError

HEALTH_TOPIC = "em-stack-healthcheck"


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (OSError, urllib.error.URLError):
        return False


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def redis_ok(port: int, timeout: float = 2.0) -> bool:
    """PING over RESP, with the standard library only."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def kafka_ok(bootstrap: str, timeout: float = 10.0) -> bool:
    """The broker answers a metadata request and acknowledges a produce (acks=all)."""
    host, _, port = bootstrap.rpartition(":")
    if not _accepts(host, int(port)):
        return False
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # retries are expected here
    try:
        return asyncio.run(asyncio.wait_for(_kafka_produce(bootstrap), timeout))
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False


def require_aiokafka() -> None:
    """The Kafka check runs in this interpreter: fail early, clearly, without aiokafka."""
    try:
        import aiokafka  # noqa: F401
    except ImportError:
        raise StackError(
            "the Kafka readiness check needs aiokafka: create the venv first (make venv), "
            "or set EM_PYTHON to a python that has it"
        ) from None


async def _kafka_produce(bootstrap: str) -> bool:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=5000)
    try:
        await producer.start()  # fetches cluster metadata
        await producer.send_and_wait(HEALTH_TOPIC, b"ping")
    finally:
        await producer.stop()
    return True
