"""Every dashboard query, taken from the generated JSON, against the real Prometheus.

One worker (event clock) is fed two deterministic batches and scraped by the stack's
Prometheus, which evaluates the production rules (deploy/prometheus/rules/, every group
at 30s). Then every panel target of grafana/dashboards-json/*.json, with its variables
substituted, is run through the HTTP API (instant or range query, as the panel does)
and must return at least one series; where the oracle of tests/unit/oracle.py knows
the answer, the value must equal it. Finally every metric a panel or a rule names must
be produced by the worker, by a recording rule, or by Prometheus itself.

Why two batches: the first (``make_traffic``: 40 days of history, every window
different, invalid messages of every reason) makes the counters and gauges appear; the
second, the simulator's live traffic (commands/simulate.py, generated in process with a
fixed seed) sent after Prometheus has scraped the first, makes the counters *grow*
between two scrapes, so rates and the lag histogram's quantiles have non-zero values.
It uses the same community and user names (brand-NN, u-N) and its events are no newer
than the first batch's newest event: the event clock does not move, so the oracle over
both batches stays exact. A simulator *subprocess* on the same topic is not used: it
would move the clock (and every window) while the values are being checked.

Bounded: the worker starts in seconds, both batches are processed in seconds, and the
one real wait is for the recording rules' next evaluation after the last scrape (at
most the 30s evaluation interval). About a minute in all.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.workers import Worker, produce, wait_caught_up
from commands.simulate import SimConfig, Simulator
from grafana.queries import PanelQuery, panel_queries, referenced_metrics, variable_queries
from streams.durations import parse_windows
from streams.events import ALL_COMMUNITIES, DEFAULT_ACTIVE_TYPES
from tests.eventgen import make_traffic
from tests.integration.promapi import PromAPI, PromError, Series, finite, value
from tests.oracle import event_clock, expected_active, expected_followers, expected_lifecycle

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
WINDOWS = parse_windows("5m,1h,1d,7d,30d")  # the worker's default EM_WINDOWS
PLATFORM = "twitter"
COMMUNITY = "brand-00"  # the most frequent community of make_traffic
RANGE_STEP = 15.0

#: Series Prometheus makes itself (per scrape target, or for alerting rules).
PROMETHEUS_BUILTINS = frozenset(
    {
        "up", "scrape_duration_seconds", "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling", "scrape_series_added",
        "ALERTS", "ALERTS_FOR_STATE",
    }
)  # fmt: skip

#: Panels whose query is right but cannot return a series in a fresh test, and why.
#: For these the query must still be accepted by Prometheus (status "success").
NEEDS_HISTORY = {
    # Needs samples from 7 days ago; the test's Prometheus has minutes of them.
    ("DAU against the same time last week", "B"),
    # Only Engagement* alerts, firing. The engagement alerts need `for` of 15m-30m (and
    # history an hour or a week back); the only always-firing rule, Watchdog, is left
    # out on purpose by alertname=~"Engagement.*". So no series while nothing is wrong.
    ("Firing engagement alerts", "A"),
}


@dataclass
class Live:
    """What the module's setup produced, for the tests to check against."""

    api: PromAPI
    worker: Worker
    instance: str
    valid: list[dict[str, Any]]  # every valid event sent (both batches)
    invalid_reasons: set[str]
    now_ms: int  # the event clock: the newest valid event time
    first_scrape: float  # Prometheus' first sample of this worker (epoch s)
    last_scrape: float  # the first scrape after the second batch was processed
    at: float  # evaluation time of the checks: after the rules saw the last scrape
    metric_names: set[str]  # sample names of the worker's /metrics after both batches
    by_user_topic: str
    input_topic: str


def second_batch(now_ms: int, seconds: int = 240, seed: int = 5) -> list[bytes]:
    """The simulator's live traffic (commands/simulate.py, in process, so deterministic)
    over the `seconds` before now_ms: no newer than the first batch's newest event."""
    sim = Simulator(
        SimConfig(communities=12, users=500, rate=1.5, seed=seed, burst_every_s=0),
        start_ms=now_ms - seconds * 1000,
    )
    out: list[bytes] = []
    for message, ts_ms, _key, reason in sim:
        if ts_ms >= now_ms:
            return out
        assert reason is None
        out.append(message)
    raise AssertionError("unreachable: the simulator is endless")


def _scraped_after(api: PromAPI, instance: str, after: float) -> float:
    """Wait for a scrape of the worker that started after `after`; its timestamp."""
    # timestamp() of a bare selector is the sample's time (of an expression: query time)
    up = f'up{{job="engagement-monitor", instance="{instance}"}}'
    expr = f"timestamp({up}) > {after:.3f} and {up} == 1"
    return value(api.wait(expr, timeout=30, what="a new scrape of the worker")[0])


@pytest.fixture(scope="module")
def live(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    api = PromAPI(stack.prometheus_url)
    app_id, topic = stack.unique_name("dash"), stack.unique_name("interactions")
    datadir = tmp_path_factory.mktemp("dashboards") / "data"
    worker = Worker(stack.kafka_bootstrap, app_id, topic, f"{topic}.dlq", datadir)
    instance = f"127.0.0.1:{worker.port}"
    now_ms = int(time.time() * 1000) - 60_000
    first = make_traffic(seed=31, count=3000, now_ms=now_ms)
    worker.start()
    try:
        worker.wait_metrics()
        stack.scrape([instance])
        # this tree's rules (the stack may load another checkout's, e.g. in a git
        # worktree); after scrape(), which renders the config with the stack's rules
        stack.load_rules(RULES_DIR)
        _wait_rules_loaded(api)
        first_scrape = _scraped_after(api, instance, 0)

        asyncio.run(produce(stack.kafka_bootstrap, topic, first.messages))
        asyncio.run(wait_caught_up(stack.kafka_bootstrap, app_id, topic, worker))
        _scraped_after(api, instance, time.time())

        second = second_batch(now_ms)
        asyncio.run(produce(stack.kafka_bootstrap, topic, second))
        asyncio.run(wait_caught_up(stack.kafka_bootstrap, app_id, topic, worker))
        last_scrape = _scraped_after(api, instance, time.time())
        # Every rule group's next evaluation after that scrape (+2s: the scrape's
        # samples are appended when it ends, a few ms after its timestamp).
        _wait_rules_loaded(api)  # still ours (another test may share this Prometheus)
        api.wait_rules_evaluated(after=last_scrape + 2, timeout=45)
        valid = first.valid + [orjson.loads(m) for m in second]
        clock = event_clock(valid)
        assert clock == now_ms  # the second batch did not move the event clock
        yield Live(
            api=api,
            worker=worker,
            instance=instance,
            valid=valid,
            invalid_reasons={reason for _, reason in first.invalid},
            now_ms=now_ms,
            first_scrape=first_scrape,
            last_scrape=last_scrape,
            at=time.time(),
            metric_names=set(worker.scrape()),
            by_user_topic=f"{app_id}-events-by-user",
            input_topic=topic,
        )
    finally:
        worker.stop()
        stack.reset_rules()


def _wait_rules_loaded(api: PromAPI, timeout: float = 60) -> None:
    """Until Prometheus has loaded every recording rule of RULES_DIR (a reload is async)."""
    text = "".join(p.read_text() for p in sorted(RULES_DIR.glob("*.yml")))
    want = set(re.findall(r"- record: (\S+)", text))
    deadline = time.monotonic() + timeout
    while True:
        groups = api.rule_groups()
        got = {r["name"] for g in groups for r in g["rules"] if r["type"] == "recording"}
        if want <= got:
            return
        assert time.monotonic() < deadline, f"rules not loaded: {sorted(want - got)}"
        time.sleep(0.5)


def run(live: Live, q: PanelQuery) -> list[Series]:
    """The query as the panel runs it: instant at `at`, or a range ending at `at` that
    starts no earlier than this worker's first scrape (older series are other tests')."""
    if q.instant:
        return live.api.instant(q.expr, at=live.at)
    return live.api.range(q.expr, range_start(live), live.at, step=RANGE_STEP)


def range_start(live: Live) -> float:
    """A whole number of steps before `at` (so `at` itself is a point), at most 3 minutes
    and not earlier than one step before this worker's first scrape."""
    steps = min(12, math.ceil((live.at - live.first_scrape) / RANGE_STEP))
    return live.at - steps * RANGE_STEP


SUBSTITUTIONS = [
    {"platform": PLATFORM, "community": COMMUNITY},
    {"platform": PLATFORM, "community": ALL_COMMUNITIES},
]


@pytest.mark.parametrize("variables", SUBSTITUTIONS, ids=lambda v: v["community"])
def test_every_panel_query_returns_a_series(live: Live, variables: dict[str, str]) -> None:
    queries = panel_queries({"app": live.worker.app_id, **variables})
    assert len(queries) >= 25
    failures = []
    for q in queries:
        where = f"{q.dashboard_uid} / {q.panel_title!r} / {q.ref_id}: {q.expr}"
        try:
            result = run(live, q)
        except PromError as exc:
            failures.append(f"{where}\n    error: {exc}")
            continue
        if not result and (q.panel_title, q.ref_id) not in NEEDS_HISTORY:
            failures.append(f"{where}\n    no series")
    assert not failures, "panel queries that fail or return nothing:\n" + "\n".join(failures)


def test_variable_queries_list_the_data(live: Live) -> None:
    """The variables' label_values(selector, label) as Grafana asks: the label values API."""
    variables = {v.name: v for v in variable_queries()}
    assert set(variables) == {"app", "platform", "community"}
    active = expected_active(live.valid, live.now_ms, WINDOWS, DEFAULT_ACTIVE_TYPES)
    app_id = live.worker.app_id
    want = {
        "app": {app_id},
        "platform": {p for p, _ in active},
        "community": {c for p, c in active if p == PLATFORM},
    }
    assert ALL_COMMUNITIES in want["community"] and COMMUNITY in want["community"]
    for name, variable in variables.items():
        query = variable.query.replace("$platform", PLATFORM).replace("$app", app_id)
        selector, label = _label_values_args(query)
        assert label == name
        got = live.api.label_values(label, selector, live.at - 60, live.at)
        assert want[name] <= set(got), (variable.query, sorted(got))


def _label_values_args(query: str) -> tuple[str, str]:
    """label_values(selector, label) -> (selector, label)."""
    inner = query.strip().removeprefix("label_values(").removesuffix(")")
    selector, label = inner.rsplit(",", 1)
    return selector.strip(), label.strip()


# --- values the oracle knows ------------------------------------------------------


def _panels(variables: dict[str, str]) -> dict[tuple[str, str], PanelQuery]:
    return {(q.panel_title, q.ref_id): q for q in panel_queries(variables)}


def _one(live: Live, q: PanelQuery) -> float:
    result = live.api.instant(q.expr, at=live.at)
    assert len(result) == 1, (q.panel_title, q.expr, result)
    return value(result[0])


@pytest.mark.parametrize("community", [COMMUNITY, ALL_COMMUNITIES])
def test_engagement_values_equal_the_oracle(live: Live, community: str) -> None:
    panels = _panels({"app": live.worker.app_id, "platform": PLATFORM, "community": community})
    active = expected_active(live.valid, live.now_ms, WINDOWS, DEFAULT_ACTIVE_TYPES)
    want = active[(PLATFORM, community)]
    followers = expected_followers(live.valid)[(PLATFORM, community)]
    assert want["30d"] > want["1d"] > want["5m"] > 0 and followers > 0  # a real test

    for title, window in [
        ("Active users (5m)", "5m"),
        ("DAU (1d)", "1d"),
        ("WAU (7d)", "7d"),
        ("MAU (30d)", "30d"),
    ]:
        assert _one(live, panels[(title, "A")]) == want[window], title
    assert _one(live, panels[("Followers", "A")]) == followers
    assert _one(live, panels[("Active (30d) / followers", "A")]) == pytest.approx(
        want["30d"] / followers, rel=1e-12
    )
    assert _one(live, panels[("Stickiness (DAU / MAU)", "A")]) == pytest.approx(
        want["1d"] / want["30d"], rel=1e-12
    )
    per_window = live.api.instant(panels[("Active users per window", "A")].expr, at=live.at)
    assert {s["metric"]["window"]: value(s) for s in per_window} == want
    assert _one(live, panels[("Followers against active users", "A")]) == followers
    assert _one(live, panels[("Followers against active users", "B")]) == want["30d"]
    assert _one(live, panels[("Followers against active users", "C")]) == want["1d"]
    assert _one(live, panels[("DAU against the same time last week", "A")]) == want["1d"]

    # the audience row: (active followers, new, returning, dormant) per window
    audience = expected_lifecycle(live.valid, live.now_ms, WINDOWS, DEFAULT_ACTIVE_TYPES)[
        (PLATFORM, community)
    ]
    active_followers = audience["30d"][0]
    assert 0 < active_followers <= followers  # a real test
    assert _one(live, panels[("Active vs ghost followers", "A")]) == active_followers
    assert _one(live, panels[("Active vs ghost followers", "B")]) == followers - active_followers
    assert _one(live, panels[("Ghost followers (30d)", "A")]) == pytest.approx(
        (followers - active_followers) / followers, rel=1e-12
    )
    mix = "Active users: followers and non-followers (30d)"
    assert _one(live, panels[(mix, "A")]) == active_followers
    assert _one(live, panels[(mix, "B")]) == want["30d"] - active_followers
    lifecycle = "New, returning and dormant users (7d)"
    new, returning, dormant = audience["7d"][1:]
    assert new > 0 and returning > 0  # a real test (no user is dormant in 7d here)
    assert _one(live, panels[(lifecycle, "A")]) == new
    assert _one(live, panels[(lifecycle, "B")]) == returning
    assert _one(live, panels[(lifecycle, "C")]) == dormant

    # events/s by type: the community's types, and the second batch made them grow
    types = {
        e["type"]
        for e in live.valid
        if e["platform"] == PLATFORM
        and (community == ALL_COMMUNITIES or e["community"] == community)
    }
    by_type = live.api.instant(panels[("Events/s by type", "A")].expr, at=live.at)
    assert by_type and {s["metric"]["type"] for s in by_type} <= types
    assert {s["metric"]["community"] for s in by_type} == {community}
    assert sum(value(s) for s in by_type) > 0


def test_top_communities_equal_the_oracle(live: Live) -> None:
    q = _panels({"app": live.worker.app_id, "platform": PLATFORM, "community": COMMUNITY})[
        ("Top communities by active users (1d)", "A")
    ]
    assert q.instant
    active = expected_active(live.valid, live.now_ms, WINDOWS, DEFAULT_ACTIVE_TYPES)
    dau = {c: n["1d"] for (p, c), n in active.items() if p == PLATFORM and c != ALL_COMMUNITIES}
    got = {s["metric"]["community"]: value(s) for s in live.api.instant(q.expr, at=live.at)}
    assert len(got) == min(10, len(dau))
    assert all(got[c] == dau[c] for c in got)  # ties at 10th place may pick either
    assert sorted(got.values()) == sorted(dau.values())[-len(got) :]


def test_pipeline_values(live: Live) -> None:
    panels = _panels({"app": live.worker.app_id, "platform": PLATFORM, "community": COMMUNITY})
    assert _one(live, panels[("Workers up", "A")]) == 1
    health = live.api.instant(panels[("Scrape health per worker", "A")].expr, at=live.at)
    assert [(s["metric"]["instance"], value(s)) for s in health] == [(live.instance, 1.0)]
    durations = live.api.instant(panels[("Scrape duration", "A")].expr, at=live.at)
    assert [s["metric"]["instance"] for s in durations] == [live.instance]

    # watermark = the event clock, exactly; age = evaluation time - watermark
    for title in ("Watermark age", "Watermark age over time"):
        assert _one(live, panels[(title, "A")]) == pytest.approx(
            live.at - live.now_ms / 1000, abs=1e-3
        )

    assert _one(live, panels[("Events/s in", "A")]) > 0
    by_platform = live.api.instant(panels[("Events/s in by platform", "A")].expr, at=live.at)
    assert {s["metric"]["platform"] for s in by_platform} == {e["platform"] for e in live.valid}
    assert _one(live, panels[("Events/s in by platform", "B")]) >= 0
    reasons = live.api.instant(panels[("Invalid events by reason", "A")].expr, at=live.at)
    assert live.invalid_reasons <= {s["metric"]["reason"] for s in reasons}

    # Event lag just after the second batch: its rate[1m] window holds the scrapes before
    # and after that batch (both after the first batch was done), so the histogram grew.
    # Of make_traffic's events ~17% are older than the top bucket (1 week): if the first
    # batch's growth is in the window too, p95/p99 may be +Inf, never NaN; p50 is finite.
    for ref in ("A", "B", "C"):
        q = panels[("Event lag", ref)]
        lag = live.api.instant(q.expr, at=live.last_scrape + 2)
        assert len(lag) == 1 and value(lag[0]) > 0, (ref, lag)  # NaN > 0 is False
        assert ref != "A" or finite(value(lag[0])), lag

    # consumer lag: the worker has caught up, so it is 0 on every partition it reports
    assert _one(live, panels[("Consumer lag", "A")]) == 0
    lag_by_tp = live.api.instant(panels[("Consumer lag by topic/partition", "A")].expr, at=live.at)
    assert live.by_user_topic in {s["metric"]["topic"] for s in lag_by_tp}
    assert all(value(s) == 0 for s in lag_by_tp)


def test_consumer_lag_covers_the_input_topic(live: Live) -> None:
    q = _panels({"app": live.worker.app_id, "platform": PLATFORM, "community": COMMUNITY})[
        ("Consumer lag by topic/partition", "A")
    ]
    topics = {s["metric"]["topic"] for s in live.api.instant(q.expr, at=live.at)}
    assert live.input_topic in topics, sorted(topics)


# --- every metric a panel or rule names exists --------------------------------------


def _loaded_rules(live: Live) -> list[dict[str, Any]]:
    """The rules Prometheus loaded, which must be the files in deploy/prometheus/rules."""
    groups = live.api.rule_groups()
    files = {Path(g["file"]).resolve() for g in groups}
    assert files == {p.resolve() for p in RULES_DIR.glob("*.yml")}, files
    return [rule for g in groups for rule in g["rules"]]


def test_every_named_metric_is_produced(live: Live) -> None:
    from grafana.queries import metric_names

    rules = _loaded_rules(live)
    recorded = {r["name"] for r in rules if r["type"] == "recording"}
    named: dict[str, set[str]] = {}
    for name, where in referenced_metrics().items():
        named.setdefault(name, set()).update(f"panel {uid}/{title}" for uid, title in where)
    for rule in rules:
        for name in metric_names(rule["query"]):
            named.setdefault(name, set()).add(f"rule {rule['name']}")
    assert "engagement:active_users:sum" in named and "engagement_events_total" in named

    # sample names exactly as exposed (so engagement_events_total and
    # engagement_event_lag_seconds_bucket, as Prometheus stores them)
    produced = live.metric_names | recorded | PROMETHEUS_BUILTINS
    unknown = {n: sorted(w) for n, w in named.items() if n not in produced}
    assert not unknown, f"named by panels/rules but produced by nobody: {unknown}"

    # ...and Prometheus really has them now (recording rules evaluated, faust_* scraped);
    # ALERTS only exists while an alert is pending or firing (Watchdog: always)
    missing = []
    for name in sorted(named):
        if name.startswith("ALERTS"):
            # written at rule evaluation, not at scrape: on a just-started Prometheus
            # the Watchdog's first evaluation may come after live.at; wait for it
            live.api.wait(f'count({{__name__="{name}"}})', timeout=90, what="Watchdog")
        elif not live.api.instant(f'count({{__name__="{name}"}})', at=live.at):
            missing.append(name)
    assert not missing, f"no series in Prometheus: {missing}"
