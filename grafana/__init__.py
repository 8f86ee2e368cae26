"""Grafana dashboards as code for engagement-monitor.

``python -m grafana.build`` regenerates ``grafana/dashboards-json/*.json`` from the
builders in :mod:`grafana.dashboards`; :mod:`grafana.queries` reads the generated JSON
back (every panel's PromQL, every metric name it references) for tests.
"""

from __future__ import annotations

from pathlib import Path

#: The folder of this package (``grafana/`` in the repository).
PACKAGE_DIR = Path(__file__).resolve().parent
#: Where ``python -m grafana.build`` writes the dashboards (and Grafana reads them).
DASHBOARDS_JSON_DIR = PACKAGE_DIR / "dashboards-json"
#: Grafana file provisioning (datasources/, dashboards/).
PROVISIONING_DIR = PACKAGE_DIR / "provisioning"
