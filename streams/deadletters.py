"""Dead letters as an operator sees them: counted, shown safely, exported, re-sent.

The DLQ holds the original bytes of every refused message and headers saying why
(``reason``, ``detail``, ``source_topic``, ``source_partition``, ``source_offset``;
see :func:`agents.ingest.dlq_headers`). Everything here is pure, so
``engagement-monitor dlq`` (commands/dlq.py) only adds the Kafka reading and writing.
"""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

#: Marker key of an exported line; a re-sent file may mix exported and plain lines.
EXPORT_KEY = "dlq"


@dataclass(frozen=True)
class DeadLetter:
    """One DLQ record."""

    partition: int
    offset: int
    timestamp_ms: int
    headers: dict[str, str]
    value: bytes | None

    @property
    def reason(self) -> str:
        return self.headers.get("reason", "?")


def from_record(
    partition: int, offset: int, timestamp_ms: int, headers: Any, value: Any
) -> DeadLetter:
    """From a Kafka record's parts; header values decoded leniently (they are ours, but
    a DLQ may also receive other writers' records)."""
    decoded = {str(k): (v or b"").decode("utf-8", "backslashreplace") for k, v in headers or ()}
    return DeadLetter(partition, offset, timestamp_ms, decoded, value)


def safe_text(value: bytes | None, limit: int = 200) -> str:
    """The bytes as one printable line: UTF-8 where it decodes, ``\\xNN`` where not,
    control and other non-printable characters escaped (no terminal escape sequence
    or line break gets through), cut at ``limit`` characters with the remainder counted."""
    if value is None:
        return "(null)"
    text = value.decode("utf-8", "backslashreplace")
    out = "".join(c if c.isprintable() else _escape(c) for c in text)
    if len(out) > limit:
        return f"{out[:limit]}… (+{len(out) - limit} chars, {len(value)} bytes)"
    return out


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Tally:
    """Counts by reason, and by reason per time bucket (record time, UTC-aligned)."""

    bucket_ms: int
    by_reason: Counter[str] = field(default_factory=Counter)
    by_bucket: dict[int, Counter[str]] = field(default_factory=dict)

    def add(self, letter: DeadLetter) -> None:
        self.by_reason[letter.reason] += 1
        start = letter.timestamp_ms - letter.timestamp_ms % self.bucket_ms
        self.by_bucket.setdefault(start, Counter())[letter.reason] += 1

    def rows(self) -> list[tuple[str, dict[str, int]]]:
        """(bucket start, {reason: n}) in time order."""
        return [(iso(start), dict(self.by_bucket[start])) for start in sorted(self.by_bucket)]


def export_line(letter: DeadLetter) -> bytes:
    """One JSONL line: ``{"dlq": {record and headers}, "value": text}`` — the value as
    text when it is UTF-8 (edit it, then ``dlq resend``), else ``value_base64``."""
    meta: dict[str, Any] = {
        "partition": letter.partition,
        "offset": letter.offset,
        "timestamp": iso(letter.timestamp_ms),
        **letter.headers,
    }
    line: dict[str, Any] = {EXPORT_KEY: meta}
    if letter.value is None:
        line["value"] = None
    else:
        try:
            line["value"] = letter.value.decode("utf-8")
        except UnicodeDecodeError:
            line["value_base64"] = base64.b64encode(letter.value).decode()
    return orjson.dumps(line)


def message_of(line: bytes) -> bytes | None:
    """The message to re-send for one line of a corrected file: the ``value`` of an
    exported line, or the line itself (a plain event, as ``produce`` sends)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if not (isinstance(obj, dict) and isinstance(obj.get(EXPORT_KEY), dict)):
        return line
    if "value_base64" in obj:
        return base64.b64decode(obj["value_base64"])
    value = obj.get("value")
    if value is None:
        return None
    return value.encode() if isinstance(value, str) else orjson.dumps(value)
