"""The Grafana dashboards: generated JSON up to date, valid for the SDK, on the
provisioned datasource, and querying only metrics that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard, Panel
from grafana_foundation_sdk.models.prometheus import Dataquery as PrometheusQuery
from prometheus_client import CollectorRegistry

from grafana import DASHBOARDS_JSON_DIR, PROVISIONING_DIR
from grafana.build import check, render_all, write_all
from grafana.dashboards.common import DATASOURCE_UID, FAUST_PREFIX, JOB
from grafana.queries import (
    GRAFANA_BUILTINS,
    iter_panels,
    load_dashboards,
    metric_names,
    panel_queries,
    referenced_metrics,
    substitute,
    variable_queries,
)

REPO = Path(__file__).resolve().parents[3]
METRICS_DOC = REPO / "docs" / "metrics.md"
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"

EXPECTED = {
    "engagement-overview.json": ("engagement-overview", "Engagement overview"),
    "engagement-pipeline.json": ("engagement-pipeline", "Pipeline health"),
}
#: Series Prometheus makes itself.
PROMETHEUS_BUILTINS = {"up", "scrape_duration_seconds", "ALERTS"}

VALUES = {"app": "shop", "platform": "twitter", "community": "acme"}


def committed() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in DASHBOARDS_JSON_DIR.glob("*.json")}


def dashboards() -> list[dict[str, Any]]:
    return load_dashboards(DASHBOARDS_JSON_DIR)


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in iter_panels(dashboard) if p.get("type") != "row"]


# --- generation --------------------------------------------------------------------


def test_regenerated_json_equals_committed(tmp_path: Path) -> None:
    write_all(tmp_path)
    fresh = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.glob("*.json")}
    assert set(fresh) == set(EXPECTED)
    stale = [name for name in fresh if committed().get(name) != fresh[name]]
    assert not stale, f"{stale} out of date: run `python -m grafana.build` and commit"
    assert check(DASHBOARDS_JSON_DIR) == []


def test_build_is_deterministic() -> None:
    assert render_all() == render_all()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_json_is_stable_text(name: str) -> None:
    text = committed()[name]
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_uid_and_title(name: str) -> None:
    dashboard = json.loads(committed()[name])
    assert (dashboard["uid"], dashboard["title"]) == EXPECTED[name]
    assert dashboard["schemaVersion"] >= 39  # Grafana 11 schema
    # Grafana's frontend expects both lists to exist.
    assert isinstance(dashboard["templating"]["list"], list)
    assert [a.get("builtIn") for a in dashboard["annotations"]["list"]] == [1]


# --- the SDK's model ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_round_trips_through_the_sdk_model(name: str) -> None:
    register_default_plugins()  # so panels' options and Prometheus targets decode typed
    text = committed()[name]
    model = Dashboard.from_json(json.loads(text))
    assert json.dumps(model, cls=JSONEncoder, sort_keys=True, indent=2) + "\n" == text
    panels = [p for p in model.panels or [] if isinstance(p, Panel)]
    assert panels
    for panel in panels:
        assert panel.targets, panel.title
        for target in panel.targets:
            assert isinstance(target, PrometheusQuery), (panel.title, type(target))
        assert panel.options is not None and not isinstance(panel.options, dict), panel.title


# --- datasource ---------------------------------------------------------------------


def test_provisioned_datasource_uid_matches() -> None:
    text = (PROVISIONING_DIR / "datasources" / "prometheus.yml").read_text(encoding="utf-8")
    assert re.search(r"^apiVersion: 1$", text, re.M)
    assert re.findall(r"^\s+uid:\s*(\S+)\s*$", text, re.M) == [DATASOURCE_UID]
    assert re.search(r"^\s+type:\s*prometheus\s*$", text, re.M)


def test_dashboard_provider_points_at_the_json_folder() -> None:
    text = (PROVISIONING_DIR / "dashboards" / "dashboards.yml").read_text(encoding="utf-8")
    assert re.search(r"^apiVersion: 1$", text, re.M)
    assert re.search(r"^\s+type:\s*file\s*$", text, re.M)
    assert re.search(r"^\s+path:\s*/\S+\s*$", text, re.M)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_panel_and_target_uses_the_provisioned_datasource(name: str) -> None:
    dashboard = json.loads(committed()[name])
    expected = {"type": "prometheus", "uid": DATASOURCE_UID}
    for panel in data_panels(dashboard):
        assert panel.get("datasource") == expected, panel["title"]
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource") == expected, (panel["title"], target["refId"])


def test_every_variable_queries_the_provisioned_datasource() -> None:
    variables = variable_queries()
    assert {(v.dashboard_uid, v.name) for v in variables} == {
        ("engagement-overview", "app"),
        ("engagement-overview", "platform"),
        ("engagement-overview", "community"),
        ("engagement-pipeline", "app"),
    }
    for variable in variables:
        assert variable.datasource_uid == DATASOURCE_UID, variable.name
        assert variable.query.startswith("label_values(engagement_"), variable.query
        assert variable.query.endswith(f", {variable.name})"), variable.query
        if variable.name != "app":  # platforms and communities of the selected app
            assert 'app="$app"' in variable.query, variable.query


# --- panels -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_panel_ids_and_titles_are_unique(name: str) -> None:
    dashboard = json.loads(committed()[name])
    panels = list(iter_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in data_panels(dashboard)]
    assert len(titles) == len(set(titles)), titles


def test_overview_answers_the_questions() -> None:
    exprs = {q.panel_title: q.expr for q in panel_queries(VALUES) if q.ref_id == "A"}
    all_exprs = [q.expr for q in panel_queries(VALUES)]
    for window in ("5m", "1d", "7d", "30d"):
        assert any(f'window="{window}"' in e and "active_users" in e for e in exprs.values())
    assert any("engagement:followers:sum" in e for e in exprs.values())
    assert any("engagement:active_followers_ratio" in e for e in exprs.values())
    assert any("engagement:stickiness_dau_mau" in e for e in exprs.values())
    assert any("offset 1w" in e for e in all_exprs)
    assert any(e.startswith("topk(") for e in all_exprs)
    assert any('ALERTS{alertstate="firing", alertname=~"Engagement.*"}' in e for e in all_exprs)


def test_pipeline_answers_the_questions() -> None:
    exprs = [q.expr for q in panel_queries(VALUES) if q.dashboard_uid == "engagement-pipeline"]
    joined = "\n".join(exprs)
    assert "histogram_quantile(" in joined and "engagement_event_lag_seconds_bucket" in joined
    assert 'time() - max(engagement_watermark_seconds{app="shop"})' in joined
    assert f'up{{job="{JOB}"}}' in joined
    assert f'scrape_duration_seconds{{job="{JOB}"}}' in joined
    assert f"{FAUST_PREFIX}_topic_partition_end_offset" in joined
    assert f"{FAUST_PREFIX}_topic_partition_offset_commited" in joined
    assert f"{FAUST_PREFIX}_rebalance_done_latency_count" in joined
    assert "engagement:invalid_events:rate5m" in joined


def test_instant_queries_are_the_tables() -> None:
    for dashboard in dashboards():
        for panel in data_panels(dashboard):
            for target in panel["targets"]:
                assert bool(target.get("instant")) == (panel["type"] == "table"), panel["title"]


# --- metric names -------------------------------------------------------------------


def documented_names() -> tuple[set[str], set[str]]:
    """(series the worker exposes, recording rule names) from docs/metrics.md's tables."""
    exposed: set[str] = set()
    rules: set[str] = set()
    section = ""
    for line in METRICS_DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line
            continue
        row = re.match(r"^\|\s*`([A-Za-z_:][\w:]*)`\s*\|\s*([^|]*)\|", line)
        if not row:
            continue
        name, kind = row.group(1), row.group(2).strip()
        if "Recording rules" in section:
            rules.add(name)
        elif "Exposed by the worker" in section:
            exposed.update(series_names(name, kind))
    assert exposed and rules, "docs/metrics.md tables not found"
    return exposed, rules


def series_names(name: str, kind: str) -> set[str]:
    """The series a family of this name and type shows in Prometheus."""
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    if kind == "summary":
        return {name, f"{name}_sum", f"{name}_count"}
    if kind == "counter":
        base = name.removesuffix("_total")
        return {f"{base}_total", f"{base}_created"}
    return {name}


def faust_sensor_names() -> set[str]:
    """Every series name of Faust's Prometheus sensor, with the worker's prefix."""
    from faust.sensors.prometheus import FaustMetrics

    registry = CollectorRegistry()
    FaustMetrics.create(registry, FAUST_PREFIX)
    names: set[str] = set()
    for family in registry.collect():
        names.update(series_names(family.name, family.type))
    return names


def test_documented_names_parse() -> None:
    exposed, rules = documented_names()
    assert "engagement_active_users" in exposed
    assert "engagement_event_lag_seconds_bucket" in exposed
    assert "engagement_events_total" in exposed
    assert "engagement:active_users:sum" in rules


def test_faust_sensor_names() -> None:
    names = faust_sensor_names()
    assert f"{FAUST_PREFIX}_topic_partition_end_offset" in names
    assert f"{FAUST_PREFIX}_topic_partition_offset_commited" in names
    assert f"{FAUST_PREFIX}_rebalance_done_latency_count" in names
    assert f"{FAUST_PREFIX}_messages_received_total" in names


def test_every_referenced_metric_exists() -> None:
    exposed, rules = documented_names()
    known = exposed | rules | faust_sensor_names() | PROMETHEUS_BUILTINS
    referenced = referenced_metrics()
    assert "engagement:active_users:sum" in referenced  # the parser found something
    unknown = {name: sorted(where) for name, where in referenced.items() if name not in known}
    assert not unknown, f"panels query metrics nobody produces: {unknown}"


def test_recording_rules_used_are_defined_in_the_rules() -> None:
    defined: set[str] = set()
    for path in sorted(RULES_DIR.glob("*.yml")) + sorted(RULES_DIR.glob("*.yaml")):
        defined.update(
            re.findall(r"^\s*-?\s*record:\s*['\"]?([\w:]+)", path.read_text("utf-8"), re.M)
        )
    if not defined:
        pytest.skip("no recording rules in deploy/prometheus/rules/ yet")
    used = {name for name in referenced_metrics() if ":" in name}
    assert used <= defined, f"not recorded by any rule: {sorted(used - defined)}"


# --- grafana.queries ------------------------------------------------------------------


def test_panel_queries_substitute_everything() -> None:
    queries = panel_queries(VALUES)
    assert len(queries) >= 25
    for q in queries:
        assert "$" not in q.expr and "[[" not in q.expr, q
        assert q.dashboard_uid in {uid for uid, _ in EXPECTED.values()}
        assert q.panel_title and q.ref_id
    assert any('platform="twitter", community="acme"' in q.expr for q in queries)
    assert any(f"[{GRAFANA_BUILTINS['__rate_interval']}]" in q.expr for q in queries)


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each substituted expression (as a recording rule's expr)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: run `deploy/local/stack install` (Debian: prometheus)")
    queries = panel_queries({"app": "shop", "platform": "twitter", "community": "*"})
    rules = {
        "groups": [
            {
                "name": "dashboard-queries",
                "rules": [
                    {"record": f"dashboard:q{i}", "expr": q.expr} for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "queries.yml"
    path.write_text(json.dumps(rules), encoding="utf-8")  # JSON is YAML
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def promtool_test(tmp_path: Path, input_series: dict[str, str], tests: list[Any]) -> None:
    """Evaluate expressions over synthetic series with `promtool test rules`."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: run `deploy/local/stack install` (Debian: prometheus)")
    (tmp_path / "none.yml").write_text('{"groups": []}', encoding="utf-8")
    spec = {
        "rule_files": ["none.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": k, "values": v} for k, v in input_series.items()],
                "promql_expr_test": tests,
            }
        ],
    }
    (tmp_path / "test.yml").write_text(json.dumps(spec), encoding="utf-8")
    done = subprocess.run(
        [promtool, "test", "rules", "test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def panel_expr(values: dict[str, str], title: str) -> str:
    [expr] = [q.expr for q in panel_queries(values) if q.panel_title == title]
    return expr


def test_events_by_type_for_all_communities_and_one(tmp_path: Path) -> None:
    """The worker counts events per community only: "*" must sum them, once."""
    title = "Events/s by type"
    rate = "engagement:events:rate5m"
    promtool_test(
        tmp_path,
        {
            f'{rate}{{app="shop",platform="twitter",community="acme",type="like"}}': "1 1 1",
            f'{rate}{{app="shop",platform="twitter",community="beta",type="like"}}': "2 2 2",
            f'{rate}{{app="shop",platform="twitter",community="beta",type="share"}}': "4 4 4",
            f'{rate}{{app="shop",platform="mastodon",community="acme",type="like"}}': "8 8 8",
            # another app on the same Prometheus: never in shop's numbers
            f'{rate}{{app="blog",platform="twitter",community="acme",type="like"}}': "16 16 16",
        },
        [
            {
                "expr": panel_expr({**VALUES, "community": "*"}, title),
                "eval_time": "1m",
                "exp_samples": [
                    {"labels": '{community="*",type="like"}', "value": 3},
                    {"labels": '{community="*",type="share"}', "value": 4},
                ],
            },
            {
                "expr": panel_expr(VALUES, title),
                "eval_time": "1m",
                "exp_samples": [{"labels": '{community="acme",type="like"}', "value": 1}],
            },
        ],
    )


def test_consumer_lag_per_partition(tmp_path: Path) -> None:
    end = f"{FAUST_PREFIX}_topic_partition_end_offset"
    committed = f"{FAUST_PREFIX}_topic_partition_offset_commited"
    labels = 'job="engagement-monitor",app="shop",topic="interactions"'
    other = 'job="engagement-monitor",app="blog",topic="interactions"'
    promtool_test(
        tmp_path,
        {
            f'{end}{{{labels},instance="w1",partition="0"}}': "100 100",
            f'{committed}{{{labels},instance="w1",partition="0"}}': "90 90",
            f'{end}{{{labels},instance="w2",partition="1"}}': "50 50",
            f'{committed}{{{labels},instance="w2",partition="1"}}': "50 50",
            # app blog reads the same topic in its own group, far behind: not shop's lag
            f'{end}{{{other},instance="w3",partition="0"}}': "100 100",
            f'{committed}{{{other},instance="w3",partition="0"}}': "0 0",
        },
        [
            {
                "expr": panel_expr(VALUES, "Consumer lag by topic/partition"),
                "eval_time": "1m",
                "exp_samples": [
                    {"labels": '{app="shop",topic="interactions",partition="0"}', "value": 10},
                    {"labels": '{app="shop",topic="interactions",partition="1"}', "value": 0},
                ],
            },
            {
                "expr": panel_expr(VALUES, "Consumer lag"),
                "eval_time": "1m",
                "exp_samples": [{"labels": "{}", "value": 10}],
            },
        ],
    )


def test_panel_queries_need_values_for_dashboard_variables() -> None:
    with pytest.raises(KeyError, match="platform"):
        panel_queries({})


def test_substitute_syntaxes() -> None:
    values = {"platform": "x", "community": "*"}
    assert substitute('a{p="$platform"}[$__rate_interval]', values) == 'a{p="x"}[1m]'
    assert substitute('a{c="${community}"}', values) == 'a{c="*"}'
    assert substitute('a{c="${community:raw}"}', values) == 'a{c="*"}'
    assert substitute('a{p="[[platform]]"}', values) == 'a{p="x"}'
    assert substitute("$__range $__range_s $__interval", {}) == "1h 3600 15s"
    assert substitute("x[$__range]", {"__range": "5m"}) == "x[5m]"
    with pytest.raises(KeyError):
        substitute("$nope", values)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('up{job="a"}', {"up"}),
        ("sum without (instance, job) (rate(foo_total[5m]))", {"foo_total"}),
        ("sum(rate(foo_total[5m])) by (type)", {"foo_total"}),
        ('a:b:c{x=~"y|z"} / on (p) group_left (q) d offset 1w', {"a:b:c", "d"}),
        ("time() - max(w_seconds)", {"w_seconds"}),
        ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[1m])))", {"h_bucket"}),
        ('topk(10, m{a!~"[*]|_other"})', {"m"}),
        ("x > bool 1e3 and y unless z or vector(1)", {"x", "y", "z"}),
        ('{__name__="by_name"}', {"by_name"}),
        ('m{label="with sum(fake_metric) inside"}', {"m"}),
        ("m @ start()", {"m"}),
        ("label_values(engagement_active_users, platform)", {"engagement_active_users"}),
        ('label_values(q{platform="$platform"}, community)', {"q"}),
        ("label_values(platform)", set()),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
