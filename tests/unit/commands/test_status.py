"""status: the table fits an 80-column terminal (or a pipe) without cutting names or
numbers; what does not fit is named in the caption."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from agents.readmodel import Snapshot, status_document, sum_snapshots
from commands.status import build_table

W = {"5m": 300_000, "1h": 3_600_000, "1d": 86_400_000, "7d": 604_800_000, "30d": 2_592_000_000}
NAMES = [("instagram", "brand-00-with-a-rather-long-name"), ("twitter", "acme"), ("tiktok", "b")]


def doc() -> dict:
    big = {w: 1_234_567 * (i + 1) for i, w in enumerate(W)}
    active = {pc: dict(big) for pc in NAMES}
    followers = {pc: 98_765_432 for pc in NAMES}
    return status_document(sum_snapshots([Snapshot(0, 1, 1, 1, W, active, followers)]), "app")


def render(width: int) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(build_table(doc(), width))
    return out.getvalue().splitlines()


@pytest.mark.parametrize("width", [80, 100])
def test_fits_and_cuts_nothing(width: int) -> None:
    lines = render(width)
    assert max(len(line) for line in lines) <= width
    text = "\n".join(lines)
    assert "…" not in text
    header = next(line for line in lines if "community" in line)
    left = header.index("community")
    body = lines[lines.index(header) + 2 :]
    column = "".join(line[left:].strip().split("  ")[0] for line in body)
    for platform, community in NAMES:
        assert platform in text and community in column  # a long name may fold, never cut
    full = ("1,234,567", "6,172,835", "98,765,432")  # 5m, 30d, followers
    compact = ("1.23M", "6.17M", "98.8M")
    assert all(n in text for n in full) or all(n in text for n in compact)
    assert "not shown for width" in text  # the ratio columns, named in the caption


def test_wide_terminal_shows_everything_in_full() -> None:
    text = "\n".join(render(200))
    assert "DAU/MAU" in text and "not shown" not in text and "98,765,432" in text
