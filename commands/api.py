"""``engagement-monitor api``: a small JSON HTTP API over the Redis read model.

A separate process rather than routes on the worker's web server: readers read
Redis, never the workers (docs/readmodel.md), so the API keeps answering while workers
restart or rebalance, scales apart from them, and adds nothing to a worker's
event loop. It serves the same documents as ``status --json`` and ``top --json``:

    GET /api/communities[?platform=P]                    every community
    GET /api/communities/{id}[?platform=P]               one community (404 if unknown)
    GET /api/communities/{id}/top[?platform=P&day=YYYY-MM-DD&limit=N]
    GET /api/health                                      Redis reachable?

User ids appear only in ``/top``. Errors are JSON ``{"error": ...}``: 400 bad
parameter, 404 unknown community, 503 Redis unreachable or ``no data`` (no
partition snapshot of the app id in Redis: no worker running, or none reaches
Redis — an answer of "unknown community" would be wrong then).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from agents import kafka_security
from agents.readmodel import MAX_TOP_LIMIT, check_day, connect, read_status, read_top, today
from streams import settings as settings_mod
from streams.security import bearer_ok, redact_url

CLIENT: web.AppKey[Any] = web.AppKey("redis", object)
APP_ID: web.AppKey[str] = web.AppKey("app_id", str)
MAX_LIMIT = MAX_TOP_LIMIT

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON: bad input 400, Redis down 503, unknown path 404."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        return _json({"error": exc.reason}, exc.status)
    except ValueError as exc:
        return _json({"error": str(exc)}, 400)
    except Exception as exc:  # noqa: BLE001 - redis errors and timeouts
        # the reason goes to the log, not to the client: an error text can name hosts,
        # users and internals that an API caller has no business seeing
        log.warning("api: Redis unavailable (%s: %s)", type(exc).__name__, redact_url(str(exc)))
        return _json({"error": "redis unavailable"}, 503)


def no_data(app_id: str) -> web.Response:
    detail = f"no snapshot in Redis for app id {app_id!r}: no worker running, or none reaches Redis"
    return _json({"error": "no data", "detail": detail}, 503)


def _has_data(doc: dict[str, Any]) -> bool:
    return bool(doc["partitions"]["present"])


async def communities(request: web.Request) -> web.Response:
    platform = request.query.get("platform")
    doc = await read_status(request.app[CLIENT], request.app[APP_ID], (), platform)
    return _json(doc) if _has_data(doc) else no_data(request.app[APP_ID])


async def community(request: web.Request) -> web.Response:
    name = request.match_info["id"]
    platform = request.query.get("platform")
    doc = await read_status(request.app[CLIENT], request.app[APP_ID], [name], platform)
    if not _has_data(doc):
        return no_data(request.app[APP_ID])
    if not doc["communities"]:
        return _json({"error": "unknown community", "community": name, "platform": platform}, 404)
    return _json(doc)


async def top(request: web.Request) -> web.Response:
    name = request.match_info["id"]
    query = request.query
    platform = query.get("platform")
    day = check_day(query["day"]) if "day" in query else today()
    try:
        limit = int(query.get("limit", "10"))
    except ValueError:
        raise ValueError("limit must be an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    client, app_id = request.app[CLIENT], request.app[APP_ID]
    doc = await read_top(client, app_id, name, day, limit, platform)
    if not any(entry["users"] for entry in doc["platforms"]):
        known = await read_status(client, app_id, [name], platform)
        if not _has_data(known):
            return no_data(app_id)
        if not known["communities"]:
            return _json(
                {"error": "unknown community", "community": name, "platform": platform}, 404
            )
    return _json(doc)


async def health(request: web.Request) -> web.Response:
    """200 only when Redis answers and holds snapshots of the app id."""
    await request.app[CLIENT].ping()
    doc = await read_status(request.app[CLIENT], request.app[APP_ID])
    if not _has_data(doc):
        return _json({"redis": "ok", "data": "none", "error": "no data"}, 503)
    return _json({"redis": "ok", "data": "ok", "partitions": doc["partitions"]})


def bearer(token: str) -> Any:
    """Middleware: with a token set (EM_HTTP_TOKEN), 401 unless ``Authorization: Bearer``
    carries it."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not bearer_ok(request.headers.get("Authorization"), token):
            response = _json({"error": "unauthorized"}, 401)
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return await handler(request)

    return check


def make_app(redis_url: str, app_id: str, client: Any = None, token: str = "") -> web.Application:
    app = web.Application(middlewares=[bearer(token), errors])
    app[APP_ID] = app_id

    async def redis_client(app: web.Application) -> Any:
        app[CLIENT] = client if client is not None else connect(redis_url)
        yield
        await app[CLIENT].aclose()

    app.cleanup_ctx.append(redis_client)
    app.router.add_get("/api/communities", communities)
    app.router.add_get("/api/communities/{id}", community)
    app.router.add_get("/api/communities/{id}/top", top)
    app.router.add_get("/api/health", health)
    return app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=6068, help="port (default: %(default)s)")
    settings_mod.add_arguments(parser, names=("redis_url", "app_id"))


def run(args: argparse.Namespace) -> int:
    print(
        f"engagement-monitor api on http://{args.host}:{args.port}/api/communities "
        f"(app id {args.app_id!r})",
        flush=True,
    )
    token = kafka_security.current().http_token
    app = make_app(args.redis_url, args.app_id, token=token)
    web.run_app(app, host=args.host, port=args.port, print=None)
    return 0
