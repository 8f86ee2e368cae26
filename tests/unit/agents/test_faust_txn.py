"""The seek gate: no by-user record reaches the state agent while a recovery
completes, and the stream restarts from the committed offsets with no batch in
flight (issue 11: records queued during Faust's seek were cleared by its flow
control, and their copies fetched again dropped as already read)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import Consumer
from faust.types import TP

from agents.faust_txn import SeekGate, TransactionalConsumer

BY_USER, CHANGELOG = "app-events-by-user", "app-users-changelog"


def test_stream_records_wait_while_held_and_until_the_seek_after_release() -> None:
    gate = SeekGate()
    assert gate.passes(is_changelog=False)
    gate.hold()
    assert not gate.passes(is_changelog=False)
    assert gate.passes(is_changelog=True)  # standby replicas go on
    assert not gate.take_reseek()  # never while held
    gate.release()
    # the rest of a batch fetched before the seek is held back too...
    assert not gate.passes(is_changelog=False)
    # ...until the consumer sought the committed offsets once more
    assert gate.take_reseek()
    assert not gate.take_reseek()
    assert gate.passes(is_changelog=False)


def test_a_held_back_record_outside_a_recovery_asks_for_a_seek() -> None:
    gate = SeekGate()
    gate.hold()
    gate.release()
    assert gate.take_reseek()
    gate.reseek = True  # e.g. a failed seek: records wait for the next one
    assert not gate.passes(is_changelog=False)
    assert gate.take_reseek()


def _consumer(log: list[Any]) -> TransactionalConsumer:
    consumer = object.__new__(TransactionalConsumer)
    consumer.app = SimpleNamespace(tables=SimpleNamespace(changelog_topics={CHANGELOG}))  # type: ignore[assignment]
    consumer.assignment = lambda: {TP(BY_USER, 0)}  # type: ignore[method-assign]

    async def perform_seek() -> None:
        log.append("seek")

    consumer.perform_seek = perform_seek  # type: ignore[method-assign]
    return consumer


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What Faust's getmany would hand on, in order (the test fills it)."""
    records: list[Any] = []

    async def getmany(self: Any, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        while records:
            record = records.pop(0)
            if callable(record):  # something happening between two records
                record()
            else:
                yield record

    monkeypatch.setattr(Consumer, "getmany", getmany)
    return records


async def _drain(consumer: TransactionalConsumer) -> list[tuple[str, int]]:
    return [(tp.topic, offset) async for tp, offset in consumer.getmany(1.0)]


async def test_getmany_seeks_again_before_handing_on_stream_records(
    fetched: list[Any],
) -> None:
    """The zombie test's trace: records 16–21 of one fetch arrive while the recovery
    completes, 24 after it; none is handed on before the seek, after which the
    partition starts again from its committed offset."""
    log: list[Any] = []
    consumer = _consumer(log)
    gate = consumer.seek_gate()
    fetched += [(TP(BY_USER, 0), 8), (TP(BY_USER, 0), 9)]
    assert await _drain(consumer) == [(BY_USER, 8), (BY_USER, 9)]
    gate.hold()  # Faust resumes the partitions, seeks, clears its queues
    fetched += [(TP(BY_USER, 0), 16), (TP(CHANGELOG, 1), 500), (TP(BY_USER, 0), 17)]
    fetched += [gate.release, (TP(BY_USER, 0), 20), (TP(BY_USER, 0), 24)]  # the fetch goes on
    assert await _drain(consumer) == [(CHANGELOG, 500)]
    assert log == []
    fetched += [(TP(BY_USER, 0), 16), (TP(BY_USER, 0), 17), (TP(BY_USER, 0), 20)]
    assert await _drain(consumer) == [(BY_USER, 16), (BY_USER, 17), (BY_USER, 20)]
    assert log == ["seek"]  # before that fetch, with no batch in flight
    fetched += [(TP(BY_USER, 0), 24)]
    assert await _drain(consumer) == [(BY_USER, 24)]
    assert log == ["seek"]


async def test_the_recovery_first_catches_the_stores_up_within_half_its_step_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CommittedRecovery._build_highwaters (active): each table's catch_up_store runs
    before any offset is read, with half of broker_request_timeout (Faust stops the
    whole recovery when that step outlasts it); the standby step catches nothing up."""
    import agents.faust_txn as faust_txn
    from agents.faust_txn import CommittedRecovery

    order: list[Any] = []
    stored = {TP("cl", 0): None, TP("cl", 1): 7}

    class Table:
        async def catch_up_store(self, budget_s: float) -> None:
            order.append(("catch-up", budget_s))
            stored.update({TP("cl", 0): 41, TP("cl", 1): 9})

        def persisted_offset(self, tp: TP) -> int | None:
            return stored[tp]

    async def offsets(bootstrap: str, tps: Any) -> dict:
        order.append("highwaters")
        return {}

    monkeypatch.setattr(faust_txn, "last_data_offsets", offsets)
    monkeypatch.setattr(faust_txn, "bootstrap_of", lambda app: "127.0.0.1:1")
    table = Table()
    tps = {TP("cl", 0), TP("cl", 1), TP("other", 0)}
    recovery = SimpleNamespace(
        app=SimpleNamespace(conf=SimpleNamespace(broker_request_timeout=90.0)),
        tables={"users": table, "other": object()},
        tp_to_table={TP("cl", 0): table, TP("cl", 1): table},
        # what Faust's add_active took when the rebalance began, before the catch-up
        active_offsets={TP("cl", 0): None, TP("cl", 1): 7, TP("other", 0): 3},
    )
    recovery._offsets_after_catch_up = lambda tps: CommittedRecovery._offsets_after_catch_up(
        recovery,  # type: ignore[arg-type]
        tps,
    )
    found: dict = {"stale": 1}
    await CommittedRecovery._build_highwaters(recovery, None, tps, found, "active")  # type: ignore[arg-type]
    assert order == [("catch-up", 45.0), "highwaters"] and found == {}
    # Faust's recovery starts from the caught-up offsets, not the ones taken before
    assert recovery.active_offsets == {TP("cl", 0): 41, TP("cl", 1): 9, TP("other", 0): 3}
    await CommittedRecovery._build_highwaters(recovery, None, tps, found, "standby")  # type: ignore[arg-type]
    assert order[2:] == ["highwaters"]


async def test_a_stream_partition_without_a_committed_offset_is_read_from_its_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After the seek to the committed offsets, a by-user partition with none (its
    first commit had not happened when the rebalance came) starts again at 0:
    aiokafka's seek_to_committed leaves it where its fetch was, past the events the
    rebuilt mirror no longer has. Changelog partitions are the recovery's."""
    from collections import defaultdict

    seeks: list[tuple[TP, int]] = []

    async def faust_seek(self: Any) -> None:  # what Faust's perform_seek leaves behind
        self._committed_offset.update({TP(BY_USER, 1): 512})

    monkeypatch.setattr(Consumer, "perform_seek", faust_seek)
    consumer = object.__new__(TransactionalConsumer)
    consumer.app = SimpleNamespace(tables=SimpleNamespace(changelog_topics={CHANGELOG}))  # type: ignore[assignment]
    consumer.assignment = lambda: {TP(BY_USER, 0), TP(BY_USER, 1), TP(CHANGELOG, 0)}  # type: ignore[method-assign]
    consumer._committed_offset = defaultdict(lambda: None)

    async def seek(tp: TP, offset: int) -> None:
        seeks.append((tp, offset))

    consumer.seek = seek  # type: ignore[method-assign,assignment]
    await consumer.perform_seek()
    assert seeks == [(TP(BY_USER, 0), 0)]


async def test_a_rejoin_request_goes_to_the_consumer_thread() -> None:
    """A partition given up between assignments (agents.producer) asks the state
    stage's group to rebalance; aiokafka's consumer lives in Faust's consumer thread,
    so the request runs there (call_thread), and a failure is logged, not lost."""
    import asyncio

    asked: list[str] = []

    class Thread:
        async def call_thread(self, fun: Any) -> Any:
            asked.append("in the thread")
            return await fun()

        def _ensure_consumer(self) -> Any:
            return SimpleNamespace(
                _coordinator=SimpleNamespace(request_rejoin=lambda: asked.append("rejoin"))
            )

    consumer = TransactionalConsumer.__new__(TransactionalConsumer)
    consumer._thread = Thread()  # type: ignore[assignment]
    consumer.request_rejoin()
    for _ in range(3):
        await asyncio.sleep(0)
    assert asked == ["in the thread", "rejoin"]
