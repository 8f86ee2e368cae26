"""The label caps: room is filled first-seen; a ranking by activity decides beyond it."""

from __future__ import annotations

from agents.labels import CommunityLabels, LabelCap, read_allowlist
from agents.readmodel import sum_snapshots
from agents.redis_snapshots import build_snapshots
from streams.events import DEFAULT_ACTIVE_TYPES
from streams.state import WorkerState
from streams.topics import partition_for_user


def test_first_n_keep_their_names_the_rest_are_other() -> None:
    labels = CommunityLabels(cap=2)
    assert [labels(c) for c in ["a", "b", "c", "a", "*", "d", "b"]] == [
        "a",
        "b",
        "_other",
        "a",
        "*",  # the all-communities total is never capped nor counted
        "_other",
        "b",
    ]
    assert len(labels) == 2


def test_zero_cap_names_nothing() -> None:
    labels = CommunityLabels(cap=0)
    assert (labels("a"), labels("*"), len(labels)) == ("_other", "*", 0)


# The cap policy (issue 12): the most active names keep their series, the same on
# every worker, whatever junk arrives.


T = 1_800_000_000_000
W = {"30d": 30 * 86_400_000}


def _state(events: list[tuple[str, str, str]], partitions: list[int], total: int) -> WorkerState:
    """A worker holding ``partitions`` of ``total``, with the events of its users."""
    state = WorkerState(DEFAULT_ACTIVE_TYPES)
    for p in partitions:
        state.assign(p)
    for platform, community, user in events:
        p = partition_for_user(user, total)
        if p in partitions:
            state.partitions[p].apply(platform, community, user, T - 1000, "like")
    return state


def _traffic() -> list[tuple[str, str, str]]:
    real = [("tw", f"brand-{c}", f"u{c}-{i}") for c in range(5) for i in range(20 + c)]
    junk = [("tw", f"junk-{j:04d}", f"j{j}") for j in range(1000)]  # one user each
    return real + junk


def test_junk_after_a_restart_does_not_push_real_communities_out() -> None:
    """Regression: the first N names a process saw kept their series, so 1,000 junk
    names sent after a restart put every real community under _other."""
    labels = CommunityLabels(cap=5)
    for i in range(1000):
        labels(f"junk-{i:04d}")  # seen first: admitted while there is room
    assert labels("brand-0") == "_other"
    state = _state(_traffic(), [0, 1, 2, 3], 4)
    totals = sum_snapshots(build_snapshots(state, T, W, 4, T))
    labels.rank_counts(totals.active, totals.followers, "30d")
    assert [labels(f"brand-{c}") for c in range(5)] == [f"brand-{c}" for c in range(5)]
    assert {labels(f"junk-{i:04d}") for i in range(1000)} == {"_other"}


def test_two_workers_ranking_the_shared_snapshots_agree() -> None:
    """Each worker holds half the partitions; both rank the sum of all snapshots (what
    Redis holds), so they admit the same names."""
    traffic = _traffic()
    halves = [_state(traffic, [0, 1], 4), _state(traffic, [2, 3], 4)]
    snapshots = [s for st in halves for s in build_snapshots(st, T, W, 4, T)]
    workers = [CommunityLabels(cap=3), CommunityLabels(cap=3)]
    for labels in workers:
        totals = sum_snapshots(snapshots)
        labels.rank_counts(totals.active, totals.followers, "30d")
    assert workers[0].admitted == workers[1].admitted == {"brand-4", "brand-3", "brand-2"}


def test_allowlist_always_keeps_its_names_and_platforms_are_capped_too() -> None:
    labels = CommunityLabels(cap=1, allowlist={"quiet-brand"}, platforms=LabelCap(cap=1))
    active = {
        ("tw", "loud"): {"30d": 50},
        ("tw", "quiet-brand"): {"30d": 1},
        ("tw", "*"): {"30d": 51},
        ("fb", "other"): {"30d": 2},
        ("fb", "*"): {"30d": 2},
    }
    labels.rank_counts(active, {("fb", "follow-only"): 3}, "30d")
    assert [labels(c) for c in ("loud", "quiet-brand", "other", "follow-only", "*")] == [
        "loud",
        "quiet-brand",
        "_other",
        "_other",
        "*",
    ]
    assert (labels.platforms("tw"), labels.platforms("fb")) == ("tw", "_other")


def test_allowlist_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "names.txt"
    path.write_text("# communities that always keep their series\nacme\n\n  beta  \n")
    assert read_allowlist(str(path)) == {"acme", "beta"}
    assert read_allowlist("") == frozenset()
