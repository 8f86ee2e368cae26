"""The worker's own aiokafka producer, for what Faust's producer path is too slow for.

One producer serves the by-user batches and dead letters of the ingest stage and the
changelog writes of the state stage. It starts lazily (whichever stage needs it
first) and stops at shutdown.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agents.kafka_security import client_kwargs


class SharedProducer:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def send(self, topic: str, value: bytes | None, **kwargs: Any) -> Any:
        """Enqueue one record; returns the delivery future."""
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
                    **client_kwargs(),
                )
                await producer.start()
                self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
