"""Durations and window labels: exact integer milliseconds, labels kept as written."""

from __future__ import annotations

import pytest

from streams.durations import DEFAULT_WINDOWS, parse_duration_ms, parse_windows


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1ms", 1),
        ("90s", 90_000),
        ("5m", 300_000),
        (" 2 h ", 7_200_000),
        ("1d", 86_400_000),
        ("30d", 2_592_000_000),
        ("2w", 1_209_600_000),
    ],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "5", "m", "0s", "-1s", "1.5h", "1y", "5 minutes", "1h30m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration_ms(text)


def test_windows_sorted_by_length_labels_as_written() -> None:
    assert parse_windows("30d, 5m,1h ,90s") == {
        "90s": 90_000,
        "5m": 300_000,
        "1h": 3_600_000,
        "30d": 2_592_000_000,
    }
    assert list(parse_windows(DEFAULT_WINDOWS)) == ["5m", "1h", "1d", "7d", "30d"]
    with pytest.raises(ValueError, match="no windows given"):
        parse_windows(" , ")
