"""produce FILE and simulate on a real broker: exactly the file's lines arrive."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from commands.produce import Producer
from commands.produce import add_arguments as produce_arguments
from tests.integration.test_replay import read_topic

pytestmark = pytest.mark.integration

GOOD = (
    '{{"event_id":"e-{i}","ts":"2026-01-01T00:00:{s:02d}.000Z","platform":"twitter",'
    '"community":"c-{c}","user_id":"u-{u}","type":"like"}}'
)


def test_produce_sends_exactly_the_files_lines(stack: Any, tmp_path: Path) -> None:
    lines = [GOOD.format(i=i, s=i % 60, c=i % 5, u=i % 37) for i in range(5000)]
    lines[100] = "not json at all"
    lines[200] = '{"event_id":"x"}'
    lines[300] = lines[300] + "   "  # trailing spaces are part of the line
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n\n")  # a blank line at the end is not an event
    topic = stack.unique_name("produce")

    parser = argparse.ArgumentParser()
    produce_arguments(parser)
    args = parser.parse_args([str(path), "--validate", "--topic", topic, "--quiet"])
    producer = Producer(args, stack.kafka_bootstrap, topic)
    asyncio.run(producer.run())

    assert (producer.sent, producer.failed, producer.lines) == (5000, 0, 5000)
    assert producer.bad == Counter({"not_json": 1, "missing_field": 1})
    records = asyncio.run(read_topic(stack.kafka_bootstrap, topic))
    assert Counter(r.value for r in records) == Counter(line.encode() for line in lines)
    by_value = {r.value: r.timestamp for r in records}
    assert by_value[lines[0].encode()] == 1_767_225_600_000  # record time = event time


def test_simulate_command_sends_its_count(stack: Any, tmp_path: Path) -> None:
    topic = stack.unique_name("simulate")
    out = tmp_path / "sim.jsonl"
    common = [
        "--start",
        "2026-01-01T00:00:00Z",
        "--rate",
        "1000",
        "--count",
        "3000",
        "--no-pace",
        "--no-preload-follows",
        "--invalid-share",
        "0.01",
        "--seed",
        "5",
    ]
    cli = [sys.executable, "-m", "commands.cli", "simulate", *common, "--quiet"]
    subprocess.run([*cli, "--output", str(out)], check=True, timeout=60)
    subprocess.run(
        [*cli, "--kafka-bootstrap-servers", stack.kafka_bootstrap, "--input-topic", topic],
        check=True,
        timeout=60,
    )
    records = asyncio.run(read_topic(stack.kafka_bootstrap, topic))
    expected = out.read_bytes().splitlines()
    assert len(expected) == 3000
    assert Counter(r.value for r in records) == Counter(expected)  # same seed, same events
