"""Shared pieces of the dashboards: the datasource, query and panel helpers.

Every panel and every target names the provisioned Prometheus datasource by its fixed
uid (``grafana/provisioning/datasources/prometheus.yml``), so the JSON works unchanged
in the compose stack and, after setting that uid, in any other Grafana.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    StackingConfig,
    TableSortByFieldState,
)
from grafana_foundation_sdk.builders.common import VizLegendOptions as Legend
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from streams.metric_names import FAUST_METRIC_PREFIX

#: uid of the provisioned Prometheus datasource; the only datasource panels use.
DATASOURCE_UID = "engagement-prometheus"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)

#: Prometheus job of the workers (deploy/prometheus/prometheus.yml).
JOB = "engagement-monitor"

#: Prefix of Faust's own sensor families (faust.sensors.prometheus), as the worker sets it.
FAUST_PREFIX = FAUST_METRIC_PREFIX

#: Matcher of the selected app id: every worker labels its samples ``app`` (its
#: EM_APP_ID), so several apps scraped by one job are shown apart, never summed.
APP_SEL = 'app="$app"'

#: Tag shared by the dashboards (links between them use it).
TAG = "engagement-monitor"

#: Grafana's refIds, in order.
REF_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def query(
    expr: str,
    legend: str | None = None,
    *,
    ref_id: str = "A",
    instant: bool = False,
    as_table: bool = False,
) -> prometheus.Dataquery:
    """A Prometheus target on the provisioned datasource."""
    target = prometheus.Dataquery().expr(expr).ref_id(ref_id).datasource(DATASOURCE)
    target = target.instant() if instant else target.range()
    if legend is not None:
        target = target.legend_format(legend)
    if as_table:
        target = target.format(PromQueryFormat.TABLE)
    return target


def targets(*exprs: tuple[str, str]) -> list[Builder[Any]]:
    """Range targets from (expr, legend) pairs, refIds A, B, …"""
    return [query(expr, legend, ref_id=REF_IDS[i]) for i, (expr, legend) in enumerate(exprs)]


def stat_panel(
    title: str,
    description: str,
    expr: str,
    *,
    unit: str = "short",
    width: int = 6,
    height: int = 4,
    decimals: float | None = None,
    thresholds: list[tuple[float | None, str]] | None = None,
) -> stat.Panel:
    """A single-value panel: last value of a range query, with a sparkline."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query(expr))
        .unit(unit)
        .span(width)
        .height(height)
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(_thresholds(thresholds or [(None, "green")]))
    )
    if decimals is not None:
        panel = panel.decimals(decimals)
    return panel


def timeseries_panel(
    title: str,
    description: str,
    series: list[Builder[Any]],
    *,
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    stacked: bool = False,
    min_zero: bool = True,
) -> timeseries.Panel:
    """A time series panel over the given targets."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(series)
        .unit(unit)
        .span(width)
        .height(height)
        .line_width(1)
        .fill_opacity(10 if not stacked else 40)
        .show_points(common.VisibilityMode.NEVER)
        .legend(
            Legend()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    if min_zero:
        panel = panel.min(0)
    if stacked:
        panel = panel.stacking(StackingConfig().mode(common.StackingMode.NORMAL))
    return panel


def table_panel(
    title: str,
    description: str,
    expr: str,
    *,
    exclude: list[str],
    rename: dict[str, str] | None = None,
    sort_desc: str | None = None,
    width: int = 12,
    height: int = 8,
) -> table.Panel:
    """A table of an instant query's series, one row per series (labels as columns)."""
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query(expr, ref_id="A", instant=True, as_table=True))
        .span(width)
        .height(height)
        .show_header(True)
        .cell_height(common.TableCellHeight.SM)
        .with_transformation(
            model.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {name: True for name in exclude},
                    "renameByName": dict(rename or {}),
                },
            )
        )
    )
    if sort_desc is not None:
        panel = panel.sort_by([TableSortByFieldState().display_name(sort_desc).desc(True)])
    return panel


def app_variable() -> db.QueryVariable:
    """``$app``: the app id (label ``app``) whose numbers a dashboard shows."""
    return (
        db.QueryVariable("app")
        .label("App")
        .description("App id of the workers (EM_APP_ID, label app)")
        .datasource(DATASOURCE)
        .query("label_values(engagement_watermark_seconds, app)")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .include_all(False)
        .multi(False)
    )


def row(title: str) -> db.Row:
    return db.Row(title)


def _thresholds(steps: list[tuple[float | None, str]]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


def builtin_annotations() -> db.AnnotationQuery:
    """Grafana's own "Annotations & Alerts" (what Grafana adds to every dashboard)."""
    return (
        db.AnnotationQuery()
        .name("Annotations & Alerts")
        .datasource(model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .enable(True)
        .hide(True)
        .icon_color("rgba(0, 211, 255, 1)")
        .type("dashboard")
        .built_in(1)
    )


def base_dashboard(title: str, uid: str, description: str) -> db.Dashboard:
    """Dashboard defaults shared by both dashboards (variables: an empty list)."""
    return (
        db.Dashboard(title)
        .uid(uid)
        .variables([])
        .annotations([builtin_annotations()])
        .description(description)
        .tags([TAG])
        .editable()
        .timezone(common.TimeZoneBrowser)
        .refresh("30s")
        .time("now-6h", "now")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .link(
            db.DashboardLink("Engagement monitor")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(False)
            .include_vars(True)
            .keep_time(True)
        )
    )


def finish(dashboard: db.Dashboard) -> model.Dashboard:
    """Build, then number every panel (rows included) 1, 2, … in layout order."""
    built = dashboard.build()
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number
    return built
