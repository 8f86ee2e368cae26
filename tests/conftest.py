"""Shared test configuration; nothing heavy here (unit tests must stay fast).

Every test under tests/integration/ is marked ``integration``, so
``pytest -m "not integration"`` runs the unit tests alone, without any service.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

INTEGRATION_DIR = Path(__file__).parent / "integration"

# The machines are shared and noisy: a property test is judged by its examples, never
# by how fast this run could generate them.
settings.register_profile(
    "shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("shared-machine")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)
