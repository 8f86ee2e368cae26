"""Secure deployments, live: SASL_SSL with SCRAM-SHA-512 and mutual TLS to Kafka, TLS and
an ACL user to Redis, a bearer token on /metrics, pseudonymised user ids.

A test-owned secure stack (tests/integration/securestack.py: the stack script's Kafka and
Redis with EM_STACK_SECURE, in their own state folder, on free ports); the shared stack is
not touched. Per Kafka mode: events go in, ``replay`` copies them to
the topic a worker reads, the worker's gauges and ``status --json`` equal the oracle,
``backfill`` gives the same numbers at the newest event time, and after ``rebuild
--execute`` a fresh worker recomputes them exactly. A wrong password and an
untrusted certificate each give one clear line from every Kafka command.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.workers import REPO, Worker, produce, wait_caught_up
from streams.durations import parse_windows
from streams.events import DEFAULT_ACTIVE_TYPES
from streams.security import pseudonym
from tests.eventgen import Traffic, make_traffic
from tests.integration.securestack import SecureStack
from tests.integration.test_backfill import parse_output
from tests.integration.test_pipeline import assert_gauges_match, nonzero
from tests.integration.test_readmodel import doc_rows, oracle_rows, wait_fresh_snapshots
from tests.oracle import expected_active, expected_followers, expected_lifecycle
from tests.tlscerts import untrusted_ca

pytestmark = pytest.mark.integration

WINDOWS = parse_windows("5m,1h,1d,7d,30d")
HTTP_TOKEN = "metrics-T0ken-S3cret"
USER_ID_KEY = "pseudonym-K3y-S3cret"


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    stack = SecureStack(tmp_path_factory.mktemp("secure")).start()
    try:
        yield stack
    finally:
        stack.stop()


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "commands.cli", *args],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def backfill_at_newest(env: dict[str, str], topic: str, traffic: Traffic, out: Path) -> None:
    """``backfill`` at one step, the next whole minute (after every record was written:
    backfill bounds its reading by record time): the oracle's numbers at that time."""
    step = (int(time.time() * 1000) // 60_000 + 1) * 60_000
    result = cli(
        env, "backfill", "--from", str(step), "--to", str(step), "--input-topic", topic,
        "-o", str(out), "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    steps = parse_output(out.read_text())
    assert list(steps) == [step], (result.stderr, out.read_text()[:500])
    valid = [e for e in traffic.valid if e["ts_ms"] <= step]
    active, followers, lifecycle = steps[step]
    assert nonzero(active) == nonzero(expected_active(valid, step, WINDOWS, DEFAULT_ACTIVE_TYPES))
    assert followers == expected_followers(valid)
    assert lifecycle == expected_lifecycle(valid, step, WINDOWS, DEFAULT_ACTIVE_TYPES)


def rebuild_execute(env: dict[str, str], app_id: str, topic: str, datadir: Path) -> None:
    deadline = time.monotonic() + 30  # the stopped worker's membership may linger
    while True:
        result = cli(
            env, "rebuild", "--from", "0", "--execute", "--json", "--app-id", app_id,
            "--input-topic", topic, "--datadir", str(datadir),
        )  # fmt: skip
        if result.returncode != 3 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert result.returncode == 0, result.stdout + result.stderr


def assert_top_pseudonymised(env: dict[str, str], app_id: str, traffic: Traffic) -> None:
    """``top`` shows pseudonyms only, each the HMAC of a real user of that community."""
    community = traffic.valid[-1]["community"]
    day = time.strftime("%Y-%m-%d", time.gmtime(traffic.valid[-1]["ts_ms"] / 1000))
    result = cli(env, "top", community, "--day", day, "--json", "--app-id", app_id)
    assert result.returncode == 0, result.stderr
    shown = {u["user_id"] for p in json.loads(result.stdout)["platforms"] for u in p["users"]}
    real = {e["user_id"] for e in traffic.valid if e["community"] == community}
    assert shown and shown <= {pseudonym(USER_ID_KEY.encode(), u) for u in real}
    assert not shown & real


def assert_web_surface(worker: Worker) -> None:
    """Only / (health) and /metrics, and /metrics only with the token."""
    base = f"http://127.0.0.1:{worker.port}"
    for path, status in (("/", 200), ("/table/users/", 404), ("/router/", 404), ("/metrics", 401)):
        try:
            with urllib.request.urlopen(base + path, timeout=10) as response:
                got = response.status
        except urllib.error.HTTPError as exc:
            got = exc.code
        assert got == status, path


@pytest.mark.parametrize("mode", ["sasl", "mtls"])
async def test_pipeline_over_secure_kafka_and_redis(
    secure: SecureStack, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = (secure.env_sasl() if mode == "sasl" else secure.env_mtls()) | secure.redis_env()
    if mode == "mtls":  # with the key: ids are pseudonyms, counts the same
        env |= {"EM_USER_ID_KEY": USER_ID_KEY, "EM_HTTP_TOKEN": HTTP_TOKEN}
    for name, value in env.items():  # the in-process helpers (bench) connect the same way
        monkeypatch.setenv(name, value)
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    suffix = f"{mode}-{time.time_ns()}"
    source, topic, app_id = f"raw-{suffix}", f"interactions-{suffix}", f"secure-{suffix}"
    traffic = make_traffic(seed=13, count=3000, now_ms=int(time.time() * 1000) - 60_000)
    await produce(bootstrap, source, traffic.messages)
    copied = cli(env, "replay", "--from-topic", source, "--to-topic", topic, "--speed", "max")
    assert copied.returncode == 0, copied.stderr

    datadir = tmp_path / "data"
    worker = Worker(bootstrap, app_id, topic, f"{topic}.dlq", datadir, **env).start()
    try:
        worker.wait_metrics()
        await wait_caught_up(bootstrap, app_id, topic, worker)
        assert_gauges_match(worker, traffic)
        if mode == "mtls":
            assert_web_surface(worker)
            assert_top_pseudonymised(env, app_id, traffic)
        await wait_fresh_snapshots(env["REDIS_URL"], app_id, int(time.time() * 1000))
        status = cli(env, "status", "--json", "--app-id", app_id)
        assert status.returncode == 0, status.stderr
        assert doc_rows(json.loads(status.stdout)) == oracle_rows(traffic)
    finally:
        worker.stop()
    backfill_at_newest(env, topic, traffic, tmp_path / "backfill.om")

    rebuild_execute(env, app_id, topic, datadir)
    again = Worker(bootstrap, app_id, topic, f"{topic}.dlq", datadir, **env).start()
    try:
        again.wait_metrics()
        await wait_caught_up(bootstrap, app_id, topic, again)
        assert_gauges_match(again, traffic)
    finally:
        again.stop()


def _failing_commands(tmp_path: Path) -> dict[str, list[str]]:
    events = tmp_path / "events.jsonl"
    events.write_text('{"platform":"x"}\n')
    return {
        "worker": ["worker", "--app-id", f"bad-{time.time_ns()}"],
        "replay": [
            "replay",
            "--file",
            str(events),
            "--to-topic",
            "bad-replay",
            "--speed",
            "max",
            "--quiet",
        ],
        "produce": ["produce", str(events), "--topic", "bad-produce", "--quiet"],
        "backfill": ["backfill", "--from=-1h", "--to", "now", "-o", str(tmp_path / "b.om")],
        "rebuild": ["rebuild", "--from", "0", "--app-id", "bad-rebuild"],
    }


def _error_lines(stderr: str) -> list[str]:
    """stderr without the worker's start-up announcement (its app, metrics URL and
    effective settings, secrets redacted), which comes before any connection."""
    return [
        line
        for line in stderr.strip().splitlines()
        if not line.startswith(("engagement-monitor worker: app ", "  "))
        and line != "engagement-monitor worker: effective settings (secrets redacted):"
    ]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong-password", "SASL authentication failed"),
        ("untrusted-certificate", "certificate is not trusted"),
    ],
)
def test_a_wrong_password_or_untrusted_certificate_is_one_clear_line(
    secure: SecureStack, case: str, expected: str, tmp_path: Path
) -> None:
    wrong = "wr0ng-S3cret-pw"
    if case == "wrong-password":
        env = secure.env_sasl(password=wrong)
    else:  # the client trusts another CA: the broker's certificate is not trusted
        env = secure.env_mtls(ca_file=untrusted_ca(tmp_path / "other"))
    for name, args in _failing_commands(tmp_path).items():
        started = time.monotonic()
        result = cli(env | {"EM_DATA_DIR": str(tmp_path / "data")}, *args, timeout=60)
        lines = _error_lines(result.stderr)
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert len(lines) == 1 and expected in lines[0], (name, result.stderr)
        for secret in (wrong, secure.kafka_password):
            assert secret not in result.stdout + result.stderr, name
        assert time.monotonic() - started < 60


def test_redis_wrong_password_is_one_line_without_the_secret(secure: SecureStack) -> None:
    env = secure.redis_env() | {"REDIS_URL": secure.redis_url(password="wr0ng-S3cret-pw")}
    result = cli(env, "status", "--json")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "wr0ng-S3cret-pw" not in result.stdout + result.stderr
    assert "rediss://em-monitor:***@" in result.stderr
