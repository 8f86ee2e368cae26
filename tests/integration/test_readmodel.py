"""The Redis read model on the real stack: what readers get equals the oracle.

One worker (event clock) is fed once per module; the snapshot sums, ``status
--json``, the JSON API and the top-users sets are each compared with
tests/unit/oracle.py (top users: with an independent count over the messages
actually sent, duplicates included — the worker counts events received). A second
test runs its own password-protected redis-server, kills it mid-stream and
restarts it: the worker keeps going and the snapshots are exact again after.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.readmodel import (
    DAY_MS,
    connect,
    read_snapshots,
    read_status,
    read_top,
    utc_day,
)
from bench.workers import REPO, Worker, free_port, produce, wait_caught_up
from streams.durations import parse_windows
from streams.events import ALL_COMMUNITIES, DEFAULT_ACTIVE_TYPES
from tests.eventgen import Traffic, make_traffic
from tests.integration.test_pipeline import assert_gauges_match
from tests.oracle import (
    event_clock,
    expected_active,
    expected_followers,
    expected_lifecycle,
    fields,
)

pytestmark = pytest.mark.integration

WINDOWS = parse_windows("5m,1h,1d,7d,30d")
TOP_ALL = 1000  # more than the users of make_traffic: the sets are untrimmed, so exact


# -- helpers ---------------------------------------------------------------------------


class RedisServer:
    """A throwaway redis-server on a fixed free port, stopped (and restarted) by PID."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        self.port = free_port()
        self.password = password
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        cmd = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
        ]
        if self.password:
            cmd += ["--requirepass", self.password]
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not _ping_sync(self.url):
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server on {self.port} did not start")
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _ping_sync(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001
        return False
    finally:
        client.close()


async def _ping(url: str) -> bool:
    client = connect(url, timeout=1)
    try:
        return bool(await client.ping())
    except Exception:  # noqa: BLE001
        return False
    finally:
        await client.aclose()


async def _status(url: str, app_id: str) -> dict[str, Any]:
    client = connect(url)
    try:
        return await read_status(client, app_id)
    finally:
        await client.aclose()


async def wait_fresh_snapshots(
    url: str, app_id: str, after_ms: int, partitions: int = 4, timeout: float = 30
) -> None:
    """Until every partition has a snapshot written after ``after_ms`` (wall time)."""
    deadline = time.monotonic() + timeout
    while True:
        client = connect(url)
        try:
            snaps = await read_snapshots(client, app_id)
        except Exception:  # noqa: BLE001 - Redis just restarted
            snaps = []
        finally:
            await client.aclose()
        fresh = {s.partition for s in snaps if s.written_ms > after_ms}
        if fresh == set(range(partitions)):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"fresh snapshots only for {sorted(fresh)} after {timeout}s")
        await asyncio.sleep(0.2)


Row = tuple[dict[str, int], int, dict[str, tuple[int, int, int, int]]]


def oracle_rows(traffic: Traffic) -> dict[tuple[str, str], Row]:
    """{(platform, community): (active per window, followers, (active followers, new,
    returning, dormant) per window)}, as the status rows say."""
    now = event_clock(traffic.valid)
    assert now is not None
    active = expected_active(traffic.valid, now, WINDOWS, DEFAULT_ACTIVE_TYPES)
    followers = expected_followers(traffic.valid)
    lifecycle = expected_lifecycle(traffic.valid, now, WINDOWS, DEFAULT_ACTIVE_TYPES)
    zeros = dict.fromkeys(WINDOWS, 0)
    none = dict.fromkeys(WINDOWS, (0, 0, 0, 0))
    return {
        k: (active.get(k, zeros), followers.get(k, 0), lifecycle.get(k, none))
        for k in set(active) | set(followers) | set(lifecycle)
    }


def doc_rows(doc: dict[str, Any]) -> dict[tuple[str, str], Row]:
    return {
        (r["platform"], r["community"]): (
            r["active"],
            r["followers"],
            {
                w: (a["active_followers"], a["new_users"], a["returning_users"], a["dormant_users"])
                for w, a in r["audience"].items()
            },
        )
        for r in doc["communities"]
    }


def oracle_top(traffic: Traffic) -> dict[tuple[str, str, str], dict[str, int]]:
    """{(day, platform, community): {user: active events}} over the messages sent,
    duplicates included, with "*" per platform. Written from the rule, not the code."""
    invalid = {raw for raw, _ in traffic.invalid}
    scores: dict[tuple[str, str, str], dict[str, int]] = {}
    for raw in traffic.messages:
        if raw in invalid:
            continue
        platform, community, user, ts_ms, kind = fields(orjson.loads(raw))
        if kind not in DEFAULT_ACTIVE_TYPES:
            continue
        day = utc_day(ts_ms // DAY_MS * DAY_MS)
        for comm in (community, ALL_COMMUNITIES):
            users = scores.setdefault((day, platform, comm), {})
            users[user] = users.get(user, 0) + 1
    return scores


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


# -- one worker, fed once ----------------------------------------------------------------


class Fed:
    def __init__(self, worker: Worker, traffic: Traffic, app_id: str, redis_url: str) -> None:
        self.worker, self.traffic, self.app_id, self.redis_url = worker, traffic, app_id, redis_url


@pytest.fixture(scope="module")
def fed(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    app_id, topic = stack.unique_name("rm"), stack.unique_name("interactions")
    traffic = make_traffic(seed=21, count=4000, now_ms=int(time.time() * 1000) - 60_000)
    asyncio.run(produce(stack.kafka_bootstrap, topic, traffic.messages))
    datadir = tmp_path_factory.mktemp("rm") / "data"
    worker = Worker(
        stack.kafka_bootstrap,
        app_id,
        topic,
        f"{topic}.dlq",
        datadir,
        REDIS_URL=stack.redis_url,
        EM_TOP_USERS=str(TOP_ALL),
    ).start()
    try:
        worker.wait_metrics()
        asyncio.run(wait_caught_up(stack.kafka_bootstrap, app_id, topic, worker))
        caught_up = int(time.time() * 1000)
        asyncio.run(wait_fresh_snapshots(stack.redis_url, app_id, caught_up))
        yield Fed(worker, traffic, app_id, stack.redis_url)
    finally:
        worker.stop()


async def test_snapshots_sum_to_the_oracle(fed: Fed) -> None:
    doc = await _status(fed.redis_url, fed.app_id)
    assert doc["partitions"]["complete"] and doc["partitions"]["present"] == [0, 1, 2, 3]
    assert doc["as_of_ms"] == event_clock(fed.traffic.valid)
    want = oracle_rows(fed.traffic)
    assert doc_rows(doc) == want
    assert len(want) > 20


def test_status_json_cli_equals_the_oracle(fed: Fed) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "commands.cli",
            "status",
            "--json",
            "--redis-url",
            fed.redis_url,
            "--app-id",
            fed.app_id,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema"] == "engagement-monitor/status/1"
    assert doc_rows(doc) == oracle_rows(fed.traffic)
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "commands.cli",
            "status",
            "brand-01",
            "--platform",
            "twitter",
            "--redis-url",
            fed.redis_url,
            "--app-id",
            fed.app_id,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert one.returncode == 0 and "brand-01" in one.stdout and "brand-02" not in one.stdout


def test_api_equals_the_oracle(fed: Fed, tmp_path: Path) -> None:
    port = free_port()
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "commands.cli",
            "api",
            "--port",
            str(port),
            "--redis-url",
            fed.redis_url,
            "--app-id",
            fed.app_id,
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if get_json(f"{base}/api/health")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "api did not start"
            time.sleep(0.2)
        want = oracle_rows(fed.traffic)
        status, doc = get_json(f"{base}/api/communities")
        assert status == 200 and doc_rows(doc) == want
        status, doc = get_json(f"{base}/api/communities/brand-01?platform=twitter")
        assert status == 200
        assert doc_rows(doc) == {("twitter", "brand-01"): want[("twitter", "brand-01")]}
        status, doc = get_json(f"{base}/api/communities/{ALL_COMMUNITIES}")
        assert status == 200 and doc_rows(doc) == {
            k: v for k, v in want.items() if k[1] == ALL_COMMUNITIES
        }
        status, doc = get_json(f"{base}/api/communities/no-such-brand")
        assert status == 404 and doc["error"] == "unknown community"
        assert get_json(f"{base}/api/communities/no-such-brand/top")[0] == 404
        assert get_json(f"{base}/api/communities/brand-01/top?day=yesterday")[0] == 400
        assert get_json(f"{base}/api/communities/brand-01/top?limit=0")[0] == 400

        top = oracle_top(fed.traffic)
        (day, platform, community), users = max(top.items(), key=lambda kv: len(kv[1]))
        status, doc = get_json(
            f"{base}/api/communities/{community}/top?platform={platform}&day={day}&limit=5"
        )
        assert status == 200
        ranked = sorted(users.items(), key=lambda us: (-us[1], us[0]))[:5]
        assert doc["platforms"] == [
            {"platform": platform, "users": [{"user_id": u, "score": s} for u, s in ranked]}
        ]
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)
        log.close()


async def test_top_users_equal_the_oracle(fed: Fed) -> None:
    want = oracle_top(fed.traffic)
    client = connect(fed.redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"em:{fed.app_id}:top:*", count=1000)]
        assert len(keys) == len(want)
        for (day, platform, community), users in want.items():
            doc = await read_top(client, fed.app_id, community, day, TOP_ALL, platform)
            got = {u["user_id"]: u["score"] for u in doc["platforms"][0]["users"]}
            assert got == users, (day, platform, community)
        # without --platform: every platform that has a set that day
        day = max(d for d, _, _ in want)
        doc = await read_top(client, fed.app_id, ALL_COMMUNITIES, day, 3)
        assert [e["platform"] for e in doc["platforms"]] == sorted(
            p for d, p, c in want if d == day and c == ALL_COMMUNITIES
        )
    finally:
        await client.aclose()


# -- Redis down in the middle of a stream ----------------------------------------------------


async def test_redis_outage_slows_nothing_and_snapshots_recover(stack: Any, tmp_path: Path) -> None:
    redis = RedisServer(tmp_path, password="s3cret-pw").start()
    app_id, topic = stack.unique_name("rmdown"), stack.unique_name("interactions")
    traffic = make_traffic(seed=23, count=4000, now_ms=int(time.time() * 1000) - 60_000)
    third = len(traffic.messages) // 3
    worker = Worker(
        stack.kafka_bootstrap, app_id, topic, f"{topic}.dlq", tmp_path / "data", REDIS_URL=redis.url
    )
    try:
        await produce(stack.kafka_bootstrap, topic, traffic.messages[:third])
        worker.start().wait_metrics()
        await wait_caught_up(stack.kafka_bootstrap, app_id, topic, worker)
        await wait_fresh_snapshots(redis.url, app_id, int(time.time() * 1000))
        assert worker.scrape()["engagement_redis_write_failures_total"][()] == 0

        redis.kill()
        await produce(stack.kafka_bootstrap, topic, traffic.messages[third:])
        await wait_caught_up(stack.kafka_bootstrap, app_id, topic, worker)
        assert_gauges_match(worker, traffic)  # the worker caught up with Redis down
        time.sleep(2.5)  # a few failed ticks
        failures = worker.scrape()["engagement_redis_write_failures_total"][()]
        assert failures >= 2

        redis.start()  # same port, empty
        restarted = int(time.time() * 1000)
        await wait_fresh_snapshots(redis.url, app_id, restarted)
        doc = await _status(redis.url, app_id)
        assert doc_rows(doc) == oracle_rows(traffic)
        assert_gauges_match(worker, traffic)
        log = worker.log_tail(400)
        assert log.count("Redis write failed") == 1, log
        assert log.count("Redis writes resumed") == 1, log
    finally:
        worker.stop()
        redis.kill()


async def test_password_url_reaches_a_protected_redis(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path, password="pw-123").start()
    try:
        assert await _ping(redis.url)
        wrong = f"redis://:nope@127.0.0.1:{redis.port}/0"
        assert not await _ping(wrong)
        assert not await _ping(f"redis://127.0.0.1:{redis.port}/0")
    finally:
        redis.kill()


async def test_writer_trims_sets_in_redis_like_the_reference(tmp_path: Path) -> None:
    """The Lua flush against a real Redis, with a small N: equal to the oracle."""
    from agents.redis_snapshots import ReadModelWriter
    from agents.top_users import TopUsersTally
    from streams.clock import Clock
    from streams.state import WorkerState
    from tests.oracle import top_users_after_flush

    redis = RedisServer(tmp_path).start()
    state = WorkerState(DEFAULT_ACTIVE_TYPES)
    tally = TopUsersTally(DEFAULT_ACTIVE_TYPES)
    writer = ReadModelWriter(
        redis_url=redis.url,
        app_id="trim",
        state=state,
        clock=Clock("event", state.watermark_ms),
        windows=WINDOWS,
        partitions=1,
        interval_s=1.0,
        tally=tally,
        top_n=3,
    )
    day0 = 20_500 * DAY_MS
    rounds = [{"a": 5, "b": 1, "c": 3, "d": 3}, {"b": 4, "e": 1, "c": 1}, {"f": 9, "a": 1}]
    want: dict[str, float] = {}
    try:
        for increments in rounds:
            tally(
                0,
                [
                    [day0 + 1, "x", "acme", user, "like"]
                    for user, n in increments.items()
                    for _ in range(n)
                ],
            )
            assert await writer.tick()
            want = top_users_after_flush(want, increments, 3)
        client = connect(redis.url)
        try:
            doc = await read_top(client, "trim", "acme", utc_day(day0), 10, "x")
            star = await read_top(client, "trim", ALL_COMMUNITIES, utc_day(day0), 10)
            ttl = await client.ttl(f"em:trim:top:{utc_day(day0)}:x:acme")
        finally:
            await client.aclose()
        assert {u["user_id"]: u["score"] for u in doc["platforms"][0]["users"]} == want
        assert star["platforms"][0]["users"] == doc["platforms"][0]["users"]
        assert 0 < ttl <= 8 * 86_400
        assert writer.failures == 0
    finally:
        await writer.close()
        redis.kill()


async def test_a_hung_redis_costs_one_bounded_timeout_per_tick(tmp_path: Path) -> None:
    """SIGSTOP (accepts connections, never answers): tick gives up after its timeout,
    the shutdown's last tick after its shorter one; a Redis that answers late (paused
    2 s, longer than the 1 s limit that made busy workers fail every other write)
    is not a failure."""
    from agents.redis_snapshots import SHUTDOWN_TIMEOUT_S, ReadModelWriter
    from agents.top_users import TopUsersTally
    from streams.clock import Clock
    from streams.state import WorkerState

    redis = RedisServer(tmp_path).start()
    state = WorkerState(DEFAULT_ACTIVE_TYPES)
    state.assign(0).apply("x", "acme", "u1", 1_000, "like")
    tally = TopUsersTally(DEFAULT_ACTIVE_TYPES)
    writer = ReadModelWriter(
        redis_url=redis.url,
        app_id="hung",
        state=state,
        clock=Clock("event", state.watermark_ms),
        windows=WINDOWS,
        partitions=1,
        interval_s=1.0,
        tally=tally,
        top_n=3,
    )
    assert redis.proc is not None
    try:
        assert await writer.tick()
        os.kill(redis.proc.pid, signal.SIGSTOP)
        tally(0, [[1_000, "x", "acme", "u1", "like"]])
        slow = asyncio.create_task(writer.tick())
        await asyncio.sleep(2.0)
        os.kill(redis.proc.pid, signal.SIGCONT)
        assert await slow and writer.failures == 0 and not tally.pending

        os.kill(redis.proc.pid, signal.SIGSTOP)
        tally(0, [[1_000, "x", "acme", "u1", "like"]])
        started = time.monotonic()
        assert not await writer.tick()
        assert time.monotonic() - started < writer.timeout + 1.5 and writer.failures == 1
        assert len(tally.pending) == 1  # kept for the next write
        started = time.monotonic()
        assert not await writer.tick(SHUTDOWN_TIMEOUT_S)
        assert time.monotonic() - started < SHUTDOWN_TIMEOUT_S + 1.5 and writer.failures == 2
        os.kill(redis.proc.pid, signal.SIGCONT)
        assert await writer.tick() and not tally.pending
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
        await writer.close()
        redis.kill()


def _writer(url: str, app_id: str, state: Any, partitions: int = 2) -> Any:
    from agents.redis_snapshots import ReadModelWriter
    from agents.top_users import TopUsersTally
    from streams.clock import Clock

    return ReadModelWriter(
        redis_url=url,
        app_id=app_id,
        state=state,
        clock=Clock("event", state.watermark_ms),
        windows=WINDOWS,
        partitions=partitions,
        interval_s=1.0,
        tally=TopUsersTally(DEFAULT_ACTIVE_TYPES),
        top_n=3,
    )


async def test_ticks_write_only_changed_rows_and_rewrite_what_redis_lost(
    tmp_path: Path,
) -> None:
    """After the first (whole) write a tick sends only the rows that changed; a hash
    that Redis lost (FLUSHALL) or another worker rewrote is written whole again, and
    the sum read back equals the oracle after every step."""
    from streams.state import WorkerState
    from streams.topics import partition_for_user

    redis = RedisServer(tmp_path).start()
    traffic = make_traffic(seed=11, count=2000, now_ms=1_780_000_000_000)
    state = WorkerState(DEFAULT_ACTIVE_TYPES)
    for p in range(2):
        state.assign(p)
    events = list(traffic.valid)

    def apply(event: dict) -> None:
        platform, community, user, ts_ms, kind = fields(event)
        part = state.partitions[partition_for_user(user, 2)]
        part.apply(platform, community, user, ts_ms, kind)

    for event in events:
        apply(event)
    writer = _writer(redis.url, "diff", state)
    sent: list[list[Any]] = []
    script = writer.diff_script

    async def spy(keys: list[str], args: list[Any], client: Any) -> Any:
        sent.append(args)
        return await script(keys=keys, args=args, client=client)

    writer.diff_script = spy
    client = connect(redis.url)

    async def check() -> None:
        now = event_clock(events)
        assert now is not None
        totals = sum_read(await read_snapshots(client, "diff"))
        assert totals.active == expected_active(events, now, WINDOWS)
        assert totals.followers == expected_followers(events)
        assert totals.lifecycle == expected_lifecycle(events, now, WINDOWS)

    try:
        assert await writer.tick() and sent == []  # the first write of each is whole
        await check()
        # one event at the clock's time in a new community: two rows change, its own
        # and its platform's "*", in the partition of its user; nothing else is sent
        user = next(u for u in (f"new-{i}" for i in range(99)) if partition_for_user(u, 2) == 1)
        event = {"platform": "twitter", "community": "brand-new", "user_id": user,
                 "ts_ms": event_clock(events), "type": "like"}  # fmt: skip
        events.append(event)
        apply(event)
        assert await writer.tick()
        assert [args[3] for args in sent] == [0, 2]  # rows set, partitions 0 and 1
        assert sent[1][4::2] == [b'["twitter","brand-new"]', b'["twitter","*"]']
        assert len(sent[1]) == 8  # and none deleted
        await check()
        await client.flushall()
        sent.clear()
        assert await writer.tick()
        assert [args[3] for args in sent] == [0, 0]  # refused: both rewritten whole
        await check()
        # another worker took partition 0 and wrote it whole: ours is refused and
        # written whole again (as both would before the diffs existed)
        other = _writer(redis.url, "diff", state)
        assert await other.tick()
        await other.close()
        ours = dict(writer.epochs)
        assert await writer.tick()
        assert all(writer.epochs[p] != ours[p] for p in (0, 1))
        await check()
        assert writer.failures == 0 and writer.epochs.keys() == {0, 1}
        assert 0 < await client.pttl("em:diff:part:0") <= 10_000
    finally:
        await client.aclose()
        await writer.close()
        redis.kill()


def sum_read(snapshots: list[Any]) -> Any:
    from agents.readmodel import sum_snapshots

    return sum_snapshots(snapshots)
