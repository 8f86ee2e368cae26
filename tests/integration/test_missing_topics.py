"""Read paths never create topics: a misspelled topic is an error naming it, and
afterwards the topic still does not exist (the local broker auto-creates topics on
a metadata request that names them, so this fails if any path asks that way)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from bench.workers import REPO

pytestmark = pytest.mark.integration


def topics(bootstrap: str) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    async def listed() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(listed())


def test_read_commands_refuse_a_missing_topic_and_create_none(stack, tmp_path) -> None:
    name = stack.unique_name("no-such-topic")
    commands = {
        "replay": ["replay", "--from-topic", name, "--to-topic", stack.unique_name("out")],
        "backfill": [
            "backfill",
            "--input-topic",
            name,
            "--from",
            "-2h",
            "--to",
            "-1h",
            "-o",
            str(tmp_path / "b.om"),
        ],
        "audit": ["audit", "--input-topic", name, "--app-id", stack.unique_name("a")],
        "rebuild": [
            "rebuild",
            "--input-topic",
            name,
            "--from",
            "-1h",
            "--app-id",
            stack.unique_name("r"),
        ],
        "dlq stats": ["dlq", "stats", "--dlq-topic", name],
        "dlq show": ["dlq", "show", "--dlq-topic", name],
        "dlq export": ["dlq", "export", "--dlq-topic", name],
    }
    failures = []
    for label, argv in commands.items():
        done = subprocess.run(
            [sys.executable, "-m", "commands.cli", *argv],
            env=stack.worker_env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode == 0 or name not in done.stderr or "does not exist" not in done.stderr:
            failures.append(f"{label}: exit {done.returncode}\n{done.stdout}{done.stderr}")
    assert not failures, "\n".join(failures)
    assert name not in topics(stack.kafka_bootstrap)


def test_audit_of_an_app_that_never_ran_creates_no_topic(stack) -> None:
    """The input exists; the app id is new (a typo): audit reports, and no
    ``{app}-events-by-user`` topic appears."""
    from bench.workers import produce

    topic, app_id = stack.unique_name("audit-in"), stack.unique_name("never-ran")
    asyncio.run(produce(stack.kafka_bootstrap, topic, [b"{}"]))
    done = subprocess.run(
        [sys.executable, "-m", "commands.cli", "audit", "--input-topic", topic,
         "--app-id", app_id, "--read-model", "off", "--wait", "2s"],
        env=stack.worker_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode != 0, done.stdout
    listed = topics(stack.kafka_bootstrap)
    assert topic in listed and not any(t.startswith(app_id) for t in listed)
