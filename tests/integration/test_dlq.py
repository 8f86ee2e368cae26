"""``engagement-monitor dlq`` on the real stack: a worker fills the DLQ, the command
counts it, shows it safely, exports it, and re-sends the corrected lines through the
worker's validation; the worker's gauges then count exactly the corrected events."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from bench.workers import REPO, Worker, gauges, produce, read_all, wait_caught_up
from streams.events import format_ts

pytestmark = pytest.mark.integration


def cli(stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "commands.cli", *args],
        env=stack.worker_env(**env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def event(n: int, ts_ms: int, **changes: object) -> bytes:
    base = {
        "event_id": f"d-{n}",
        "ts": format_ts(ts_ms),
        "platform": "twitter",
        "community": "acme",
        "user_id": f"u-{n}",
        "type": "like",
    }
    return orjson.dumps({**base, **changes})


async def test_dlq_stats_show_export_resend(stack, tmp_path: Path) -> None:
    app_id, topic = stack.unique_name("dlq"), stack.unique_name("interactions")
    dlq = f"{topic}.dlq"
    now = int(time.time() * 1000) - 60_000
    good = [event(n, now) for n in range(5)]
    poked = [event(10 + n, now, type="poke") for n in range(4)]  # fixable: bad_type
    hostile = b"\x1b[2J\x1b[31mgotcha\n{"  # clears a terminal if printed raw
    await produce(stack.kafka_bootstrap, topic, [*good, *poked, hostile, b"[1]"])
    worker = Worker(stack.kafka_bootstrap, app_id, topic, dlq, tmp_path / "data").start()
    try:
        worker.wait_metrics()
        await wait_caught_up(stack.kafka_bootstrap, app_id, topic, worker)
        env = {"EM_DLQ_TOPIC": dlq, "EM_INPUT_TOPIC": topic}

        stats = cli(stack, "dlq", "stats", **env)
        assert stats.returncode == 0, stats.stderr
        assert f"{dlq}: 6 dead letters" in stats.stdout
        counts = dict(line.split() for line in stats.stdout.splitlines()[1:4])
        assert counts == {"bad_type": "4", "not_json": "1", "not_object": "1"}

        shown = cli(stack, "dlq", "show", "--reason", "not_json", **env)
        assert shown.returncode == 0, shown.stderr
        assert "\x1b" not in shown.stdout
        assert "value: \\x1b[2J\\x1b[31mgotcha\\x0a{" in shown.stdout
        assert f"source_topic: {topic}" in shown.stdout and "reason: not_json" in shown.stdout

        exported = tmp_path / "bad_type.jsonl"
        done = cli(stack, "dlq", "export", "--reason", "bad_type", "-o", str(exported), **env)
        assert done.returncode == 0, done.stderr
        lines = exported.read_text().splitlines()
        assert len(lines) == 4
        fixed = [line.replace('\\"poke\\"', '\\"comment\\"') for line in lines[:3]]
        fixed.append(lines[3])  # one line left uncorrected: refused again, not sent
        exported.write_text("\n".join(fixed) + "\n")

        resent = cli(stack, "dlq", "resend", str(exported), **env)
        assert resent.returncode == 1  # one line still invalid
        assert "line 4: bad_type" in resent.stderr
        assert f"sent 3 to {topic}, refused 1" in resent.stderr

        await wait_caught_up(stack.kafka_bootstrap, app_id, topic, worker)
        records = await read_all(stack.kafka_bootstrap, topic)
        types = Counter(orjson.loads(r.value).get("type") for r in records if r.value[:1] == b"{")
        assert types == {"like": 5, "poke": 4, "comment": 3}
        active, _followers = gauges(worker.scrape())
        assert active[("twitter", "acme")]["5m"] == 8  # u-0..u-4 and the three corrected
        dead = await read_all(stack.kafka_bootstrap, dlq)
        assert len(dead) == 6  # nothing re-sent came back to the DLQ
    finally:
        worker.stop()
