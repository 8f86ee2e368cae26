"""Shared test configuration; nothing heavy here (unit tests must stay fast).

Every test under tests/integration/ is marked ``integration``, so
``pytest -m "not integration"`` runs the unit tests alone, without any service.
"""

from __future__ import annotations

from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)
