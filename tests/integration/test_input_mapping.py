"""The worker on a topic in another JSON shape (EM_INPUT_MAPPING): gauges equal the
oracle of the same events, refusals reach the DLQ with the contract's reasons."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from bench.workers import Worker, gauges, produce, read_all, wait_caught_up
from streams.durations import parse_windows
from streams.events import DEFAULT_ACTIVE_TYPES
from tests.eventgen import make_traffic
from tests.oracle import event_clock, expected_active, expected_followers, fields

pytestmark = pytest.mark.integration

WINDOWS = parse_windows("5m,1h,1d,7d,30d")

MAPPING = """
[fields]
event_id = "uuid"
ts = "created_at"
user_id = "actor.id"
community = "page.name"
platform = "page.network"
type = "action"

[types]
reaction = "like"
reshare = "share"

[timestamp]
format = "%Y-%m-%d %H:%M:%S.%f"
"""
SOURCE_TYPES = {"like": "reaction", "share": "reshare"}  # others are spelled as in the contract


def reshaped(event: dict, n: int) -> dict:
    """The same event as the other system writes it."""
    platform, community, user, ts_ms, kind = fields(event)
    when = datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return {
        "uuid": f"x-{n}",
        "created_at": when,
        "actor": {"id": user, "display": "someone"},
        "page": {"name": community, "network": platform},
        "action": SOURCE_TYPES.get(kind, kind),
    }


async def test_worker_maps_another_shape_onto_the_contract(stack, tmp_path: Path) -> None:
    app_id, topic = stack.unique_name("mapped"), stack.unique_name("foreign")
    traffic = make_traffic(seed=51, count=3000, now_ms=int(time.time() * 1000) - 60_000)
    good = [reshaped(event, n) for n, event in enumerate(traffic.valid)]
    sample = good[0]
    bad = [
        (orjson.dumps({k: v for k, v in sample.items() if k != "actor"}), "missing_field"),
        (orjson.dumps({**sample, "actor": {"name": "no id"}}), "missing_field"),
        (orjson.dumps({**sample, "created_at": "27/11/2026"}), "bad_timestamp"),
        (orjson.dumps({**sample, "action": "poke"}), "bad_type"),
        (orjson.dumps({**sample, "page": {"name": "*", "network": "x"}}), "bad_field"),
        (b"{not json", "not_json"),
        (orjson.dumps(traffic.valid[0]), "missing_field"),  # the contract's own shape
    ]
    messages = [orjson.dumps(m) for m in good]
    for i, (raw, _reason) in enumerate(bad):
        messages.insert(i * 300, raw)
    await produce(stack.kafka_bootstrap, topic, messages)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    worker = Worker(
        stack.kafka_bootstrap,
        app_id,
        topic,
        f"{topic}.dlq",
        tmp_path / "data",
        EM_INPUT_MAPPING=str(mapping),
    ).start()
    try:
        worker.wait_metrics()
        await wait_caught_up(stack.kafka_bootstrap, app_id, topic, worker)
        log = worker.log_tail(400)  # the start-up block: where its metrics are, its settings
        assert f"app {app_id}, metrics http://127.0.0.1:{worker.port}/metrics" in log
        assert f"  EM_INPUT_MAPPING={mapping}" in log and f"  EM_INPUT_TOPIC={topic}" in log
        now_ms = event_clock(traffic.valid)
        assert now_ms is not None
        want_active = expected_active(traffic.valid, now_ms, WINDOWS, DEFAULT_ACTIVE_TYPES)
        samples = worker.scrape()
        got_active, got_followers = gauges(samples)
        assert {k: v for k, v in got_active.items() if any(v.values())} == {
            k: v for k, v in want_active.items() if any(v.values())
        }
        assert got_followers == expected_followers(traffic.valid)
        assert len(want_active) > 20
        assert sum(samples["engagement_events_total"].values()) == len(good)

        dead = await read_all(stack.kafka_bootstrap, f"{topic}.dlq")
        assert sorted((m.value, dict(m.headers)["reason"].decode()) for m in dead) == sorted(bad)
        invalid = {
            dict(k)["reason"]: int(v)
            for k, v in samples["engagement_invalid_events_total"].items()
            if v
        }
        assert invalid == dict(Counter(reason for _, reason in bad))
    finally:
        worker.stop()


def test_worker_refuses_to_start_with_a_wrong_mapping(stack, tmp_path: Path) -> None:
    import subprocess
    import sys

    from bench.workers import REPO

    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING.replace('type = "action"', ""))
    done = subprocess.run(
        [sys.executable, "-m", "commands.cli", "worker"],
        env=stack.worker_env(EM_INPUT_MAPPING=str(mapping), EM_APP_ID=stack.unique_name("bad")),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"EM_INPUT_MAPPING): {mapping}: no path or constant for type" in done.stderr
