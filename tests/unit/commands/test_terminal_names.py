"""Terminal views print names literally: a community named like rich markup must
neither crash ``status``/``status --watch``/``top``/``watch``/``demo`` nor style
or link anything (regression: ``[/bold]`` raised MarkupError, ``[link=…]``
injected a terminal hyperlink)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from agents.readmodel import Snapshot, status_document, sum_snapshots
from commands import status, watch

HOSTILE = ["[/bold]", "[link=http://evil.example]click[/link]", "[red]x", "a[/]b"]
W = {"1d": 86_400_000, "30d": 30 * 86_400_000}


def rendered(renderable: Any) -> str:
    out = io.StringIO()
    Console(file=out, width=400, color_system="truecolor", force_terminal=True).print(renderable)
    return out.getvalue()


@pytest.mark.parametrize("name", HOSTILE)
def test_status_table_shows_markup_literally(name: str) -> None:
    snap = Snapshot(0, 1, 1, 1, W, {(name, name): {"1d": 1, "30d": 2}}, {(name, name): 3})
    text = rendered(status.build_table(status_document(sum_snapshots([snap]), "app")))
    assert text.count(name) == 2  # platform and community, as written
    assert "\x1b]8;" not in text  # no OSC 8 hyperlink


@pytest.mark.parametrize("name", HOSTILE)
def test_watch_and_demo_table_shows_markup_literally(name: str) -> None:
    """demo shows watch's table (watch.render → build_table)."""
    table = watch.build_table({(name, name): {"1d": 5.0}}, {(name, name): 2.0}, ["1d"], 5, name)
    text = rendered(table)
    assert text.count(name) == 3  # title, platform, community
    assert "\x1b]8;" not in text
