"""``engagement-monitor alerts-webhook``: receive Alertmanager webhooks, print and record them.

Alertmanager posts its webhook payload (version 4) to ``POST /alerts``. Each
notification is printed as one line per alert and, with ``--record FILE``, appended to a
JSON Lines file (one payload per line). ``GET /alerts`` returns the payloads received
since start, oldest first, for tests and the demo. This is the local stand-in for
Slack/PagerDuty: see docs/alerting.md for wiring real receivers.

aiohttp is imported inside the functions that serve, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from aiohttp import web

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9099
PATH = "/alerts"
#: Alertmanager's payloads are a few KB; anything far larger is not one (413).
MAX_BODY_BYTES = 1024 * 1024
#: Payloads kept for ``GET /alerts`` (the oldest are dropped; the file keeps all).
DEFAULT_KEEP = 1000
#: Deepest nesting accepted: a webhook payload is 4 levels deep; a body nested
#: thousands deep would break the decoder, the recorder and the printer.
MAX_DEPTH = 16


class PayloadError(ValueError):
    """The body is not an Alertmanager webhook payload."""


def _depth(value: Any) -> int:
    """Nesting depth, iteratively (recursion is what a hostile body attacks)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                break
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_body(raw: bytes) -> dict[str, Any]:
    """The payload of a request body, or :class:`PayloadError` — for any body."""
    try:
        payload = json.loads(raw)
    except UnicodeDecodeError:
        raise PayloadError("body is not UTF-8 JSON") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise PayloadError(f"body is not JSON: {str(exc)[:200]}") from None
    return validate_payload(payload)


def validate_payload(payload: Any) -> dict[str, Any]:
    """Check the parts of a webhook payload we rely on; return it unchanged."""
    if not isinstance(payload, dict):
        raise PayloadError("payload must be a JSON object")
    if _depth(payload) > MAX_DEPTH:
        raise PayloadError(f"payload is nested deeper than {MAX_DEPTH} levels")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("payload.alerts must be a list")
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            raise PayloadError(f"payload.alerts[{i}] must be an object")
        for key in ("labels", "annotations"):
            values = alert.get(key, {})
            if not isinstance(values, dict):
                raise PayloadError(f"payload.alerts[{i}].{key} must be an object")
            if not all(isinstance(v, str) for v in values.values()):
                raise PayloadError(f"payload.alerts[{i}].{key} values must be strings")
    version = payload.get("version")
    if version is not None and str(version) != "4":
        raise PayloadError(f'unsupported payload version {version!r} (expected "4")')
    return payload


def summary_lines(payload: dict[str, Any]) -> list[str]:
    """One line per alert: status, alertname, platform/community, severity, summary."""
    lines = []
    for alert in payload.get("alerts", []):
        labels: dict[str, Any] = alert.get("labels") or {}
        annotations: dict[str, Any] = alert.get("annotations") or {}
        status = str(alert.get("status") or payload.get("status") or "?").upper()
        where = (
            "/".join(str(labels[k]) for k in ("platform", "community") if labels.get(k) is not None)
            or "-"
        )
        lines.append(
            f"[{status}] {labels.get('alertname', '?')} {where} "
            f"severity={labels.get('severity', '-')} "
            f"receiver={payload.get('receiver', '-')}: {annotations.get('summary', '')}".rstrip()
        )
    return lines


class Recorder:
    """Keeps the last ``keep`` payloads in memory (a sender cannot grow it without
    bound) and appends every one to an optional JSONL file."""

    def __init__(
        self, record: Path | None = None, out: TextIO | None = None, keep: int = DEFAULT_KEEP
    ) -> None:
        self.record = record
        self.out = out if out is not None else sys.stdout
        self.received: deque[dict[str, Any]] = deque(maxlen=keep)

    def add(self, payload: dict[str, Any]) -> None:
        self.received.append(payload)
        if self.record is not None:
            self.record.parent.mkdir(parents=True, exist_ok=True)
            with self.record.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(payload, separators=(",", ":"), sort_keys=True) + "\n")
        for line in summary_lines(payload):
            print(line, file=self.out, flush=True)


def make_app(recorder: Recorder) -> web.Application:
    """The aiohttp application: POST and GET on /alerts."""
    from aiohttp import web

    def error(status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    async def post_alerts(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            payload = parse_body(raw)
        except PayloadError as exc:
            return error(400, str(exc))
        recorder.add(payload)
        return web.json_response({"status": "ok", "alerts": len(payload["alerts"])})

    async def get_alerts(request: web.Request) -> web.Response:
        return web.json_response(list(recorder.received))

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post(PATH, post_alerts)
    app.router.add_get(PATH, get_alerts)
    return app


async def serve(
    host: str,
    port: int,
    recorder: Recorder,
    ready: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set (or forever). ``ready`` gets the bound port."""
    from aiohttp import web

    runner = web.AppRunner(make_app(recorder), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    addresses = runner.addresses
    bound = int(addresses[0][1]) if addresses else port
    if ready is not None:
        ready(bound)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to listen on (default {DEFAULT_PORT}; 0 = any free port)",
    )
    parser.add_argument(
        "--record",
        type=Path,
        metavar="FILE.jsonl",
        help="append every received payload to this JSON Lines file",
    )
    parser.add_argument(
        "--keep",
        type=int,
        default=DEFAULT_KEEP,
        help=f"payloads kept in memory for GET {PATH} (default {DEFAULT_KEEP})",
    )


def run(args: argparse.Namespace) -> int:
    recorder = Recorder(args.record, keep=args.keep)

    def ready(port: int) -> None:
        print(
            f"alerts-webhook listening on http://{args.host}:{port}{PATH}"
            + (f", recording to {args.record}" if args.record else ""),
            flush=True,
        )

    try:
        asyncio.run(serve(args.host, args.port, recorder, ready))
    except OSError as exc:
        print(f"alerts-webhook: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
