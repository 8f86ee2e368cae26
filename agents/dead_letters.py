"""Dead letters: the DLQ record of a refused message, and its delivery.

A dead letter must always fit: a record refused as ``too_large`` (or one that was
compressed below the broker's limit and is far larger decompressed) copied whole
would exceed the producer's or the broker's size limit, the send would fail, and a
stage that answers a failed send by reading the poll again would stall its
partition forever. So the value and key are cut to a bound well below Kafka's
default 1 MiB record limit, with the original size in a header, and a send that the
broker still refuses for this record alone is retried once without the payload —
never by rewinding the poll.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from streams.events import InvalidEvent

log = logging.getLogger(__name__)

#: Most bytes of the original value kept in a dead letter (then also capped by the
#: accepted message size): far below Kafka's default 1 MiB record limit.
MAX_VALUE_BYTES = 64 * 1024
#: Most bytes of the original key kept, and of the ``detail`` header.
MAX_KEY_BYTES = 1024
MAX_DETAIL_BYTES = 500


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One DLQ record, ready to send."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def _text(value: str, limit: int) -> bytes:
    return value.encode("utf-8", "backslashreplace")[:limit]


def cut(value: bytes, limit: int = MAX_VALUE_BYTES) -> tuple[bytes, list[tuple[str, bytes]]]:
    """``value`` cut to ``limit`` bytes, and the headers that say so (the original
    size always, ``truncated`` when cut)."""
    headers = [("original_size", str(len(value)).encode())]
    if len(value) > limit:
        return value[:limit], [*headers, ("truncated", b"value")]
    return value, headers


def dead_letter(message: Any, error: InvalidEvent, max_value_bytes: int) -> DeadLetter:
    """The DLQ record of ``message``: its bytes cut to ``max_value_bytes`` (and at
    most :data:`MAX_VALUE_BYTES`), the reason, detail, source and original size in
    headers, and for ``internal_error`` the exception's class."""
    value, key = message.value, message.key
    limit = min(max_value_bytes, MAX_VALUE_BYTES)
    headers = [
        ("reason", error.reason.encode()),
        ("detail", _text(error.detail, MAX_DETAIL_BYTES)),
        ("source_topic", _text(message.topic, 300)),
        ("source_partition", str(message.partition).encode()),
        ("source_offset", str(message.offset).encode()),
    ]
    if error.exception:
        headers.append(("exception", _text(error.exception, 200)))
    if value is None:  # a null value (original_size -1): the producer needs key or value
        headers.append(("original_size", b"-1"))
        value = b""
    else:
        value, size_headers = cut(value, limit)
        headers += size_headers
    if key is not None and len(key) > MAX_KEY_BYTES:
        headers.append(("original_key_size", str(len(key)).encode()))
        key = key[:MAX_KEY_BYTES]
    return DeadLetter(key, value, headers)


def record_errors() -> tuple[type[BaseException], ...]:
    """Send errors about one record (its size or form), not about the broker being
    away: retrying them can never succeed, so they are handled per record."""
    from aiokafka import errors

    return (
        errors.MessageSizeTooLargeError,
        errors.RecordTooLargeError,
        errors.RecordListTooLargeError,
        errors.CorruptRecordException,
        errors.InvalidTimestampError,
        errors.UnsupportedForMessageFormatError,
    )


async def _enqueue(producer: Any, topic: str, letter: DeadLetter) -> Any:
    """The delivery future; a refusal at enqueue time becomes a failed future."""
    try:
        return await producer.send(topic, letter.value, key=letter.key, headers=letter.headers)
    except record_errors() as exc:
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(exc)
        return failed


async def deliver(producer: Any, topic: str, letters: list[DeadLetter]) -> int:
    """Send the dead letters and wait for their acks. A record refused for its own
    sake is sent again without key and value (headers say why); any other error
    (the broker is away) is raised, so the caller reads the poll again. Returns
    how many letters went out stripped."""
    futures = [await _enqueue(producer, topic, letter) for letter in letters]
    results = await asyncio.gather(*futures, return_exceptions=True)
    stripped = []
    for letter, result in zip(letters, results, strict=True):
        if isinstance(result, record_errors()):
            headers = [*letter.headers, ("send_error", type(result).__name__.encode())]
            log.warning("dlq: %s refused the dead letter, sending it without payload", result)
            stripped.append(await producer.send(topic, b"", headers=headers))
        elif isinstance(result, BaseException):
            raise result
    if stripped:
        await asyncio.gather(*stripped)
    return len(stripped)
