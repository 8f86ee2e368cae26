"""``engagement-monitor rebuild --from TIME``: recompute the state from a point in time.

The state is a pure function of the events the pipeline has read, so recomputing
it means: forget everything derived (the users table's changelog, the local RocksDB
copies of it, the by-user batches not applied yet) and read the input topic again
from the first offset whose timestamp is at or after TIME. Concretely:

* the ingest group's offsets on the input topic go to ``offsets_for_times(TIME)``
  (a partition with no record at or after TIME goes to its end offset);
* the state group (the Faust app id) skips to the end of the by-user topic, so
  batches derived from the old offsets are never applied twice;
* the changelog topic is deleted and recreated empty (compacted, same partitions).
  Recreating, rather than ``delete_records`` to the end, gives it a new topic id and
  starts its offsets at 0 again: a RocksDB copy that was *not* cleared (another
  host's data dir) is then recognised as stale by the worker's store check
  (agents/store_guard.py), discarded and recovered, instead of silently serving the
  stale records;
* the users table's RocksDB folders under this host's data dir are deleted.

Without ``--execute`` it only prints that plan. With it, it refuses while any
member is in either consumer group: offsets of a live group can't be moved, and a
running worker would write the old state back into the new changelog.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agents.kafka_security import client_kwargs, failure, start_or_close
from commands.sources import TopicSource, TsFormatter, parse_time_bound, spans_from_offsets
from streams import settings as settings_mod
from streams.topics import TABLE_NAME, by_user_topic, changelog_topic, ingest_group

SETTINGS = ("kafka_bootstrap_servers", "app_id", "input_topic", "datadir", "partitions")
#: Group states in which nobody consumes (Kafka's classic group protocol).
IDLE_STATES = frozenset({"Empty", "Dead"})


# The plan (pure) ---------------------------------------------------------------


@dataclass(frozen=True)
class OffsetMove:
    """One partition's committed offset now (None: never committed) and after."""

    partition: int
    committed: int | None
    target: int

    def describe(self) -> str:
        before = "none" if self.committed is None else str(self.committed)
        delta = "" if self.committed is None else f" ({self.target - self.committed:+d})"
        return f"partition {self.partition}: committed {before} -> {self.target}{delta}"


def plan_moves(
    partitions: Iterable[int],
    committed: dict[int, int],
    at_time: dict[int, int | None],
    end: dict[int, int],
) -> list[OffsetMove]:
    """Target = the first offset with timestamp >= TIME (``at_time``, from
    ``offsets_for_times``), or the end offset where no record is that new."""
    parts = sorted(partitions)
    spans = spans_from_offsets(parts, dict.fromkeys(parts, 0), end, at_time, {})
    return [OffsetMove(s.partition, committed.get(s.partition), s.start) for s in spans]


def to_end(
    partitions: Iterable[int], committed: dict[int, int], end: dict[int, int]
) -> list[OffsetMove]:
    """Moves of every partition to its end offset (the by-user topic)."""
    return [OffsetMove(p, committed.get(p), end[p]) for p in sorted(partitions)]


def table_store_paths(datadir: Path, table: str = TABLE_NAME) -> list[Path]:
    """The table's RocksDB folders under a worker data dir, as Faust lays them out:
    ``<datadir>/v<app version>/tables/<table>-<partition>.db`` and
    ``<table>-backups``. Nothing else in the data dir is touched."""
    found: list[Path] = []
    for tables in sorted(datadir.glob("v*/tables")):
        found.extend(sorted(tables.glob(f"{table}-*.db")))
        backups = tables / f"{table}-backups"
        if backups.exists():
            found.append(backups)
    return found


@dataclass(frozen=True)
class GroupState:
    """A consumer group as DescribeGroups reports it."""

    group: str
    state: str
    members: tuple[str, ...] = ()  # "client_id (member_id) on host"

    @property
    def busy(self) -> bool:
        return self.state not in IDLE_STATES or bool(self.members)


def refusal(groups: Iterable[GroupState]) -> str | None:
    """The message that stops ``--execute``, or None when every group is idle."""
    busy = [g for g in groups if g.busy]
    if not busy:
        return None
    lines = ["rebuild: refusing to execute: workers are still members of the consumer groups"]
    for g in busy:
        lines.append(f"  group {g.group} (state {g.state}):")
        lines.extend(f"    {member}" for member in g.members or ("(no members listed)",))
    lines.append(
        "Stop every worker of this app id (members leave at once on a clean stop, "
        "else after the session timeout) and run the command again."
    )
    return "\n".join(lines)


@dataclass
class Plan:
    """What ``--execute`` changes; ``render()`` is the dry run's output."""

    time_ms: int
    input_topic: str
    ingest_group: str
    ingest_moves: list[OffsetMove]
    state_group: str
    by_user_topic: str
    by_user_moves: list[OffsetMove]
    changelog: str
    changelog_partitions: int  # 0: the topic does not exist
    changelog_records: int
    stores: list[Path] = field(default_factory=list)
    datadir: str = ""

    def render(self) -> str:
        lines = [f"rebuild from {TsFormatter()(self.time_ms)} ({self.time_ms} ms)", ""]
        lines.append(
            f"1. input topic {self.input_topic}: offsets of group {self.ingest_group} "
            "-> first offset with timestamp >= TIME (end offset if none)"
        )
        lines.extend(f"   {m.describe()}" for m in self.ingest_moves)
        lines.append(
            f"2. by-user topic {self.by_user_topic}: offsets of group "
            f"{self.state_group} -> end offsets (stale batches are skipped)"
        )
        lines.extend(f"   {m.describe()}" for m in self.by_user_moves)
        if self.changelog_partitions:
            lines.append(
                f"3. changelog {self.changelog}: delete and recreate empty "
                f"(compacted, {self.changelog_partitions} partitions); "
                f"{self.changelog_records} record offsets dropped"
            )
        else:
            lines.append(f"3. changelog {self.changelog}: does not exist (nothing to clear)")
        if self.stores:
            lines.append(f"4. local table store under {self.datadir}: delete")
            lines.extend(f"   {path}" for path in self.stores)
        else:
            lines.append(f"4. local table store under {self.datadir}: none found")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["stores"] = [str(p) for p in self.stores]
        return data


# Kafka -------------------------------------------------------------------------


def _describe_groups_request() -> Any:
    """DescribeGroups capped at v2. aiokafka 0.14 pairs the v3 request with the v2
    response schema (no ``authorized_operations``), so decoding a Kafka 4 broker's
    v3 answer fails with "Buffer underrun"; v0–v2 carry everything needed here."""
    from aiokafka.protocol.admin import (
        DescribeGroupsRequest,
        DescribeGroupsRequest_v0,
        DescribeGroupsRequest_v1,
        DescribeGroupsRequest_v2,
    )

    class DescribeGroupsUpToV2(DescribeGroupsRequest):
        pass

    DescribeGroupsUpToV2._CLASSES = (  # type: ignore[assignment]
        DescribeGroupsRequest_v0,
        DescribeGroupsRequest_v1,
        DescribeGroupsRequest_v2,
    )
    return DescribeGroupsUpToV2


async def describe_groups(admin: Any, groups: Iterable[str]) -> list[GroupState]:
    request = _describe_groups_request()
    out = []
    for group in groups:
        node = await admin.find_coordinator(group)
        response = await admin._send_request(request([group]), node)  # noqa: SLF001
        for _error, name, state, _ptype, _protocol, members in response.groups:
            out.append(
                GroupState(
                    name,
                    state,
                    tuple(
                        f"{client_id} ({member_id}) on {host}"
                        for member_id, client_id, host, _meta, _assignment in members
                    ),
                )
            )
    return out


async def _committed(admin: Any, group: str, topic: str) -> dict[int, int]:
    offsets = await admin.list_consumer_group_offsets(group)
    return {
        tp.partition: meta.offset
        for tp, meta in offsets.items()
        if tp.topic == topic and meta.offset >= 0
    }


async def _topic_offsets(
    consumer: Any, topic: str, time_ms: int | None
) -> tuple[dict[int, int], dict[int, int], dict[int, int | None]]:
    """(beginning, end, offsets_for_times(time_ms)) per partition; empty if no topic."""
    from aiokafka import TopicPartition

    partitions = sorted(await consumer._client._wait_on_metadata(topic) or [])  # noqa: SLF001
    tps = [TopicPartition(topic, p) for p in partitions]
    if not tps:
        return {}, {}, {}
    begin = {tp.partition: o for tp, o in (await consumer.beginning_offsets(tps)).items()}
    end = {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
    at = await TopicSource._offsets_at(consumer, tps, time_ms)  # noqa: SLF001
    return begin, end, at


async def make_plan(settings: Any, time_ms: int) -> Plan:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    bootstrap = settings.kafka_bootstrap_servers
    app_id = settings.app_id
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs())
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **client_kwargs()
    )
    try:  # started inside: a failed start (e.g. a wrong password) still closes both
        await admin.start()
        await consumer.start()
        topics = set(await admin.list_topics())
        if settings.input_topic not in topics:
            raise ValueError(f"input topic {settings.input_topic!r} does not exist")
        _b, end, at = await _topic_offsets(consumer, settings.input_topic, time_ms)
        ingest = plan_moves(
            end, await _committed(admin, ingest_group(app_id), settings.input_topic), at, end
        )
        by_user = by_user_topic(app_id)
        by_user_moves: list[OffsetMove] = []
        if by_user in topics:
            _b, by_user_end, _at = await _topic_offsets(consumer, by_user, None)
            by_user_moves = to_end(
                by_user_end, await _committed(admin, app_id, by_user), by_user_end
            )
        changelog = changelog_topic(app_id)
        begin: dict[int, int] = {}
        ends: dict[int, int] = {}
        if changelog in topics:
            begin, ends, _at = await _topic_offsets(consumer, changelog, None)
        return Plan(
            time_ms,
            settings.input_topic,
            ingest_group(app_id),
            ingest,
            app_id,
            by_user,
            by_user_moves,
            changelog,
            len(ends),
            sum(ends[p] - begin[p] for p in ends),
            table_store_paths(Path(settings.app_datadir)),
            settings.app_datadir,
        )
    finally:
        await consumer.stop()
        await admin.close()


async def commit_offsets(bootstrap: str, group: str, topic: str, moves: list[OffsetMove]) -> None:
    """Commit as a standalone consumer of the group (no membership). The broker refuses
    such a commit when the group has live members (a second guard, after the
    membership check)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    if not moves:
        return
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, **client_kwargs()
    )
    await start_or_close(consumer)
    try:
        tps = {TopicPartition(topic, m.partition): m.target for m in moves}
        consumer.assign(list(tps))
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in tps.items()})
    finally:
        await consumer.stop()


async def recreate_topic(admin: Any, name: str, partitions: int, timeout: float = 60) -> None:
    """Delete the topic, wait until it is gone, create it again compacted and empty."""
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    await admin.delete_topics([name])
    deadline = time.monotonic() + timeout
    while True:
        if name not in set(await admin.list_topics()):
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=partitions,
                            replication_factor=1,
                            topic_configs={"cleanup.policy": "compact"},
                        )
                    ]
                )
                return
            except TopicAlreadyExistsError:  # still being deleted
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {name} was not deleted within {timeout:.0f}s")
        await asyncio.sleep(0.5)


async def execute(settings: Any, plan: Plan) -> None:
    """Apply the plan, in an order that is safe to repeat if it stops half-way."""
    from aiokafka.admin import AIOKafkaAdminClient

    bootstrap = settings.kafka_bootstrap_servers
    await commit_offsets(bootstrap, plan.state_group, plan.by_user_topic, plan.by_user_moves)
    await commit_offsets(bootstrap, plan.ingest_group, plan.input_topic, plan.ingest_moves)
    if plan.changelog_partitions:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs())
        await admin.start()
        try:
            await recreate_topic(admin, plan.changelog, plan.changelog_partitions)
        finally:
            await admin.close()
    for path in plan.stores:
        shutil.rmtree(path, ignore_errors=False)


async def group_refusal(settings: Any) -> str | None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, **client_kwargs()
    )
    await admin.start()
    try:
        groups = await describe_groups(admin, (ingest_group(settings.app_id), settings.app_id))
    finally:
        await admin.close()
    return refusal(groups)


# CLI ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from",
        dest="start",
        metavar="TIME",
        required=True,
        help="recompute from this time: RFC 3339, epoch s/ms, -2h, now",
    )
    parser.add_argument(
        "--execute", action="store_true", help="do it (default: print the plan and change nothing)"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    settings_mod.add_arguments(parser, names=SETTINGS)


async def _run(args: argparse.Namespace) -> int:
    import json

    conf = settings_mod.from_args(args)
    time_ms = parse_time_bound(args.start, int(time.time() * 1000))
    if args.execute:
        message = await group_refusal(conf)
        if message:
            print(message, file=sys.stderr)
            return 3
    plan = await make_plan(conf, time_ms)
    print(json.dumps(plan.to_json(), indent=2) if args.json else plan.render())
    if not args.execute:
        print("\ndry run: nothing changed; add --execute to do it", file=sys.stderr)
        return 0
    await execute(conf, plan)
    print(
        "\nrebuild: done; start the workers: they read the input again from the offsets above",
        file=sys.stderr,
    )
    return 0


def run(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    try:
        return asyncio.run(_run(args))
    except KafkaError as exc:
        print(f"rebuild: Kafka at {args.kafka_bootstrap_servers}: {failure(exc)}", file=sys.stderr)
        return 1
