"""The dashboards, one module each; ``DASHBOARDS`` maps output file name to builder."""

from __future__ import annotations

from collections.abc import Callable

from grafana_foundation_sdk.models.dashboard import Dashboard

from grafana.dashboards import overview, pipeline

#: file name in grafana/dashboards-json/ -> function building the dashboard model.
DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "engagement-overview.json": overview.build,
    "engagement-pipeline.json": pipeline.build,
}
