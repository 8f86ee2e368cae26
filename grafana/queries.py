"""Read the generated dashboards back: every panel's PromQL, and the metrics it names.

For the live test (run each panel's query against the Prometheus that scrapes a
running worker)::

    from grafana.queries import panel_queries
    for q in panel_queries({"platform": "twitter", "community": "acme"}):
        # q.dashboard_uid, q.panel_title, q.ref_id, q.expr (substituted), q.instant
        ...  # GET /api/v1/query?query=q.expr  (or query_range when not q.instant)

Template variables are substituted from the given values, plus Grafana's built-ins
(``$__rate_interval`` → ``1m``, ``$__interval`` → ``15s``, ``$__range`` → ``1h``, …; see
:data:`GRAFANA_BUILTINS`). A variable with no value raises :class:`KeyError`, so a
query can't silently reach Prometheus with a ``$`` left in it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana import DASHBOARDS_JSON_DIR

#: Values of Grafana's built-in variables used when running queries outside Grafana.
GRAFANA_BUILTINS: dict[str, str] = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

# ${name}, ${name:format}, $name, [[name]] (Grafana's three variable syntaxes).
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel, with its variables substituted."""

    dashboard_uid: str
    panel_title: str
    ref_id: str
    expr: str
    #: True: run as an instant query (/api/v1/query); False: a range query.
    instant: bool
    legend: str | None = None


@dataclass(frozen=True)
class VariableQuery:
    """A dashboard variable's query (Grafana's ``label_values(selector, label)`` form)."""

    dashboard_uid: str
    name: str
    query: str
    datasource_uid: str | None


def substitute(text: str, values: Mapping[str, str] | None = None) -> str:
    """Replace every template variable in text; unknown variables raise KeyError."""
    known = {**GRAFANA_BUILTINS, **(values or {})}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in known:
            raise KeyError(f"no value for template variable ${name} in {text!r}")
        return known[name]

    return _VARIABLE.sub(replace, text)


def load_dashboards(directory: Path = DASHBOARDS_JSON_DIR) -> list[dict[str, Any]]:
    """The dashboards in directory (sorted by file name), as parsed JSON."""
    return [
        json.loads(path.read_text(encoding="utf-8")) for path in sorted(directory.glob("*.json"))
    ]


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included (rows themselves too)."""
    for panel in dashboard.get("panels") or []:
        yield panel
        yield from panel.get("panels") or []


def panel_queries(
    values: Mapping[str, str] | None = None,
    directory: Path = DASHBOARDS_JSON_DIR,
    *,
    dashboards: list[dict[str, Any]] | None = None,
) -> list[PanelQuery]:
    """Every (dashboard uid, panel title, expr) of the generated dashboards.

    ``values`` maps template variable names to values (e.g. ``{"platform": "twitter",
    "community": "acme"}``); Grafana's built-ins need none. Hidden targets are included.
    """
    result = []
    for dashboard in dashboards if dashboards is not None else load_dashboards(directory):
        for panel in iter_panels(dashboard):
            for target in panel.get("targets") or []:
                expr = target.get("expr")
                if not expr:
                    continue
                result.append(
                    PanelQuery(
                        dashboard_uid=dashboard["uid"],
                        panel_title=panel.get("title", ""),
                        ref_id=target.get("refId", ""),
                        expr=substitute(expr, values),
                        instant=bool(target.get("instant")) and not target.get("range"),
                        legend=target.get("legendFormat"),
                    )
                )
    return result


def variable_queries(
    directory: Path = DASHBOARDS_JSON_DIR, *, dashboards: list[dict[str, Any]] | None = None
) -> list[VariableQuery]:
    """Every query variable of the generated dashboards (unsubstituted)."""
    result = []
    for dashboard in dashboards if dashboards is not None else load_dashboards(directory):
        for variable in (dashboard.get("templating") or {}).get("list") or []:
            if variable.get("type") != "query":
                continue
            query = variable.get("query")
            if isinstance(query, Mapping):
                query = query.get("query", "")
            datasource = variable.get("datasource")
            uid = datasource.get("uid") if isinstance(datasource, Mapping) else None
            result.append(
                VariableQuery(
                    dashboard_uid=dashboard["uid"],
                    name=variable["name"],
                    query=str(query or ""),
                    datasource_uid=uid,
                )
            )
    return result


# --- PromQL identifiers -------------------------------------------------------------

#: Words that are PromQL syntax, not metric names.
PROMQL_KEYWORDS = frozenset(
    {
        "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
        "group_right", "offset", "bool", "inf", "nan", "atan2", "start", "end",
    }
)  # fmt: skip

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?")
_LABEL_VALUES = re.compile(r"^\s*label_values\s*\((.*)\)\s*$", re.DOTALL)


def metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (or a ``label_values`` query).

    Crude but sufficient for dashboards: strings, label matchers, ranges/offsets and
    grouping label lists are removed first; what remains of the form ``name`` not
    followed by ``(`` (a function or aggregation) and not a keyword is a metric name.
    Template variables must be substituted first (or are left out: ``$x`` is skipped).
    """
    label_values = _LABEL_VALUES.match(expr)
    if label_values:
        inner = label_values.group(1)
        # label_values(selector, label) or label_values(label): the selector, if any.
        if "," not in _BRACES.sub("{}", _STRING.sub('""', inner)):
            return set()
        expr = inner.rsplit(",", 1)[0]
    names: set[str] = set(re.findall(r'__name__\s*=\s*"([^"]*)"', expr))
    text = _STRING.sub('""', expr)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def referenced_metrics(
    directory: Path = DASHBOARDS_JSON_DIR, *, dashboards: list[dict[str, Any]] | None = None
) -> dict[str, set[tuple[str, str]]]:
    """Metric name -> {(dashboard uid, panel title or "$variable")} that reference it.

    Covers every panel target and every query variable.
    """
    loaded = dashboards if dashboards is not None else load_dashboards(directory)
    found: dict[str, set[tuple[str, str]]] = {}
    for dashboard in loaded:
        for panel in iter_panels(dashboard):
            for target in panel.get("targets") or []:
                for name in metric_names(target.get("expr") or ""):
                    found.setdefault(name, set()).add((dashboard["uid"], panel.get("title", "")))
    for variable in variable_queries(dashboards=loaded):
        for name in metric_names(variable.query):
            found.setdefault(name, set()).add((variable.dashboard_uid, f"${variable.name}"))
    return found
