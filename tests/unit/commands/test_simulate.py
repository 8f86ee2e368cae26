"""The simulator's traffic has the shape the dashboards and alerts are judged on."""

from __future__ import annotations

import itertools
from collections import Counter

import orjson
import pytest

from commands.simulate import INVALID_KINDS, Drop, SimConfig, Simulator, community_name
from commands.sources import parse_time_bound
from streams.events import InvalidEvent, parse_event

START = parse_time_bound("2026-01-01T00:00:00Z", 0)


def take(sim: Simulator, n: int) -> list[tuple[bytes, int, bytes | None, str | None]]:
    return list(itertools.islice(sim, n))


def test_same_seed_same_messages_other_seed_other_messages() -> None:
    first = take(Simulator(SimConfig(seed=7), START), 2000)
    again = take(Simulator(SimConfig(seed=7), START), 2000)
    other = take(Simulator(SimConfig(seed=8), START), 2000)
    assert first == again
    assert first != other


def test_preload_is_deterministic_in_the_past_and_all_follows() -> None:
    sim = Simulator(SimConfig(seed=3, users=2000), START)
    preload = list(sim.preload())
    assert len(preload) == sim.followers
    assert preload == list(Simulator(SimConfig(seed=3, users=2000), START).preload())
    times = [ts for _, ts, _, _ in preload]
    assert times == sorted(times) and times[-1] < START
    assert {orjson.loads(v)["type"] for v, *_ in preload} == {"follow"}


def test_every_valid_message_passes_the_contract() -> None:
    sim = Simulator(SimConfig(seed=2), START)
    for value, ts_ms, key, reason in take(sim, 5000):
        assert reason is None
        event = parse_event(value, now_ms=ts_ms)
        assert event.ts_ms == ts_ms
        assert key == event.user_id.encode()


def test_timestamps_increase_and_follow_the_mean_rate() -> None:
    config = SimConfig(seed=4, rate=1000, daily_amplitude=0.0, burst_every_s=0)
    messages = take(Simulator(config, START), 5000)
    times = [ts for _, ts, _, _ in messages]
    assert times == sorted(times)
    assert 4900 <= times[-1] - START <= 5100  # 5000 events at 1000/s ≈ 5 s of event time


def test_daily_cycle_peaks_in_the_afternoon() -> None:
    sim = Simulator(SimConfig(seed=1, burst_every_s=0), START)
    at = {hour: sim.intensity(START + hour * 3_600_000) for hour in range(24)}
    assert max(at, key=at.__getitem__) == 15
    assert min(at, key=at.__getitem__) == 3
    assert at[15] / at[3] == pytest.approx(3.0)  # amplitude 0.5: 1.5 / 0.5


def test_community_sizes_are_zipf_skewed() -> None:
    sim = Simulator(SimConfig(seed=5, burst_every_s=0), START)
    sizes = [len(group) for group in sim.members]
    assert sizes[0] > 3 * sizes[4] > 0
    assert sizes[0] > 10 * sizes[-1]
    events = Counter(orjson.loads(v)["community"] for v, *_ in take(sim, 20000))
    assert events[community_name(0)] > 5 * events[community_name(9)]


def test_followers_far_outnumber_active_users() -> None:
    sim = Simulator(SimConfig(seed=6, users=20000), START)
    followers = {u for group in sim.members for u, _ in group}
    messages = take(sim, 20000)  # ~100 s of traffic at 200/s
    active = {orjson.loads(v)["user_id"] for v, *_ in messages}
    counts = Counter(orjson.loads(v)["user_id"] for v, *_ in messages)
    assert len(followers) == 20000
    assert len(active) < len(followers) / 4
    top = sum(n for _, n in counts.most_common(len(followers) // 25))
    assert top > 0.5 * len(messages)  # a small core (4 %) does most of the acting


def test_type_mix_likes_dominate_and_churn_is_present() -> None:
    kinds = Counter(
        orjson.loads(v)["type"] for v, *_ in take(Simulator(SimConfig(seed=9), START), 20000)
    )
    assert kinds["like"] > 3 * kinds["comment"] > 0
    assert kinds["comment"] > kinds["share"] > 0
    assert kinds["follow"] > 0 and kinds["unfollow"] > 0


def test_invalid_share_is_respected_and_every_invalid_message_is_rejected() -> None:
    sim = Simulator(SimConfig(seed=11, invalid_share=0.05), START)
    messages = take(sim, 20000)
    invalid = [m for m in messages if m[3] is not None]
    assert 0.04 * len(messages) < len(invalid) < 0.06 * len(messages)
    assert {m[3] for m in invalid} == set(INVALID_KINDS)
    for value, ts_ms, _key, reason in invalid:
        with pytest.raises(InvalidEvent) as refused:
            parse_event(value, now_ms=ts_ms)
        assert refused.value.reason == reason, value
    for value, ts_ms, _key, reason in messages:
        if reason is None:
            parse_event(value, now_ms=ts_ms)


def test_no_invalid_messages_by_default() -> None:
    assert all(m[3] is None for m in take(Simulator(SimConfig(seed=12), START), 5000))


def test_drop_cuts_one_community_after_the_given_time() -> None:
    config = SimConfig(seed=13, rate=1000, burst_every_s=0, drops=[Drop.parse("brand-00@10s")])
    messages = take(Simulator(config, START), 30000)
    before = [orjson.loads(v) for v, ts, *_ in messages if ts < START + 10_000]
    after = [orjson.loads(v) for v, ts, *_ in messages if ts >= START + 10_000]
    assert sum(e["community"] == "brand-00" for e in before) > 0.1 * len(before)
    assert not any(e["community"] == "brand-00" for e in after)
    assert any(e["community"] == "brand-01" for e in after)


def test_drop_factor_keeps_a_share() -> None:
    config = SimConfig(seed=14, burst_every_s=0, drops=[Drop.parse("brand-00:0.25")])
    dropped = Counter(
        orjson.loads(v)["community"] for v, *_ in take(Simulator(config, START), 20000)
    )
    normal = Counter(
        orjson.loads(v)["community"]
        for v, *_ in take(Simulator(SimConfig(seed=14, burst_every_s=0), START), 20000)
    )
    ratio = (dropped["brand-00"] / dropped["brand-01"]) / (normal["brand-00"] / normal["brand-01"])
    assert 0.15 < ratio < 0.35


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("brand-03", Drop("brand-03", 0.0, 0)),
        ("brand-03:0.2", Drop("brand-03", 0.2, 0)),
        ("brand-03@5m", Drop("brand-03", 0.0, 300_000)),
        ("brand-03:0.5@90s", Drop("brand-03", 0.5, 90_000)),
    ],
)
def test_drop_flag_syntax(text: str, expected: Drop) -> None:
    assert Drop.parse(text) == expected


@pytest.mark.parametrize("text", ["", ":0.5", "brand-03:2", "brand-03:x", "brand-03@soon"])
def test_bad_drop_flags_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Drop.parse(text)


def test_drop_of_unknown_community_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown communities"):
        Simulator(SimConfig(drops=[Drop("nope")]), START)


def test_bursts_raise_one_communitys_traffic() -> None:
    config = SimConfig(seed=15, rate=500, burst_every_s=60, daily_amplitude=0.0)
    sim = Simulator(config, START)
    bursts = set()
    for _ in range(60000):
        next(sim)
        if sim._burst is not None:
            bursts.add(sim._burst[0])
    assert bursts  # ~2 min of event time with a burst a minute on average
    assert sim.intensity(sim._clock) >= 1.0
