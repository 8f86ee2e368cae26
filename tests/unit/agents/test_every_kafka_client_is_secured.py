"""Every Kafka client the project constructs takes the security settings: a new
``AIOKafkaProducer/Consumer/AdminClient(...)`` without ``**client_kwargs()`` would talk
plaintext to a secured cluster (or fail there), so this scan fails instead."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PACKAGES = ("agents", "commands", "bench")


def _unsecured(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = str(getattr(node.func, "id", None) or getattr(node.func, "attr", ""))
        if not name.startswith("AIOKafka"):
            continue
        secured = any(
            kw.arg is None
            and isinstance(kw.value, ast.Call)
            and getattr(kw.value.func, "id", getattr(kw.value.func, "attr", "")) == "client_kwargs"
            for kw in node.keywords
        )
        if not secured:
            found.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
    return found


def test_every_aiokafka_client_gets_client_kwargs() -> None:
    files = [p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))]
    constructed = [p for p in files if "AIOKafka" in p.read_text()]
    assert len(constructed) >= 8  # the scan sees the clients at all
    assert [hit for p in constructed for hit in _unsecured(p)] == []
