"""The two worked examples of docs/own-kafka.md, checked as the page describes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.events import Event, InvalidEvent, Limits, parse_event
from streams.mapping import from_file

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"
NOW = 1_795_824_000_000  # 2026-11-28T00:00:00Z, after every sample


def mapped(name: str) -> list[Event | str]:
    """Each sample line as an Event, or "reason: detail" when refused."""
    mapping = from_file(str(EXAMPLES / f"{name}.toml"))
    out: list[Event | str] = []
    for line in (EXAMPLES / f"{name}.jsonl").read_bytes().splitlines():
        try:
            out.append(parse_event(line, NOW, Limits(), mapping))
        except InvalidEvent as exc:
            out.append(str(exc))
    return out


def test_example_1_activity_feed() -> None:
    at = 1_795_770_902_000  # 2026-11-27T09:15:02Z
    assert mapped("actor-page") == [
        Event("-", at, "facebook", "acme", "1001", "like"),
        Event("-", at + 5_000, "facebook", "acme", "1002", "comment"),
        Event("-", at + 88_000, "facebook", "globex", "1001", "follow"),
        "missing_field: missing user_id (path actor.id)",
    ]


def test_example_2_clickstream() -> None:
    assert mapped("clickstream") == [
        Event("c-1", 1_795_770_900_123, "web", "shop.example", "42", "view"),
        Event("c-2", 1_795_770_901_000, "web", "shop.example", "42", "comment"),
        Event("c-3", 1_795_770_902_500, "ios", "shop.example", "a-7", "follow"),
        "bad_timestamp: ts is not an epoch number: 'yesterday'",
    ]


@pytest.mark.parametrize("name", ["actor-page", "clickstream"])
def test_the_page_shows_the_files_as_they_are(name: str) -> None:
    page = (EXAMPLES.parent / "own-kafka.md").read_text()
    for line in (EXAMPLES / f"{name}.toml").read_text().splitlines()[1:]:
        assert ("    " + line).rstrip() in page.splitlines() or not line.strip(), line
