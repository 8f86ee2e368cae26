"""produce without Kafka: which lines go out, with which record time, and the report.

The same command against a real broker: tests/integration/test_produce.py.
"""

from __future__ import annotations

import argparse
import io
from collections import Counter
from pathlib import Path

import pytest

from commands import produce
from commands.produce import Producer, event_time_ms

GOOD = (
    '{{"event_id":"e-{i}","ts":"2026-01-01T00:00:{s:02d}.000Z","platform":"twitter",'
    '"community":"c","user_id":"u-{i}","type":"like"}}'
)
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    produce.add_arguments(parser)
    return parser.parse_args(argv)


class Writer:
    """Records what BatchWriter.append receives; reports "full" every ``every`` lines."""

    def __init__(self, every: int = 0) -> None:
        self.every = every
        self.records: list[tuple[bytes, bytes | None, int | None]] = []
        self.drains = 0

    def append(self, value: bytes, key: bytes | None, ts: int | None) -> bool:
        self.records.append((value, key, ts))
        return bool(self.every) and len(self.records) % self.every == 0

    async def drain(self) -> None:
        self.drains += 1


class NoProgress:
    def update(self, *args: object, **kwargs: object) -> None:
        pass


async def send(argv: list[str], text: bytes, writer: Writer) -> Producer:
    producer = Producer(parse(["file.jsonl", *argv]), "127.0.0.1:9", "t")
    raw = io.BytesIO(text)
    await producer._send_lines(raw, raw, writer, NoProgress(), T0)
    return producer


def test_event_time_of_a_line() -> None:
    assert event_time_ms(GOOD.format(i=1, s=7).encode()) == T0 + 7_000
    assert event_time_ms(b'{"ts": 1767225600}') == T0  # epoch seconds
    for line in (b"not json", b'{"no_ts": 1}', b'{"ts": "yesterday"}', b"[1, 2]"):
        assert event_time_ms(line) is None, line


async def test_lines_go_out_byte_for_byte() -> None:
    lines = [GOOD.format(i=0, s=0), "not json", GOOD.format(i=2, s=2) + "   ", "", "  "]
    text = ("\r\n".join(lines) + "\n").encode()
    writer = Writer(every=2)
    producer = await send([], text, writer)
    assert writer.records == [
        (lines[0].encode(), None, T0),
        (b"not json", None, None),  # validation is the worker's job
        (lines[2].encode(), None, T0 + 2_000),  # trailing spaces are part of the line
    ]
    assert (producer.lines, producer.bytes, writer.drains) == (
        3,
        sum(len(r[0]) for r in writer.records),
        1,
    )


async def test_validate_counts_and_skip_invalid_holds_back() -> None:
    text = b"\n".join([GOOD.format(i=0, s=0).encode(), b"not json", b'{"event_id":"x"}', b"[]"])
    writer = Writer()
    producer = await send(["--validate"], text, writer)
    assert len(writer.records) == 4
    assert producer.bad == Counter({"not_json": 1, "missing_field": 1, "not_object": 1})
    assert producer.bad_lines[0].startswith("line 2: ")
    assert "invalid lines 3 (not_json 1, missing_field 1, not_object 1)" in producer.summary()

    writer = Writer()
    producer = await send(["--validate", "--skip-invalid"], text, writer)
    assert [r[0] for r in writer.records] == [GOOD.format(i=0, s=0).encode()]
    assert producer.skipped == 3
    assert producer.summary().endswith(", 3 not sent")


def test_summary_numbers() -> None:
    producer = Producer(parse(["f"]), "127.0.0.1:9", "events")
    producer.lines, producer.sent, producer.failed, producer.bytes, producer.seconds = (
        10,
        8,
        2,
        2_500_000,
        2.0,
    )
    assert producer.summary() == (
        "produce: sent 8 of 10 lines (2.50 MB) to events in 2.0s, 4 events/s; failed 2"
    )
    producer.stop()
    assert producer.summary().startswith("produce (interrupted): ")
    producer.sent, producer.unconfirmed = 5, 3  # a stop with the broker gone
    assert producer.summary().startswith("produce (interrupted): sent 5 of 10 lines")
    assert producer.summary().endswith(
        "; failed 2; NOT CONFIRMED 3 (the broker had not confirmed them 3s after the stop: "
        "they may or may not be in the topic)"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.jsonl"], "no such file: missing.jsonl"),
        (["EXISTS", "--skip-invalid"], "--skip-invalid needs --validate"),
    ],
)
def test_argument_errors(argv: list[str], message: str, tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text("")
    argv = [
        str(path) if a == "EXISTS" else str(tmp_path / a) if a.endswith(".jsonl") else a
        for a in argv
    ]
    with pytest.raises(ValueError, match=message.replace("missing.jsonl", ".*missing.jsonl")):
        produce.run(parse(argv))
