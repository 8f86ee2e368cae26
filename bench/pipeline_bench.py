"""Throughput and latency of the pipeline against a raw aiokafka consumer, one run.

    python bench/pipeline_bench.py [--events 1000000] [--users 100000] [--communities 1000]
    git worktree add /tmp/base main   # code to compare with
    python bench/pipeline_bench.py --baseline /tmp/base --rounds 2   # before/after, one run
    python bench/pipeline_bench.py --before-state 4529a3b --rounds 3 # this tree without
                                                # the audience counts of issue 15, and with

Needs the local stack (``deploy/local/stack up``; KAFKA_BOOTSTRAP_SERVERS or
KAFKA_PORT pick the broker). Steps, all in one run so the ratio is fair on a noisy
machine:

1. produce N events (~150 bytes each) to a fresh topic;
2. (a) a raw aiokafka consumer reads the whole topic (getmany, no processing): events/s;
3. (b) a worker (subprocess, event clock) processes the same topic end to end — until
   both stages have committed everything, i.e. the last event is in its state: events/s,
   the ratio to (a), and the worker's peak RSS;
4. with background traffic at a fixed rate — by default half the rate (b) measured —
   probe events (each a new user of one probe community), stamped with their send
   time, are sent one after another and /metrics is polled until the community's
   gauge counts the probe: p50/p99 event-to-gauge latency, each split at the moment
   the probe was committed on the by-user topic, and the background rate reached.

With ``--baseline DIR`` step 3 runs ``--rounds`` times for each of two code trees —
DIR (e.g. a worktree of main) and this one — alternating, on the same topic, and
prints each run, the medians and their ratio; memory per stored record is (peak RSS −
RSS of the idle worker before the first event) / distinct (platform, community, user)
keys. Step 4 is skipped then.

``--before-state COMMIT`` is the "before" of issue 15's bounds: the baseline is a copy
of this tree whose streams/state.py is COMMIT's (before the audience counts) plus a
shim that reports no audience counts, so the two workers differ only in the state.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.kafka_admin import ensure_topics
from agents.kafka_security import client_kwargs  # noqa: E402
from bench.workers import REPO, Worker, drop_topics, stack_bootstrap, wait_caught_up  # noqa: E402
from streams.events import format_ts  # noqa: E402
from streams.json_bytes import kept  # noqa: E402
from streams.topics import by_user_topic, ingest_group  # noqa: E402

print = functools.partial(print, flush=True)  # noqa: A001 - progress shows live

TYPES = ["like"] * 10 + ["comment"] * 3 + ["share", "reply", "mention", "post", "view", "follow"]


def make_payloads(n: int, users: int, communities: int, now_ms: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(communities)]
    names = [f"community-{i:04d}" for i in range(communities)]
    chosen = rng.choices(names, weights, k=n)
    out = []
    for i in range(n):
        ts = now_ms - rng.randrange(0, 3 * 86_400_000)
        doc = {
            "event_id": f"bench-{i:09d}",
            "ts": format_ts(ts),
            "platform": "twitter",
            "community": chosen[i],
            "user_id": f"user-{rng.randrange(users):07d}",
            "type": rng.choice(TYPES),
        }
        out.append(kept(orjson.dumps(doc)))  # 4 KiB each otherwise: 5M would not fit
    return out


async def produce_all(bootstrap: str, topic: str, payloads: list[bytes], partitions: int) -> float:
    from aiokafka import AIOKafkaProducer

    await ensure_topics(bootstrap, {topic: partitions})
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=512 * 1024,
        acks=1,
        **client_kwargs(),
    )
    await producer.start()
    start = time.perf_counter()
    try:
        batches: dict[int, object] = {}
        pending = []
        for i, value in enumerate(payloads):
            p = i % partitions
            batch = batches.get(p)
            if batch is None:
                batch = batches[p] = producer.create_batch()
            if batch.append(key=None, value=value, timestamp=None) is None:  # type: ignore[attr-defined]
                pending.append(await producer.send_batch(batch, topic, partition=p))
                batch = batches[p] = producer.create_batch()
                batch.append(key=None, value=value, timestamp=None)  # type: ignore[attr-defined]
        for p, batch in batches.items():
            pending.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - start


async def raw_consume(bootstrap: str, topic: str, n: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        **client_kwargs(),
    )
    await consumer.start()
    try:
        # timed from the first batch on (the connection and the first fetch are not
        # reading), and that batch not counted: a small topic comes in one batch, and
        # counting it gave rates of billions a second
        asked = time.perf_counter()
        seen, start, first = 0, None, 0
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20000)
            got = sum(len(v) for v in batch.values())
            if start is None and got:
                start, first = time.perf_counter(), got
            seen += got
        assert start is not None
        if seen > first:  # seconds for n events at the rate after the first batch
            return (time.perf_counter() - start) * n / (seen - first)
        return time.perf_counter() - asked  # all in one batch: from asking
    finally:
        await consumer.stop()


async def first_progress(bootstrap: str, group: str, worker: Worker) -> float:
    """perf_counter time at which the ingest group first commits anything."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import GroupCoordinatorNotAvailableError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs())
    await admin.start()
    try:
        while True:
            try:
                offsets = await admin.list_consumer_group_offsets(group)
            except GroupCoordinatorNotAvailableError:
                offsets = {}
            if any(meta.offset > 0 for meta in offsets.values()):
                return time.perf_counter()
            if not worker.alive():
                raise RuntimeError(worker.log_tail())
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


def peak_rss_mib(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    events_per_s: float
    peak_rss_mib: float
    idle_rss_mib: float
    #: the worker's CPU time per event over the same interval: steadier than events/s
    #: on a shared machine (what other processes take shows in wall time, not here)
    cpu_us_per_event: float = float("nan")
    #: RSS once caught up (a few seconds after, timers run): what the worker holds
    #: between bursts, as against the peak while it took the backlog in
    settled_rss_mib: float = float("nan")


async def run_worker(
    bootstrap: str, topic: str, app_id: str, args: argparse.Namespace, repo: Path
) -> tuple[Run, Worker]:
    """A fresh worker (own consumer group) from ``repo`` over the whole topic; it is left
    running for the caller to probe or stop."""
    tmp = tempfile.mkdtemp(prefix=f"{app_id}-")
    allowlist = Path(tmp) / "allowlist"  # the latency probes' series are never capped
    allowlist.write_text(f"{PROBE_NAME}\n")
    redis_url = os.environ.get(
        "REDIS_URL", f"redis://127.0.0.1:{os.environ.get('REDIS_PORT', '6379')}/0"
    )
    worker = Worker(
        bootstrap,
        app_id,
        topic,
        f"{topic}.dlq",
        Path(tmp) / "data",
        store=args.store,
        repo=repo,
        EM_PARTITIONS=str(args.partitions),
        REDIS_URL=redis_url,
        EM_EXPIRY_INTERVAL="60s",
        EM_LABEL_ALLOWLIST=str(allowlist),
    ).start()
    try:
        worker.wait_metrics()
        idle = peak_rss_mib(worker.proc.pid, "VmRSS")  # type: ignore[union-attr]
        started = await first_progress(bootstrap, ingest_group(app_id), worker)
        cpu_started = cpu_seconds(worker.proc.pid)  # type: ignore[union-attr]
        await wait_caught_up(bootstrap, app_id, topic, worker, timeout=1800)
        worker_s = time.perf_counter() - started
        cpu_s = cpu_seconds(worker.proc.pid) - cpu_started  # type: ignore[union-attr]
        peak = peak_rss_mib(worker.proc.pid)  # type: ignore[union-attr]
        await asyncio.sleep(3)
        settled = peak_rss_mib(worker.proc.pid, "VmRSS")  # type: ignore[union-attr]
    except BaseException:
        worker.stop()
        raise
    run = Run(args.events / worker_s, peak, idle, cpu_s * 1e6 / args.events, settled)
    return run, worker


def stop_and_clean(worker: Worker) -> None:
    """Stop the worker and delete its temporary folder (data and log); a run that
    failed keeps both for reading (run_worker stops it without cleaning)."""
    worker.stop()
    shutil.rmtree(worker.log_path.parent, ignore_errors=True)


#: Appended to an older streams/state.py (``--before-state``): the names the rest of
#: this tree imports from it, and no audience counts. Written for a state of 4529a3b's
#: shape (active times in ``_comm_active``/``_platform_active``). That state tracked no
#: changes, so streams.live_counts recomputes every key it shows at each update, as
#: its own scrape did: the comparison is the current pipeline with the old state.
STATE_SHIM = '''

from typing import NamedTuple  # noqa: E402


class Lifecycle(NamedTuple):
    active_followers: int
    new_users: int
    returning_users: int
    dormant_users: int

    def plus(self, other):
        return Lifecycle(*(a + b for a, b in zip(self, other)))


def lifecycle_bounds(now_ms, windows):
    return []


def _no_lifecycle(self, now_ms, windows):
    return {}


class _WireRecords(dict):
    """The old state's records (a dict of UserRecord) with what the changelog writer reads."""

    def wire(self, key):
        record = self.get(key)
        return None if record is None else record.to_wire()


class _BeforePartitionState(PartitionState):
    """The old state behind streams.live_counts' API: take_changed names every key
    shown now or at the last call (one that is gone must be recomputed to be removed);
    group_counts reads one active_counts per update, and no lifecycle (None); its
    records answer the changelog writer's wire()."""

    def __init__(self, active_types):
        super().__init__(active_types)
        self.records = _WireRecords(self.records)
        self._shown = {}
        self._counted = (None, {})
        self._followers_shown = {}

    def take_changed(self):
        self.flush()
        now = dict.fromkeys(self._comm_active)
        now.update(((platform, ALL_COMMUNITIES), None) for platform in self._platform_active)
        changed, self._shown = {**self._shown, **now}, now
        self._counted = (None, {})
        return changed

    def take_follow_changed(self):
        """Every follower key shown now or at the last call (session 8's API)."""
        now = self.follower_counts()
        changed = {**dict.fromkeys(self._followers_shown), **dict.fromkeys(now)}
        self._followers_shown = now
        return changed

    def count_keys(self):
        return [*self._comm_active, *((p, ALL_COMMUNITIES) for p in self._platform_active)]

    def follower_count(self, pc):
        return self._followers_shown.get(pc)

    def load_wire(self, items):
        """What the rebuild calls (session 7): the old state's load, item by item."""
        loaded = 0
        for key, value in items:
            if value is not None:
                self.load(key, UserRecord.from_wire(value))
                loaded += 1
        return loaded

    def flush_steps(self, budget):
        self.flush()
        yield None

    def group_counts(self, pc, now_ms, windows, bounds):
        key = (now_ms, tuple(windows.items()))
        if self._counted[0] != key:
            self._counted = (key, self.active_counts(now_ms, windows))
        return self._counted[1].get(pc), None, now_ms + 1


PartitionState.lifecycle_counts = _no_lifecycle
WorkerState.lifecycle_counts = _no_lifecycle
PartitionState = _BeforePartitionState  # what WorkerState.assign makes from now on
'''


def state_baseline(commit: str) -> Path:
    """A copy of this tree with ``commit``'s streams/state.py and :data:`STATE_SHIM`."""
    tree = Path(tempfile.mkdtemp(prefix="bench-before-state-")) / "tree"
    shutil.copytree(
        REPO,
        tree,
        ignore=shutil.ignore_patterns(".git", ".venv", ".state", "__pycache__", "*.egg-info"),
    )
    old = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{commit}:streams/state.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (tree / "streams" / "state.py").write_text(old + STATE_SHIM)
    return tree


async def compare(
    bootstrap: str, topic: str, tag: str, args: argparse.Namespace, records: int
) -> None:
    """Before/after: the baseline tree and this one, alternating, on the same topic."""
    trees = {"baseline": Path(args.baseline).resolve(), "this tree": REPO}
    runs: dict[str, list[Run]] = {name: [] for name in trees}
    for i in range(args.rounds):
        for name, repo in trees.items():
            run, worker = await run_worker(
                bootstrap,
                topic,
                f"{tag}-{i}-{len(runs[name])}-{'b' if name == 'baseline' else 't'}",
                args,
                repo,
            )
            stop_and_clean(worker)
            runs[name].append(run)
            per_record = (run.peak_rss_mib - run.idle_rss_mib) * 2**20 / records
            print(
                f"  {name}: {run.events_per_s:,.0f} events/s, {run.cpu_us_per_event:.1f} µs "
                f"worker CPU per event, peak RSS {run.peak_rss_mib:.0f} "
                f"MiB (idle {run.idle_rss_mib:.0f}), {per_record:.0f} B per stored record "
                f"({(run.settled_rss_mib - run.idle_rss_mib) * 2**20 / records:.0f} settled)"
            )
    medians = {}
    for name, rs in runs.items():
        rate = statistics.median(r.events_per_s for r in rs)
        per_record = statistics.median(
            (r.peak_rss_mib - r.idle_rss_mib) * 2**20 / records for r in rs
        )
        cpu = statistics.median(r.cpu_us_per_event for r in rs)
        medians[name] = (rate, per_record, cpu)
        print(
            f"{name}: median {rate:,.0f} events/s, {cpu:.1f} µs worker CPU per event, "
            f"{per_record:.0f} B per stored record"
        )
    (rate_b, mem_b, cpu_b), (rate_t, mem_t, cpu_t) = medians["baseline"], medians["this tree"]
    print(
        f"this tree / baseline: throughput {rate_t / rate_b:.3f}, "
        f"worker CPU per event {cpu_t / cpu_b:.3f}, "
        f"memory per stored record {mem_t / mem_b:.3f} ({records:,} records)"
    )


def background_payload(i: int, pair: tuple[str, str]) -> bytes:
    community, user_id = pair
    return orjson.dumps(
        {
            "event_id": f"bg-{i}",
            "ts": int(time.time() * 1000),
            "platform": "twitter",
            "community": community,
            "user_id": user_id,
            "type": "like",
        }
    )


async def background(
    producer: object, topic: str, rate: int, pairs: list[tuple[str, str]], stop: asyncio.Event
) -> int:
    """``rate`` events/s in 20 slots a second, each slot one batch per partition
    (``send`` per message would cost the bench more CPU than the worker it measures);
    returns how many were sent.

    Each event is a (community, user) pair of the throughput run's, drawn at random:
    people who engage again, so the state keeps its size. Random new pairs made a new
    record of almost every event, and a state growing by the background's rate ends up
    far larger than the one the maximum rate was measured on (session 8)."""
    rng = random.Random(5)
    sent, started = 0, time.perf_counter()
    partitions = sorted(await producer.partitions_for(topic))  # type: ignore[attr-defined]
    while not stop.is_set():
        due = int((time.perf_counter() - started) * rate) - sent
        batches = {p: producer.create_batch() for p in partitions}  # type: ignore[attr-defined]
        for k in range(max(0, due)):
            batch = batches[partitions[k % len(partitions)]]
            value = background_payload(sent, pairs[rng.randrange(len(pairs))])
            if batch.append(key=None, value=value, timestamp=None) is None:
                break  # full: the rest goes in the next slot
            sent += 1
        for p, batch in batches.items():
            if batch.record_count():
                await producer.send_batch(batch, topic, partition=p)  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
    return sent


class Routed:
    """When each probe became readable on the by-user topic (committed, so the state
    stage may read it): splits a probe's latency into the ingest stage's part (poll,
    route, transaction) and the state stage's (fetch, batch, apply) plus the scrape."""

    def __init__(self, bootstrap: str, app_id: str, marker: bytes) -> None:
        self.bootstrap, self.topic, self.marker = bootstrap, by_user_topic(app_id), marker
        self.seen: dict[bytes, float] = {}

    async def watch(self, stop: asyncio.Event) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            isolation_level="read_committed",
            auto_offset_reset="latest",
            enable_auto_commit=False,
            fetch_max_wait_ms=10,
            **client_kwargs(),
        )
        await consumer.start()
        try:
            while not stop.is_set():
                polled = await consumer.getmany(timeout_ms=50)
                now = time.perf_counter()
                for messages in polled.values():
                    for message in messages:
                        self._scan(message.value, now)
        finally:
            await consumer.stop()

    def _scan(self, value: bytes, now: float) -> None:
        at = value.find(self.marker)
        while at >= 0:
            end = value.index(b'"', at)
            self.seen.setdefault(value[at:end], now)
            at = value.find(self.marker, end)


async def probe(producer: object, topic: str, worker: Worker, k: int, routed: Routed) -> Probe:
    """From sending the ``k``-th probe event (a new user of the probe community) until
    /metrics shows the community's 30d count at ``k + 1``, and until the by-user topic
    had it.

    Probes share one platform and community, which the worker's label allowlist keeps
    (see :func:`run_worker`): a platform per probe (before) went over the platform cap
    of 20 after ~25 probes, and those probes' series went to "_other", so their
    gauges never showed — the unbounded p99 of session 8."""
    user_id = f"{routed.marker.decode()}{k}"
    sent = time.perf_counter()
    value = orjson.dumps(
        {
            "event_id": f"probe-{k}",
            "ts": int(time.time() * 1000),
            "platform": PROBE_NAME,
            "community": PROBE_NAME,
            "user_id": user_id,
            "type": "post",
        }
    )
    await (await producer.send(topic, value))  # type: ignore[attr-defined]

    def shown() -> bool:
        # a slow scrape is part of the latency, not a failure of the bench
        SCRAPES[0] += 1
        with urllib.request.urlopen(PROBE_URL.format(worker.metrics_url), timeout=120) as response:
            found = PROBE_GAUGE.search(response.read())
        return found is not None and float(found.group(1)) >= k + 1

    # Every PROBE_POLL_S, not back to back: a scrape costs the worker tens of ms of
    # its only core, and scraping nonstop (as Prometheus never does) took enough of it
    # that the worker fell behind the background traffic and a scrape waited > 10 s.
    while not await asyncio.to_thread(shown):  # the background keeps sending meanwhile
        await asyncio.sleep(PROBE_POLL_S)
    total = time.perf_counter() - sent
    at = routed.seen.get(user_id.encode())
    return Probe(total, None if at is None else at - sent)


#: The probe's gauge only (``name[]``): the whole page is 6.3 MB at 1,000 communities,
#: and scraping it every 0.25 s took a third of the worker's core (session 9). The
#: worker brings the gauges up to date for a filtered scrape as for a whole one.
PROBE_URL = "{}?name[]=engagement_active_users"
#: The probes' platform and community (in the worker's label allowlist).
PROBE_NAME = "probe"
PROBE_GAUGE = re.compile(
    rb'\nengagement_active_users\{[^}\n]*platform="probe",community="probe",window="30d"\} (\S+)'
)


@dataclass
class Probe:
    total: float  # send -> gauge on /metrics
    routed: float | None  # send -> committed on the by-user topic (None: not seen)


#: Between a probe's scrapes: latencies read up to this much late (reported as is).
PROBE_POLL_S = 0.25
#: The probes' scrapes so far (each one costs the worker a flush and a recount).
SCRAPES = [0]


async def latency_probes(
    bootstrap: str,
    topic: str,
    worker: Worker,
    rate: int,
    probes: int,
    pairs: list[tuple[str, str]],
    app_id: str,
    gap: float = 0.1,
) -> tuple[list[Probe], float]:
    """Background traffic at ``rate``/s; ``probes`` probe events, one at a time, ``gap``
    seconds apart (from one probe's gauge to the next probe's send).
    Returns the probes' latencies and the background rate reached."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=1,
        acks=1,
        max_batch_size=512 * 1024,
        **client_kwargs(),
    )
    await producer.start()
    stop = asyncio.Event()
    routed = Routed(bootstrap, app_id, f"prober-{os.getpid()}-".encode())
    watcher = asyncio.create_task(routed.watch(stop))
    await asyncio.sleep(2)  # the watcher has its partitions (it reads from the end)
    started = time.perf_counter()
    task = asyncio.create_task(background(producer, topic, rate, pairs, stop))
    latencies: list[Probe] = []
    try:
        await asyncio.sleep(5)  # the background's rate is the worker's steady load
        probing, scrapes = time.perf_counter(), SCRAPES[0]
        for k in range(probes):
            latencies.append(await probe(producer, topic, worker, k, routed))
            if (k + 1) % 10 == 0 or k + 1 == probes:  # progress: a slow worker is seen
                recent = ", ".join(f"{p.total * 1000:.0f}" for p in latencies[-10:])
                print(f"  probes {k + 1}/{probes}: last latencies {recent} ms")
            await asyncio.sleep(gap)
        probing, scrapes = time.perf_counter() - probing, SCRAPES[0] - scrapes
        print(
            f"  the probes scraped /metrics {scrapes} times in {probing:.0f} s "
            f"({scrapes / probing:.1f}/s; a probe every {probing / probes:.2f} s)"
        )
    finally:
        stop.set()
        sent = await task
        await watcher
        await producer.stop()
    return latencies, sent / (time.perf_counter() - started)


def latency_report(probes: list[Probe], reached: float, rate: int, worker_rate: float) -> None:
    def quantiles(values: list[float]) -> str:
        values = sorted(values)
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        return f"p50 {statistics.median(values) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"

    print(
        f"event-to-gauge latency with background traffic at {reached:,.0f} events/s "
        f"(asked {rate:,}; {reached / worker_rate:.2f} of (b)), {len(probes)} probes: "
        + quantiles([p.total for p in probes])
    )
    split = [p for p in probes if p.routed is not None]
    if split:
        print(
            f"  of which send -> committed on the by-user topic ({len(split)} seen): "
            + quantiles([p.routed for p in split if p.routed is not None])
            + "; from there -> gauge on /metrics: "
            + quantiles([p.total - p.routed for p in split if p.routed is not None])
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--communities", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--store", default="memory://")
    parser.add_argument(
        "--latency-rate", type=int, default=0, help="events/s; default half of (b)'s rate"
    )
    parser.add_argument("--probes", type=int, default=100, help="0: skip the latency step")
    parser.add_argument(
        "--probe-gap",
        type=float,
        default=0.1,
        help="seconds from a probe's gauge to the next probe (the probes scrape /metrics "
        f"every {PROBE_POLL_S} s while one is in flight)",
    )
    parser.add_argument("--baseline", help="a checkout to compare with (before/after)")
    parser.add_argument(
        "--before-state",
        metavar="COMMIT",
        help="baseline: this tree with COMMIT's streams/state.py and no audience counts",
    )
    parser.add_argument("--rounds", type=int, default=2, help="--baseline: runs per tree")
    parser.add_argument(
        "--keep-topics", action="store_true", help="keep the run's topics (deleted by default)"
    )
    args = parser.parse_args()
    if args.before_state:
        args.baseline = str(state_baseline(args.before_state))
    bootstrap = stack_bootstrap()
    tag = f"bench-{os.getpid()}-{int(time.time())}"
    topic, app_id = f"{tag}-interactions", tag

    now_ms = int(time.time() * 1000)
    payloads = make_payloads(args.events, args.users, args.communities, now_ms)
    size = statistics.mean(len(p) for p in payloads[:10000])
    produce_s = await produce_all(bootstrap, topic, payloads, args.partitions)
    print(
        f"produced {args.events:,} events of ~{size:.0f} B in {produce_s:.1f}s "
        f"({args.events / produce_s:,.0f}/s)"
    )

    raw_s = await raw_consume(bootstrap, topic, args.events)
    raw_rate = args.events / raw_s
    print(f"(a) raw aiokafka consumer: {raw_rate:,.0f} events/s")
    records = len(
        {(d["platform"], d["community"], d["user_id"]) for d in map(orjson.loads, payloads)}
    )
    if args.baseline:
        try:
            await compare(bootstrap, topic, tag, args, records)
        finally:
            if args.before_state:
                shutil.rmtree(Path(args.baseline).parent, ignore_errors=True)
        await drop_run_topics(bootstrap, tag, args.keep_topics)
        return

    run, worker = await run_worker(bootstrap, topic, app_id, args, REPO)
    try:
        worker_rate = run.events_per_s
        print(
            f"(b) worker end to end ({args.store}): {worker_rate:,.0f} events/s; "
            f"ratio to raw consumer {worker_rate / raw_rate:.3f}; "
            f"{run.cpu_us_per_event:.1f} µs worker CPU per event; "
            f"peak RSS {run.peak_rss_mib:.0f} MiB"
        )
        per_peak = (run.peak_rss_mib - run.idle_rss_mib) * 2**20 / records
        per_settled = (run.settled_rss_mib - run.idle_rss_mib) * 2**20 / records
        print(
            f"memory: idle {run.idle_rss_mib:.0f} MiB, peak {run.peak_rss_mib:.0f} MiB, "
            f"settled {run.settled_rss_mib:.0f} MiB; per stored record ({records:,}): "
            f"{per_peak:.0f} B at the peak, {per_settled:.0f} B settled"
        )
        if args.probes > 0:  # else throughput only
            rate = args.latency_rate or int(worker_rate / 2)
            pairs = sorted(
                {(d["community"], d["user_id"]) for d in map(orjson.loads, payloads[:200_000])}
            )
            del payloads
            lat, reached = await latency_probes(
                bootstrap, topic, worker, rate, args.probes, pairs, app_id, args.probe_gap
            )
            latency_report(lat, reached, rate, worker_rate)
    finally:
        stop_and_clean(worker)
    await drop_run_topics(bootstrap, tag, args.keep_topics)


async def drop_run_topics(bootstrap: str, tag: str, keep: bool) -> None:
    """After a run that ended well (a failed one keeps its topics for reading, like its
    worker's data and log)."""
    if keep:
        print(f"topics kept: {tag}-*")
        return
    try:
        dropped = await drop_topics(bootstrap, f"{tag}-")
    except Exception as exc:  # noqa: BLE001 - the figures are printed already
        print(f"could not delete the run's topics {tag}-*: {exc!r}")
        return
    print(f"deleted the run's {len(dropped)} topics ({tag}-*; --keep-topics keeps them)")


if __name__ == "__main__":
    asyncio.run(main())
