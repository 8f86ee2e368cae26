"""Hostile input on the real stack: nothing a producer sends stops or blinds the worker.

Each test runs a real worker subprocess (event clock), sends valid events mixed with
hostile payloads — with every codec a Kafka producer may use — and then checks that
the worker is alive, that every message is either counted as valid or in the DLQ
(valid + DLQ = sent), and that the gauges equal the oracle of the valid events.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bench.workers import Worker, gauges, read_all, wait_caught_up
from streams.durations import parse_windows
from streams.events import DEFAULT_ACTIVE_TYPES, Event
from tests.hostile import CODECS, make_fuzz, oversized
from tests.oracle import event_clock, expected_active, expected_followers

pytestmark = pytest.mark.integration

WINDOWS = parse_windows("5m,1h,1d,7d,30d")


async def produce_with_codecs(
    bootstrap: str, topic: str, payloads: list[tuple[bytes, str | None]], partitions: int = 4
) -> None:
    """One producer per codec; records round-robin over the partitions. The request
    limit is raised so records larger than the broker allows uncompressed can go out
    compressed (as a real producer's may)."""
    from aiokafka import AIOKafkaProducer

    from agents.kafka_admin import ensure_topics

    await ensure_topics(bootstrap, {topic: partitions})
    by_codec: dict[str | None, list[tuple[int, bytes]]] = {codec: [] for codec in CODECS}
    for i, (value, codec) in enumerate(payloads):
        by_codec[codec].append((i % partitions, value))
    for codec, records in by_codec.items():
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            compression_type=codec,
            linger_ms=5,
            acks="all",
            enable_idempotence=True,  # a retried send must not duplicate a record
            max_request_size=8 * 1024 * 1024,
            max_batch_size=256 * 1024,  # 16 times fewer round trips than the default
        )
        await producer.start()
        try:
            futures = [await producer.send(topic, v, partition=p) for p, v in records]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()


def start(
    stack: Any, tmp_path: Path, app_id: str, topic: str, name: str = "w", **env: str
) -> Worker:
    settings = {
        "EM_COMMUNITY_CAP": "100000",  # the gauges are compared name by name
        "EM_PLATFORM_CAP": "100000",
        "EM_READ_MODEL": "off",
        **env,
    }
    worker = Worker(
        stack.kafka_bootstrap, app_id, topic, f"{topic}.dlq", tmp_path / name, **settings
    ).start()
    worker.wait_metrics()
    return worker


def assert_exact(worker: Worker, valid: list[Event], sent: int, dlq: list[Any]) -> None:
    """valid + DLQ = sent (each input offset dead-lettered once), the counters agree,
    and the gauges equal the oracle of the valid events."""
    samples = worker.scrape()
    counted = int(sum(samples["engagement_events_total"].values()))
    invalid = int(sum(samples["engagement_invalid_events_total"].values()))
    sources = {(h["source_partition"], h["source_offset"]) for h in (dict(r.headers) for r in dlq)}
    assert len(sources) == len(dlq)
    assert counted == len(valid)
    assert invalid == len(dlq)
    assert counted + len(dlq) == sent
    now_ms = event_clock(valid)
    assert now_ms is not None
    got_active, got_followers = gauges(samples)
    want = expected_active(valid, now_ms, WINDOWS, DEFAULT_ACTIVE_TYPES)
    # a series whose values are all 0 may be gone: expiry deletes records older than
    # the longest window (an unfollow of 200 days ago leaves nothing to count)
    assert {k: v for k, v in got_active.items() if any(v.values())} == {
        k: v for k, v in want.items() if any(v.values())
    }
    want_followers = expected_followers(valid)
    assert {k: n for k, n in got_followers.items() if n} == {
        k: n for k, n in want_followers.items() if n
    }
    assert len(want_followers) > 10 and len(want) > 20  # the oracle is not trivially empty


async def test_every_codec_and_oversized_records(stack: Any, tmp_path: Path) -> None:
    """Regressions: snappy/lz4/zstd input crashed the ingest stage (no codec library);
    a record compressed below the broker's limit but larger than the producer's
    request limit decompressed, or one within 200 bytes of the broker's limit, made
    the DLQ send fail, and the poll was retried forever; a ``type`` nested 1,000 deep
    killed the worker."""
    app_id, topic = stack.unique_name("hostile"), stack.unique_name("hostile-in")
    now_ms = int(time.time() * 1000)
    fuzz = make_fuzz(seed=3, hostile=0, valid=2000, now_ms=now_ms)
    payloads = list(fuzz.payloads)
    nested = payloads[0][0].replace(b'"type":"', b'"type":' + b"[" * 1000 + b"]" * 1000 + b',"x":"')
    big = oversized(now_ms)
    payloads += [(nested, codec) for codec in CODECS]
    payloads += [(value, codec) for value, codec, _ in big]
    await produce_with_codecs(stack.kafka_bootstrap, topic, payloads)
    worker = start(stack, tmp_path, app_id, topic)
    try:
        await wait_caught_up(stack.kafka_bootstrap, app_id, topic, worker)
        dlq = await read_all(stack.kafka_bootstrap, f"{topic}.dlq")
        assert worker.alive()
        assert_exact(worker, fuzz.valid, len(payloads), dlq)
        headers = [dict(r.headers) for r in dlq]
        assert Counter(h["reason"] for h in headers) == {b"bad_type": 5, b"too_large": 3}
        sizes = sorted(int(h["original_size"]) for h in headers if h["reason"] == b"too_large")
        assert sizes == sorted(size for _, _, size in big)
        assert all(len(r.value or b"") <= 4096 for r in dlq)
        assert {h["source_topic"] for h in headers} == {topic.encode()}
    finally:
        worker.stop()


async def test_fuzz_through_the_worker(stack: Any, tmp_path: Path) -> None:
    """>= 100,000 hostile payloads mixed with valid events, with every codec."""
    app_id, topic = stack.unique_name("fuzz"), stack.unique_name("fuzz-in")
    now_ms = int(time.time() * 1000)
    fuzz = make_fuzz(seed=11, hostile=100_000, valid=20_000, now_ms=now_ms)
    payloads = fuzz.payloads + [(value, codec) for value, codec, _ in oversized(now_ms)]
    assert sum(fuzz.reasons.values()) >= 95_000  # a few drop out as clock-dependent
    await produce_with_codecs(stack.kafka_bootstrap, topic, payloads)
    # The ingest stage lets the event loop through while it judges a poll (a poll
    # of 20,000 hostile messages held it for 20 s at load 12, and heartbeats
    # waited). One worker needs no fast rebalances, so a long session costs nothing
    # and keeps the membership through any stall of a loaded machine: a lost one
    # rereads a poll, whose events the counters would count twice.
    slow = {"EM_SESSION_TIMEOUT": "45s", "EM_REBALANCE_TIMEOUT": "45s"}
    worker = start(stack, tmp_path, app_id, topic, EM_HEARTBEAT_INTERVAL="3s", **slow)
    try:
        # ~2 min at load 12; fails once 2 min pass with no commit moving
        await wait_caught_up(stack.kafka_bootstrap, app_id, topic, worker, timeout=600, stall=120)
        dlq = await read_all(stack.kafka_bootstrap, f"{topic}.dlq")
        assert worker.alive()
        assert_exact(worker, fuzz.valid, len(payloads), dlq)
        want = Counter(fuzz.reasons) + Counter({"too_large": 3})
        got = Counter(dict(r.headers)["reason"].decode() for r in dlq)
        assert got == want
    finally:
        worker.stop()


def by_label(workers: list[Worker]) -> tuple[list[set[str]], dict[tuple[str, str], int]]:
    """(each worker's community labels, {(community label, window): summed users})."""
    label_sets: list[set[str]] = []
    summed: Counter[tuple[str, str]] = Counter()
    for worker in workers:
        active, _ = gauges(worker.scrape())
        label_sets.append({community for _, community in active})
        for (_, community), counts in active.items():
            for window, n in counts.items():
                summed[(community, window)] += n
    return label_sets, dict(summed)


async def test_two_workers_agree_on_the_capped_labels_whatever_junk_arrives(
    stack: Any, tmp_path: Path
) -> None:
    """Regression: the cap admitted the first N names each process saw, so junk sent
    after a restart blinded the real communities, and two workers could disagree.
    Now both rank the shared Redis snapshots: the 5 most active keep their series on
    both workers, junk is _other, and each label's sum over the workers is exact."""
    import orjson

    from streams.events import format_ts

    app_id, topic = stack.unique_name("labels"), stack.unique_name("labels-in")
    ts = format_ts(int(time.time() * 1000) - 5000)

    def event(community: str, user: str) -> bytes:
        fields = {"event_id": user, "ts": ts, "platform": "x", "user_id": user, "type": "like"}
        return orjson.dumps({**fields, "community": community})

    real = [(f"brand-{c}", f"u-{c}-{i}") for c in range(8) for i in range(10 + 10 * c)]
    junk = [(f"junk-{j:03d}", f"j-{j}") for j in range(300)]
    # junk first, as after a restart: the first names a process sees are junk
    await produce_with_codecs(stack.kafka_bootstrap, topic, [(event(*e), None) for e in junk])
    workers = [
        start(stack, tmp_path, app_id, topic, f"w{n}", EM_COMMUNITY_CAP="5", EM_READ_MODEL="on")
        for n in range(2)
    ]
    try:
        await wait_caught_up(stack.kafka_bootstrap, app_id, topic, workers[0])
        await produce_with_codecs(stack.kafka_bootstrap, topic, [(event(*e), None) for e in real])
        await wait_caught_up(stack.kafka_bootstrap, app_id, topic, workers[0])
        top = {f"brand-{c}" for c in range(3, 8)}
        deadline = time.monotonic() + 90
        while True:
            label_sets, summed = by_label(workers)
            if all(labels == top | {"_other", "*"} for labels in label_sets):
                break
            assert time.monotonic() < deadline, label_sets
            await asyncio.sleep(1)
        users = Counter(community for community, _ in real + junk)
        want = {(c, "30d"): users[c] for c in top}
        want[("_other", "30d")] = sum(n for c, n in users.items() if c not in top)
        want[("*", "30d")] = len(real) + len(junk)
        assert {k: v for k, v in summed.items() if k[1] == "30d"} == want
    finally:
        for worker in workers:
            worker.stop()


#: the bomb's codec; "snappy-raw" is snappy without the xerial framing, as librdkafka
#: sends it (aiokafka and the Java client frame it)
BOMB_CODECS = ["gzip", "snappy", "snappy-raw", "lz4", "zstd"]


async def produce_in_steps(
    bootstrap: str, topic: str, codec: str, steps: list[list[tuple[int, bytes]]]
) -> list[list[Any]]:
    """Each step's (partition, value) records sent and acknowledged before the next
    step's, with ``codec``; their record metadata (offsets), step by step."""
    from aiokafka import AIOKafkaProducer

    from agents.kafka_admin import ensure_topics

    await ensure_topics(bootstrap, {topic: 4})
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        compression_type=codec.removesuffix("-raw"),
        linger_ms=5,
        acks="all",
        enable_idempotence=True,
        max_request_size=16 * 1024 * 1024,  # the bombs are large before compression
        max_batch_size=16 * 1024 * 1024,  # several bombs in one batch
    )
    await producer.start()
    try:
        sent = []
        for step in steps:
            futures = [await producer.send(topic, v, partition=p) for p, v in step]
            sent.append(list(await asyncio.gather(*futures)))
        return sent
    finally:
        await producer.stop()


def send_raw_snappy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process's producers write snappy without the xerial framing."""
    import cramjam
    from aiokafka.record import default_records

    def raw(data: Any) -> bytes:
        return bytes(cramjam.snappy.compress_raw(bytes(data)))

    builder_module = sys.modules[default_records.DefaultRecordBatchBuilder.__module__]
    for module in {default_records, builder_module}:  # the C builder reads its own globals
        monkeypatch.setattr(module, "snappy_encode", raw)


@pytest.mark.parametrize("codec", BOMB_CODECS)
async def test_a_bomb_of_each_codec_is_dead_lettered_and_the_partition_goes_on(
    stack: Any, tmp_path: Path, codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a batch is decompressed whole, and only gzip was bounded: a snappy,
    lz4 or zstd record of a few KiB could take any amount of memory (raw snappy's
    declared length is allocated at once). Now a batch beyond EM_MAX_BATCH_BYTES of
    any codec is dead-lettered unread, offset by offset (a batch of three bombs in
    one step; reason too_large, exception DecompressionBomb), the worker goes on,
    and the valid events before and after it, in the same partitions and compressed
    with the same codec, are counted exactly."""
    if codec == "snappy-raw":
        send_raw_snappy(monkeypatch)
    app_id, topic = stack.unique_name("bomb"), stack.unique_name("bomb-in")
    # 625 events a partition before the bombs: more than the probe reads at a time
    fuzz = make_fuzz(seed=5, hostile=0, valid=5000, now_ms=int(time.time() * 1000))
    values = [value for value, _ in fuzz.payloads]
    pad = b',"pad":"' + b"0" * 3_000_000 + b'"}'
    # 3 MB each, a few KiB compressed: three in one batch in partition 0, one in 1
    bombs = [(p, values[i][:-1] + pad) for i, p in enumerate((0, 0, 0, 1))]
    half = len(values) // 2
    steps = [values[:half], None, values[half:]]
    _, sent_bombs, _ = await produce_in_steps(
        stack.kafka_bootstrap,
        topic,
        codec,
        [bombs if step is None else [(i % 4, v) for i, v in enumerate(step)] for step in steps],
    )
    worker = start(stack, tmp_path, app_id, topic, EM_MAX_BATCH_BYTES=str(2 * 1024 * 1024))
    try:
        await wait_caught_up(stack.kafka_bootstrap, app_id, topic, worker)
        dlq = await read_all(stack.kafka_bootstrap, f"{topic}.dlq")
        assert worker.alive()
        assert_exact(worker, fuzz.valid, len(values) + len(bombs), dlq)
        headers = [dict(r.headers) for r in dlq]
        assert {(h["source_partition"], h["source_offset"]) for h in headers} == {
            (str(m.partition).encode(), str(m.offset).encode()) for m in sent_bombs
        }
        assert {
            (h["reason"], h["exception"], h["original_size"], r.value)
            for h, r in zip(headers, dlq, strict=True)
        } == {(b"too_large", b"DecompressionBomb", b"-1", b"")}
        name = codec.removesuffix("-raw").encode()
        assert all(h["detail"].startswith(b"a " + name + b" batch of ") for h in headers)
        by_reason: dict[str, float] = {}  # summed over the input partitions
        for labels, n in worker.scrape()["engagement_invalid_events_total"].items():
            reason = dict(labels)["reason"]
            by_reason[reason] = by_reason.get(reason, 0) + n
        assert {k: v for k, v in by_reason.items() if v} == {"too_large": 4.0}
    finally:
        worker.stop()
