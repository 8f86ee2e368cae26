"""The package map of docs/architecture.md, enforced: imports run commands -> agents -> streams.

Reads every module's source (imports inside functions included) rather than importing
it, so a forbidden import hidden in a rarely-run function still fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: package -> the project packages it may import (besides itself).
ALLOWED = {
    "streams": set(),
    "agents": {"streams"},
    "commands": {"agents", "streams"},
}
PROJECT = set(ALLOWED) | {"tests", "bench", "grafana"}
#: ``streams`` is the pure core: no client of any service, no server.
IO_LIBRARIES = {"aiokafka", "faust", "mode", "redis", "aiohttp", "prometheus_client", "kafka"}


def imported_roots(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, wherever the import stands."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_run_one_way(package: str) -> None:
    wrong = {
        f"{path.relative_to(REPO)} imports {root}"
        for path in modules(package)
        for root in imported_roots(path) & PROJECT
        if root != package and root not in ALLOWED[package]
    }
    assert not wrong, sorted(wrong)


def test_streams_is_pure() -> None:
    found = {
        f"{path.relative_to(REPO)} imports {root}"
        for path in modules("streams")
        for root in imported_roots(path) & IO_LIBRARIES
    }
    assert not found, sorted(found)


def test_bench_never_imports_tests() -> None:
    found = [str(p.relative_to(REPO)) for p in modules("bench") if "tests" in imported_roots(p)]
    assert not found


def test_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The checker itself: an import inside a function is found."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from agents.app import build\n    import aiokafka.admin\n")
    assert imported_roots(module) == {"agents", "aiokafka"}
