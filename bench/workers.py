"""Helpers for tests that run the real worker as a subprocess against the stack.

Completion is detected from Kafka itself, not by sleeping: the ingest group has
committed the input topic's end offsets, and then the state group has committed
the end offsets of the internal by-user topic. Both stages commit only after their
output is acknowledged, so at that point every event is in the worker's state.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agents.kafka_admin import ensure_topics
from agents.kafka_security import client_kwargs
from agents.txn_offsets import committed_reader, records_behind
from streams import metric_names as names
from streams.topics import by_user_topic, ingest_group

REPO = Path(__file__).resolve().parents[1]


def stack_bootstrap() -> str:
    """The broker a bench talks to: KAFKA_BOOTSTRAP_SERVERS, else the local stack's
    127.0.0.1:KAFKA_PORT (9092 by default)."""
    port = os.environ.get("KAFKA_PORT", "9092")
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Worker:
    """``engagement-monitor worker`` in a subprocess, stopped by its PID."""

    def __init__(
        self,
        bootstrap: str,
        app_id: str,
        input_topic: str,
        dlq_topic: str,
        datadir: Path,
        store: str = "memory://",
        repo: Path | str = REPO,
        **extra_env: str,
    ) -> None:
        self.app_id = app_id
        self.repo = Path(repo)  # the code the worker runs (bench/pipeline_bench.py --baseline)
        self.port = free_port()
        self.log_path = datadir.parent / f"{app_id}-{self.port}.log"
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "EM_APP_ID": app_id,
            "EM_INPUT_TOPIC": input_topic,
            "EM_DLQ_TOPIC": dlq_topic,
            "EM_STORE": store,
            "EM_DATA_DIR": str(datadir),
            "EM_WEB_PORT": str(self.port),
            "EM_CLOCK": "event",
            "EM_SESSION_TIMEOUT": "6s",
            "EM_REBALANCE_TIMEOUT": "6s",
            "EM_HEARTBEAT_INTERVAL": "1s",
            "EM_LOG_LEVEL": "warn",
            "EM_EXPIRY_INTERVAL": "2s",  # exercise expiry and its tombstones
            # the stack's Redis, for the read model (the same ports as the stack script)
            "REDIS_URL": os.environ.get(
                "REDIS_URL", f"redis://127.0.0.1:{os.environ.get('REDIS_PORT', '6379')}/0"
            ),
            **extra_env,
        }
        if self.repo != REPO:
            self.env["PYTHONPATH"] = str(self.repo)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def start(self) -> Worker:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "commands.cli", "worker"],
            env=self.env,
            cwd=self.repo,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye to the group."""
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets and state but misses heartbeats."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGCONT)  # a paused process can't handle SIGTERM
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def scrape(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """{sample name: {sorted label items: value}} from /metrics, without the
        ``app`` label — after checking that every sample carries this worker's."""
        request = urllib.request.Request(self.metrics_url)
        if self.env.get("EM_HTTP_TOKEN"):  # a worker that requires the bearer token
            request.add_header("Authorization", f"Bearer {self.env['EM_HTTP_TOKEN']}")
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = dict(sample.labels)
                app = labels.pop("app", None)
                if app != self.app_id:
                    raise AssertionError(f"{sample.name}{sample.labels}: app is not {self.app_id}")
                samples[sample.name][tuple(sorted(labels.items()))] = sample.value
        return samples

    def wait_metrics(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"worker exited early:\n{self.log_tail()}")
            try:
                self.scrape()
                return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"worker's /metrics did not answer in {timeout}s:\n{self.log_tail()}")


@contextmanager
def running_workers(
    bootstrap: str,
    app_id: str,
    input_topic: str,
    folder: Path,
    count: int,
    store: str = "memory://",
    **extra_env: str,
) -> Iterator[list[Worker]]:
    """``count`` workers of one app (each its own /metrics port and data folder under
    ``folder``, as docs/several-apps.md runs them), started together and answering
    /metrics; every one stopped by its PID when the block ends, however it ends."""
    workers = [
        Worker(
            bootstrap,
            app_id,
            input_topic,
            f"{input_topic}.dlq",
            folder / f"worker-{i}" / "data",
            store=store,
            **extra_env,
        )
        for i in range(count)
    ]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.wait_metrics()
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def gauges(samples: dict[str, dict[Any, float]]) -> tuple[dict, dict]:
    """(active {(platform, community): {window: n}}, followers {(platform, community): n})."""
    active: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for labels, value in samples.get(names.ACTIVE_USERS, {}).items():
        d = dict(labels)
        active[(d["platform"], d["community"])][d["window"]] = int(value)
    followers = {
        (dict(labels)["platform"], dict(labels)["community"]): int(value)
        for labels, value in samples.get(names.FOLLOWERS, {}).items()
    }
    return dict(active), followers


def lifecycle_gauges(
    samples: dict[str, dict[Any, float]],
) -> dict[tuple[str, str], dict[str, tuple[int, ...]]]:
    """{(platform, community): {window: (active followers, new, returning, dormant)}}."""
    out: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(dict)
    for i, name in enumerate(names.LIFECYCLE.values()):
        for labels, value in samples.get(name, {}).items():
            d = dict(labels)
            row = out[(d["platform"], d["community"])].setdefault(d["window"], [0] * 4)
            row[i] = int(value)
    return {pc: {w: tuple(n) for w, n in counts.items()} for pc, counts in out.items()}


async def _committed(admin: Any, group: str) -> dict[Any, int]:
    from aiokafka.errors import GroupCoordinatorNotAvailableError

    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except GroupCoordinatorNotAvailableError:  # the group's coordinator is still loading
        return {}
    return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def _end_offsets(bootstrap: str, topic: str) -> dict[Any, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **client_kwargs())
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()  # noqa: SLF001
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        return dict(await consumer.end_offsets(tps)) if tps else {}
    finally:
        await consumer.stop()


async def wait_caught_up(
    bootstrap: str,
    app_id: str,
    input_topic: str,
    worker: Worker,
    timeout: float = 120,
    stall: float | None = None,
) -> None:
    """Return when both stages have committed everything that was in the topics.

    Fails after ``timeout`` seconds in all or, with ``stall``, after ``stall``
    seconds in which no commit moved: a long run on a loaded machine may take its
    whole ``timeout`` while a stuck worker is found out early."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs())
    await admin.start()
    try:
        async with committed_reader(bootstrap) as reader:
            deadline = time.monotonic() + timeout
            for group, topic in (
                (ingest_group(app_id), input_topic),
                (app_id, by_user_topic(app_id)),
            ):
                ends = await _end_offsets(bootstrap, topic)
                ends = {tp: offset for tp, offset in ends.items() if offset}
                await _wait_group(admin, reader, group, ends, worker, deadline, stall)
    finally:
        await admin.close()


async def _wait_group(
    admin: Any,
    reader: Any,
    group: str,
    ends: dict[Any, int],
    worker: Worker,
    deadline: float,
    stall: float | None,
) -> None:
    """Until ``group`` has committed every record before ``ends`` (see
    :func:`wait_caught_up`)."""
    least, moved_at = None, time.monotonic()
    while True:
        committed = await _committed(admin, group)
        gaps = {
            tp: (committed.get(tp, 0), end)
            for tp, end in ends.items()
            if committed.get(tp, 0) < end
        }
        behind = await records_behind(reader, gaps)
        if not behind:
            return
        if not worker.alive():
            raise AssertionError(f"worker died:\n{worker.log_tail()}")
        now = time.monotonic()
        if least is None or sum(behind.values()) < least:
            least, moved_at = sum(behind.values()), now
        if now > deadline or (stall is not None and now - moved_at > stall):
            raise AssertionError(f"group {group} still behind: {behind}\n{worker.log_tail()}")
        await asyncio.sleep(0.3)


async def produce(bootstrap: str, topic: str, values: Iterable[bytes], partitions: int = 4) -> int:
    """Send raw values round-robin over the topic's partitions; return how many."""
    from aiokafka import AIOKafkaProducer

    await ensure_topics(bootstrap, {topic: partitions})
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, acks="all", **client_kwargs()
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, partition=i % partitions)
            for i, value in enumerate(values)
        ]
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every committed record of a topic, from the beginning to the end offsets taken
    now (read_committed: records of aborted transactions are not part of the topic)."""
    from aiokafka import TopicPartition

    ends = await _end_offsets(bootstrap, topic)
    records: list[Any] = []
    async with committed_reader(bootstrap, auto_offset_reset="earliest") as consumer:
        tps = [tp for tp, end in ends.items() if end > 0]
        if not tps:
            return records
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = {tp: ends[tp] for tp in tps}
        while remaining:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, messages in batch.items():
                records.extend(m for m in messages if m.offset < ends[TopicPartition(*tp)])
            for tp in list(remaining):  # markers and aborted records are skipped, not returned
                if await consumer.position(tp) >= remaining[tp]:
                    remaining.pop(tp)
        return records


async def drop_topics(bootstrap: str, prefix: str) -> list[str]:
    """Delete the topics whose names start with ``prefix`` (what one benchmark run made:
    its input, the workers' internal topics, the dead letters). Kept, they add up: a
    day of latency runs left 2,460 partitions and 24 GB in a development stack's Kafka,
    and its log recovery after a restart then outlasted the stack's 120 s wait."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs())
    await admin.start()
    try:
        names = sorted(t for t in await admin.list_topics() if t.startswith(prefix))
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()
    return names
