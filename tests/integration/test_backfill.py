"""backfill on the real stack: promtool turns the output into blocks, and the values
at sampled steps equal the oracle over the events with ts <= step time."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from bench.workers import REPO
from streams.durations import parse_windows
from streams.events import DEFAULT_ACTIVE_TYPES
from streams.metric_names import LIFECYCLE
from tests.integration.test_rebuild import make_events, send
from tests.oracle import expected_active, expected_followers, expected_lifecycle

pytestmark = pytest.mark.integration

WINDOWS = parse_windows("5m,1h,1d,7d,30d")
HOUR = 3_600_000


def parse_output(text: str) -> dict[int, tuple[dict, dict, dict]]:
    """{step ms: (active {(platform, community): {window: n}}, followers {...},
    lifecycle {(platform, community): {window: (active followers, new, returning, dormant)}})}."""
    steps: dict[int, tuple[dict, dict, dict]] = {}
    fields = list(LIFECYCLE.values())
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert s.timestamp is not None
            t = round(float(s.timestamp) * 1000)
            active, followers, lifecycle = steps.setdefault(t, ({}, {}, {}))
            key = (s.labels["platform"], s.labels["community"])
            if family.name == "engagement_active_users":
                active.setdefault(key, {})[s.labels["window"]] = int(s.value)
            elif family.name in fields:
                row = lifecycle.setdefault(key, {}).setdefault(s.labels["window"], [0] * 4)
                row[fields.index(family.name)] = int(s.value)
            else:
                followers[key] = int(s.value)
    for _active, _followers, lifecycle in steps.values():
        for counts in lifecycle.values():
            for window, row in counts.items():
                counts[window] = tuple(row)
    return steps


async def test_backfill_blocks_and_values(stack: Any, tmp_path: Path) -> None:
    topic = stack.unique_name("interactions")
    end_ms = (int(time.time() * 1000) - 4 * HOUR) // 60_000 * 60_000
    events = make_events(9, 3000, end_ms, 40 * 24 * HOUR)
    await send(stack.kafka_bootstrap, topic, events)
    start_ms = end_ms - 24 * HOUR
    output = tmp_path / "backfill.om"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "commands.cli",
            "backfill",
            "--from",
            str(start_ms),
            "--to",
            str(end_ms),
            "--step",
            "30m",
            "--input-topic",
            topic,
            "-o",
            str(output),
        ],
        env=stack.worker_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    blocks = subprocess.run(
        [
            "promtool",
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            str(output),
            str(tmp_path / "blocks"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert blocks.returncode == 0, blocks.stdout + blocks.stderr
    assert list((tmp_path / "blocks").glob("*/meta.json"))

    got = parse_output(output.read_text())
    assert sorted(got) == list(range(start_ms, end_ms + 1, 30 * 60_000))
    for t in (start_ms, start_ms + 13 * 30 * 60_000, end_ms):
        upto = [e for e in events if e["ts_ms"] <= t]
        assert got[t][0] == expected_active(upto, t, WINDOWS, DEFAULT_ACTIVE_TYPES)
        assert got[t][1] == expected_followers(upto)
        assert got[t][2] == expected_lifecycle(upto, t, WINDOWS, DEFAULT_ACTIVE_TYPES)
