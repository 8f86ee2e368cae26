"""rebuild's pure parts: offset targets, the refusal message, the store folders."""

from __future__ import annotations

from pathlib import Path

from commands.rebuild import (
    GroupState,
    OffsetMove,
    Plan,
    plan_moves,
    refusal,
    table_store_paths,
    to_end,
)


def test_targets_are_the_time_offsets_or_the_end() -> None:
    moves = plan_moves(
        [2, 0, 1],
        committed={0: 50, 1: 7},
        at_time={0: 12, 1: None, 2: 0},
        end={0: 50, 1: 9, 2: 3},
    )
    assert moves == [OffsetMove(0, 50, 12), OffsetMove(1, 7, 9), OffsetMove(2, None, 0)]
    assert moves[0].describe() == "partition 0: committed 50 -> 12 (-38)"
    assert moves[2].describe() == "partition 2: committed none -> 0"


def test_by_user_offsets_go_to_the_end() -> None:
    assert to_end([1, 0], {0: 4}, {0: 5, 1: 2}) == [OffsetMove(0, 4, 5), OffsetMove(1, None, 2)]


def test_refusal_names_busy_groups_and_members() -> None:
    idle = [GroupState("app-ingest", "Empty"), GroupState("app", "Dead")]
    assert refusal(idle) is None
    busy = [
        GroupState("app-ingest", "Empty"),
        GroupState("app", "Stable", ("faust-0.15.3 (m-1) on /127.0.0.1",)),
        GroupState("x", "PreparingRebalance"),
    ]
    message = refusal(busy)
    assert message is not None
    assert "group app (state Stable)" in message and "m-1" in message
    assert "group x (state PreparingRebalance)" in message
    assert "app-ingest" not in message
    # members listed while the state claims Empty still count as busy
    assert refusal([GroupState("g", "Empty", ("c (m) on h",))]) is not None


def test_store_paths_are_only_the_users_table(tmp_path: Path) -> None:
    tables = tmp_path / "v1" / "tables"
    for name in ("users-0.db", "users-1.db", "users-backups", "other-0.db"):
        (tables / name).mkdir(parents=True)
    (tmp_path / "v1" / "keep.txt").write_text("x")
    assert table_store_paths(tmp_path) == [
        tables / "users-0.db",
        tables / "users-1.db",
        tables / "users-backups",
    ]
    assert table_store_paths(tmp_path / "missing") == []


def test_plan_renders_every_step() -> None:
    plan = Plan(
        1_764_090_000_000,
        "in",
        "app-ingest",
        [OffsetMove(0, 9, 3)],
        "app",
        "app-events-by-user",
        [OffsetMove(0, 1, 2)],
        "app-users-changelog",
        4,
        17,
        [Path("/d/v1/tables/users-0.db")],
        "/d",
    )
    text = plan.render()
    assert "2025-11-25T17:00:00.000Z" in text.splitlines()[0]
    assert "partition 0: committed 9 -> 3 (-6)" in text
    assert "delete and recreate empty (compacted, 4 partitions)" in text
    assert "/d/v1/tables/users-0.db" in text
    assert plan.to_json()["stores"] == ["/d/v1/tables/users-0.db"]
