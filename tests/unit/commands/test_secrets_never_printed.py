"""No secret is ever printed: every command's ``--help``, and the failure paths of the
commands that connect, run with known secrets in the environment (Kafka password,
Redis password in the URL and alone, HTTP token, pseudonym key) and services that
refuse the connection; none of the secrets appears in anything they print."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bench.workers import REPO, free_port
from commands.cli import build_parser

SECRETS = {
    "kafka": "Kafka-S3cret-1",
    "redis": "Redis-S3cret-2",
    "redis-alone": "Redis-S3cret-3",
    "http": "Http-S3cret-4",
    "key": "Key-S3cret-5",
}


def secret_env(closed_port: int) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port}",
        "EM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "EM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "EM_KAFKA_SASL_USERNAME": "em",
        "EM_KAFKA_SASL_PASSWORD": SECRETS["kafka"],
        "REDIS_URL": f"redis://em:{SECRETS['redis']}@127.0.0.1:{closed_port}/0",
        "EM_REDIS_PASSWORD": SECRETS["redis-alone"],
        "EM_HTTP_TOKEN": SECRETS["http"],
        "EM_USER_ID_KEY": SECRETS["key"],
    }


def assert_no_secret(text: str, where: str) -> None:
    for name, secret in SECRETS.items():
        assert secret not in text, f"{name} secret printed by {where}:\n{text}"


def test_every_help_hides_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in secret_env(free_port()).items():
        monkeypatch.setenv(name, value)
    parser = build_parser()
    assert_no_secret(parser.format_help(), "engagement-monitor --help")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    assert len(sub.choices) >= 13
    for command, subparser in sub.choices.items():
        text = subparser.format_help()
        assert_no_secret(text, f"{command} --help")
        if command in ("worker", "status", "top", "api"):  # they show the Redis URL
            assert "redis://em:***@127.0.0.1" in text.replace("\n", "").replace(" ", ""), command


def _failing_runs(tmp_path: Path) -> dict[str, list[str]]:
    events = tmp_path / "events.jsonl"
    events.write_text('{"platform":"x"}\n')
    return {
        "worker": ["worker", "--datadir", str(tmp_path / "data")],
        "simulate": ["simulate", "--count", "10", "--quiet"],
        "produce": ["produce", str(events), "--quiet"],
        "replay": ["replay", "--file", str(events), "--speed", "max", "--quiet"],
        "backfill": ["backfill", "--from=-1h", "--to", "now", "-o", str(tmp_path / "out.om")],
        "rebuild": ["rebuild", "--from", "0", "--datadir", str(tmp_path / "data")],
        "status": ["status"],
        "top": ["top", "brand-01"],
        "audit": ["audit", "--quiet"],
        "pseudonym": ["pseudonym", "u-1"],
    }


def test_failure_paths_print_no_secret(tmp_path: Path) -> None:
    env = {**os.environ, **secret_env(free_port()), "PYTHONPATH": str(REPO)}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "commands.cli", *args],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, args in _failing_runs(tmp_path).items()
    }
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        assert_no_secret(out, name)
        if name != "pseudonym":
            assert proc.returncode != 0, f"{name} should have failed:\n{out}"
            assert "Traceback" not in out, f"{name}:\n{out}"


def test_api_errors_carry_no_secret_and_no_exception_text(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, **secret_env(free_port()), "PYTHONPATH": str(REPO)}
    log = tmp_path / "api.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "commands.cli", "api", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}/api"
        assert _status(f"{base}/health") == (401, b'{"error":"unauthorized"}')
        auth = {"Authorization": f"Bearer {SECRETS['http']}"}
        assert _status(f"{base}/health", auth) == (503, b'{"error":"redis unavailable"}')
        assert _status(f"{base}/communities", auth) == (503, b'{"error":"redis unavailable"}')
    finally:
        proc.terminate()
        proc.wait(30)
    assert_no_secret(log.read_text(), "api")


def _status(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    deadline = time.monotonic() + 60
    while True:
        request = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
