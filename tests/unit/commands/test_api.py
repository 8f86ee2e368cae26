"""The JSON API's routes, parameters and errors, through aiohttp's test client.

Redis is replaced by a stand-in of the five calls the readers make (SCAN with a glob,
MGET, SMEMBERS, ZREVRANGE, PING), filled through the real key and snapshot-encoding
functions; the same API against a real Redis fed by a real worker is
tests/integration/test_readmodel.py::test_api_equals_the_oracle. Redis being
unreachable is a real client pointed at a closed port.
"""

from __future__ import annotations

import fnmatch
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents.readmodel import Snapshot, encode_snapshot, snapshot_key, top_index_key, top_key
from commands.api import MAX_LIMIT, make_app

APP = "api-test"
DAY = "2026-03-01"
WINDOWS = {"1d": 86_400_000, "7d": 604_800_000, "30d": 2_592_000_000}


class FakeRedis:
    """Hashes, sets and sorted sets in dicts; just what agents.readmodel reads."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[bytes, bytes]] = {}
        self.sets: dict[str, set[bytes]] = {}
        self.zsets: dict[str, dict[bytes, float]] = {}

    async def scan_iter(self, match: str, count: int) -> AsyncIterator[bytes]:
        for key in sorted(self.hashes):
            if fnmatch.fnmatchcase(key, match):
                yield key.encode()

    async def hgetall(self, key: bytes) -> dict[bytes, bytes]:
        return self.hashes.get(key.decode(), {})

    async def smembers(self, key: str) -> set[bytes]:
        return self.sets.get(key, set())

    async def zrevrange(
        self, key: str, start: int, stop: int, withscores: bool
    ) -> list[tuple[bytes, float]]:
        ranked = sorted(self.zsets.get(key, {}).items(), key=lambda us: (-us[1], us[0]))
        return ranked[start : stop + 1]

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        pass


def c(day: int, week: int, month: int) -> dict[str, int]:
    return {"1d": day, "7d": week, "30d": month}


def fed() -> FakeRedis:
    redis = FakeRedis()
    snaps = [
        Snapshot(
            0, 2, 1_000, 1_000, WINDOWS,
            {("tw", "acme"): c(3, 5, 10), ("tw", "*"): c(3, 5, 10)},
            {("tw", "acme"): 4, ("tw", "*"): 4},
        ),
        Snapshot(
            1, 2, 1_000, 1_000, WINDOWS,
            {("tw", "acme"): c(1, 1, 2), ("tw", "*"): c(2, 2, 4), ("tw", "beta"): c(1, 1, 2),
             ("ig", "acme"): c(7, 7, 7), ("ig", "*"): c(7, 7, 7)},
            {},
        ),
    ]  # fmt: skip
    for snap in snaps:
        redis.hashes[snapshot_key(APP, snap.partition)] = encode_snapshot(snap)
    redis.hashes[snapshot_key("other-app", 0)] = encode_snapshot(snaps[1])  # not ours
    redis.zsets[top_key(APP, DAY, "tw", "acme")] = {b"u3": 5.0, b"u1": 9.0, b"u2": 5.0, b"u4": 1.0}
    redis.zsets[top_key(APP, DAY, "ig", "acme")] = {b"u9": 2.0}
    redis.sets[top_index_key(APP, DAY)] = {b'["tw","acme"]', b'["ig","acme"]'}
    return redis


async def client_for(redis: Any = None, url: str = "redis://127.0.0.1:6379/0") -> TestClient:
    client = TestClient(TestServer(make_app(url, APP, client=redis)))
    await client.start_server()
    return client


async def get(client: TestClient, path: str) -> tuple[int, Any]:
    response = await client.get(path)
    assert response.content_type == "application/json"
    return response.status, orjson.loads(await response.read())


async def test_communities_sum_the_partitions() -> None:
    client = await client_for(fed())
    try:
        status, doc = await get(client, "/api/communities")
        assert status == 200
        assert doc["partitions"] == {
            "expected": 2,
            "present": [0, 1],
            "missing": [],
            "complete": True,
        }
        rows = {(r["platform"], r["community"]): r for r in doc["communities"]}
        assert list(rows) == [
            ("ig", "*"),
            ("ig", "acme"),
            ("tw", "*"),
            ("tw", "acme"),
            ("tw", "beta"),
        ]
        acme = rows[("tw", "acme")]
        assert acme["active"] == {"1d": 4, "7d": 6, "30d": 12}
        assert acme["followers"] == 4
        assert acme["active_per_follower"] == {"1d": 1.0, "7d": 1.5, "30d": 3.0}
        assert acme["stickiness"] == {"dau_mau": 0.333333, "dau_wau": 0.666667}
        assert rows[("tw", "*")]["active"] == {"1d": 5, "7d": 7, "30d": 14}
        assert rows[("tw", "beta")]["followers"] == 0
        assert rows[("tw", "beta")]["active_per_follower"] == {"1d": None, "7d": None, "30d": None}

        status, doc = await get(client, "/api/communities?platform=ig")
        assert [(r["platform"], r["community"]) for r in doc["communities"]] == [
            ("ig", "*"),
            ("ig", "acme"),
        ]
        status, doc = await get(client, "/api/communities/acme?platform=tw")
        assert status == 200
        assert [r["active"]["30d"] for r in doc["communities"]] == [12]
    finally:
        await client.close()


async def test_top_users_order_limit_and_platforms() -> None:
    client = await client_for(fed())
    try:
        status, doc = await get(client, f"/api/communities/acme/top?day={DAY}&limit=3")
        assert status == 200
        by_platform = {e["platform"]: e["users"] for e in doc["platforms"]}
        assert by_platform == {
            "ig": [{"user_id": "u9", "score": 2}],
            "tw": [
                {"user_id": "u1", "score": 9},
                {"user_id": "u2", "score": 5},  # ties: by user id
                {"user_id": "u3", "score": 5},
            ],
        }
        status, doc = await get(client, f"/api/communities/acme/top?day={DAY}&platform=tw&limit=1")
        assert [e["users"] for e in doc["platforms"]] == [[{"user_id": "u1", "score": 9}]]
        # a known community with no top users that day: 200 and empty
        status, doc = await get(client, f"/api/communities/beta/top?day={DAY}")
        assert (status, doc["platforms"]) == (200, [])
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/api/communities/nobody", 404, "unknown community"),
        (f"/api/communities/nobody/top?day={DAY}", 404, "unknown community"),
        ("/api/communities/acme/top?limit=0", 400, f"limit must be between 1 and {MAX_LIMIT}"),
        (f"/api/communities/acme/top?limit={MAX_LIMIT + 1}", 400, "limit must be between"),
        ("/api/communities/acme/top?limit=ten", 400, "limit must be an integer"),
        (
            "/api/communities/acme/top?day=01-03-2026",
            400,
            "day must be YYYY-MM-DD, not '01-03-2026'",
        ),
        ("/api/nothing-here", 404, "Not Found"),
    ],
)
async def test_errors_are_json(path: str, status: int, error: str) -> None:
    client = await client_for(fed())
    try:
        got_status, doc = await get(client, path)
        assert got_status == status
        assert doc["error"].startswith(error)
    finally:
        await client.close()


async def test_health_and_redis_down(caplog: pytest.LogCaptureFixture) -> None:
    client = await client_for(fed())
    try:
        status, body = await get(client, "/api/health")
        assert (status, body["redis"], body["data"]) == (200, "ok", "ok")
        assert body["partitions"]["present"] == [0, 1]
    finally:
        await client.close()
    down = await client_for(url="redis://:s3cret@127.0.0.1:1/0")  # nothing listens on port 1
    try:
        for path in ("/api/health", "/api/communities", f"/api/communities/acme/top?day={DAY}"):
            assert await get(down, path) == (503, {"error": "redis unavailable"}), path
    finally:
        await down.close()
    reasons = [r.getMessage() for r in caplog.records if r.name == "commands.api"]
    assert len(reasons) == 3
    assert all(r.startswith("api: Redis unavailable (") for r in reasons)
    assert not any("s3cret" in r for r in reasons)


async def test_bearer_token() -> None:
    client = TestClient(TestServer(make_app("redis://unused", APP, client=fed(), token="t0k")))
    await client.start_server()
    try:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "t0k"}):
            response = await client.get("/api/health", headers=headers)
            assert response.status == 401, headers
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert orjson.loads(await response.read()) == {"error": "unauthorized"}
        response = await client.get("/api/health", headers={"Authorization": "Bearer t0k"})
        assert response.status == 200
        assert orjson.loads(await response.read())["redis"] == "ok"
    finally:
        await client.close()


async def test_no_snapshot_is_no_data_not_unknown() -> None:
    """Workers down and their snapshots expired: 503 "no data" everywhere, never a
    404 "unknown community" or a healthy /api/health."""
    redis = FakeRedis()
    redis.hashes[snapshot_key("other-app", 0)] = fed().hashes[snapshot_key(APP, 0)]
    client = await client_for(redis)
    try:
        for path in (
            "/api/communities",
            "/api/communities/acme",
            f"/api/communities/acme/top?day={DAY}",
        ):
            status, body = await get(client, path)
            assert (status, body["error"]) == (503, "no data"), path
            assert f"app id {APP!r}" in body["detail"]
        assert await get(client, "/api/health") == (
            503,
            {"redis": "ok", "data": "none", "error": "no data"},
        )
    finally:
        await client.close()
