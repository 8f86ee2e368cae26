"""The worker's own aiokafka producer, for what Faust's producer path is too slow for.

One producer serves the by-user batches and dead letters of the ingest stage and the
changelog writes of the state stage. It starts lazily (whichever stage needs it
first) and stops at shutdown. Its batches are filled by :mod:`agents.kafka_out`, the
one batch producer the commands use too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from agents.kafka_out import send_to_partition, start_producer


class SharedProducer:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def send(self, topic: str, value: bytes | None, **kwargs: Any) -> Any:
        """Enqueue one record; returns the delivery future."""
        producer = await self._started()
        return await producer.send(topic, value, **kwargs)

    async def send_many(
        self, topic: str, partition: int, records: list[tuple[bytes, bytes | None]]
    ) -> list[Any]:
        """Send (key, value) records to one partition in as few batches as fit; returns
        the batches' delivery futures (see :func:`agents.kafka_out.send_to_partition`)."""
        return await send_to_partition(await self._started(), topic, partition, records)

    async def _started(self) -> Any:
        if self._producer is None:
            async with self._lock:
                if self._producer is None:
                    self._producer = await start_producer(
                        self.bootstrap,
                        acks="all",
                        linger_ms=5,
                        max_batch_size=1024 * 1024,
                        max_request_size=4 * 1024 * 1024,
                    )
        return self._producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
