"""commands.alerts_webhook: the Alertmanager webhook receiver, served on a loopback port."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import aiohttp

from commands import alerts_webhook
from commands.cli import build_parser


def _payload(status: str = "firing") -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="EngagementDropSudden", community="acme"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "page",
        "groupLabels": {"alertname": "EngagementDropSudden", "community": "acme"},
        "commonLabels": {"alertname": "EngagementDropSudden", "severity": "page"},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [
            {
                "status": status,
                "labels": {
                    "alertname": "EngagementDropSudden",
                    "platform": "twitter",
                    "community": "acme",
                    "severity": "page",
                    "window": "5m",
                },
                "annotations": {"summary": "acme on twitter: 5m active users fell to 25%"},
                "startsAt": "2026-11-25T17:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://127.0.0.1:9090/graph",
                "fingerprint": "0123456789abcdef",
            },
            {
                "status": status,
                "labels": {"alertname": "Watchdog", "severity": "none"},
                "annotations": {},
            },
        ],
    }


Server = tuple[str, asyncio.Event, "asyncio.Task[None]"]


async def _start(recorder: alerts_webhook.Recorder) -> Server:
    stop = asyncio.Event()
    ports: asyncio.Queue[int] = asyncio.Queue()
    task = asyncio.create_task(
        alerts_webhook.serve("127.0.0.1", 0, recorder, ports.put_nowait, stop)
    )
    port = await asyncio.wait_for(ports.get(), 10)
    return f"http://127.0.0.1:{port}/alerts", stop, task


async def test_post_prints_records_and_lists(tmp_path: Path) -> None:
    out = io.StringIO()
    record = tmp_path / "sub" / "alerts.jsonl"
    recorder = alerts_webhook.Recorder(record, out)
    url, stop, task = await _start(recorder)
    try:
        async with aiohttp.ClientSession() as http:
            for status in ("firing", "resolved"):
                async with http.post(url, json=_payload(status)) as resp:
                    assert resp.status == 200
                    assert (await resp.json()) == {"status": "ok", "alerts": 2}
            async with http.get(url) as resp:
                assert resp.status == 200
                received = await resp.json()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert received == [_payload("firing"), _payload("resolved")]
    lines = record.read_text().splitlines()
    assert [json.loads(line) for line in lines] == received
    printed = out.getvalue().splitlines()
    assert printed[0] == (
        "[FIRING] EngagementDropSudden twitter/acme severity=page "
        "receiver=page: acme on twitter: 5m active users fell to 25%"
    )
    assert printed[1] == "[FIRING] Watchdog - severity=none receiver=page:"
    assert printed[2].startswith("[RESOLVED] EngagementDropSudden twitter/acme")
    assert len(printed) == 4


async def test_malformed_bodies_get_400_with_a_json_error() -> None:
    recorder = alerts_webhook.Recorder(None, io.StringIO())
    url, stop, task = await _start(recorder)
    bad: list[bytes] = [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"version": "4"}',
        b'{"version": "4", "alerts": [1]}',
        b'{"version": "4", "alerts": [{"labels": []}]}',
        b'{"version": "3", "alerts": []}',
        # regressions: any shape of bad JSON is a 400, never a 500
        b"[" * 5000 + b"]" * 5000,
        b'{"alerts": [], "x": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        b'{"version": "4", "alerts": [{"labels": {"community": '
        + b"[" * 900
        + b"]" * 900
        + b"}}]}",
        b'{"version": "4", "alerts": [{"labels": {"community": {"a": 1}}}]}',
        b'{"alerts": [], "n": 1' + b"0" * 5000 + b"}",
        b"NaN",
        b"",
    ]
    try:
        async with aiohttp.ClientSession() as http:
            for body in bad:
                async with http.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as resp:
                    assert resp.status == 400, body
                    error = (await resp.json())["error"]
                    assert isinstance(error, str) and error, body
            async with http.get(url) as resp:
                assert await resp.json() == []
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert list(recorder.received) == []


def test_summary_lines_tolerate_missing_fields() -> None:
    assert alerts_webhook.summary_lines({"alerts": [{}]}) == ["[?] ? - severity=- receiver=-:"]


def test_cli_wiring() -> None:
    args = build_parser().parse_args(["alerts-webhook", "--port", "0", "--record", "x.jsonl"])
    assert args.host == "127.0.0.1" and args.port == 0 and args.record == Path("x.jsonl")
    assert args._run is alerts_webhook.run


async def test_history_is_bounded_and_bodies_are_limited() -> None:
    """Regression: every payload was kept in memory; a sender could grow it forever."""
    recorder = alerts_webhook.Recorder(None, io.StringIO(), keep=3)
    url, stop, task = await _start(recorder)
    try:
        async with aiohttp.ClientSession() as http:
            for i in range(5):
                payload = {**_payload(), "groupKey": str(i)}
                async with http.post(url, json=payload) as resp:
                    assert resp.status == 200
            async with http.get(url) as resp:
                assert [p["groupKey"] for p in await resp.json()] == ["2", "3", "4"]
            big = b'{"alerts": [], "x": "' + b"y" * (alerts_webhook.MAX_BODY_BYTES + 1) + b'"}'
            async with http.post(url, data=big) as resp:
                assert resp.status == 413
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert len(recorder.received) == 3
