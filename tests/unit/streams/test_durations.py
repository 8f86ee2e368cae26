"""Durations and window labels: exact integer milliseconds, labels kept as written."""

from __future__ import annotations

import pytest

from streams.durations import DEFAULT_WINDOWS, describe_ms, parse_duration_ms, parse_windows
from streams.events import InvalidEvent, Limits, validate


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


@pytest.mark.parametrize("text", ["", "5", "m", "0s", "-1s", "1.5h", "1y", "5 minutes"])
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


# compound durations (replay's --from -7m30s) and readable lengths in errors


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("5m", 300_000),
        ("7m30s", 450_000),
        ("1h 30m", 5_400_000),
        ("1d2h", 93_600_000),
        ("250ms", 250),
        ("2w", 1_209_600_000),
    ],
)
def test_single_and_compound(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "5", "m", "7m30", "5 minutes", "-5m", "0s", "1.5h"])
def test_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration_ms(text)


@pytest.mark.parametrize(
    ("ms", "said"),
    [
        (2_275_136_944_000, "72 years"),
        (26 * 86_400_000 + 5_000, "26 days"),
        (3 * 3_600_000, "3 hours"),
        (300_000, "5 minutes"),
        (90_000, "90 seconds"),
        (1_500, "1.5 seconds"),
        (40, "40 ms"),
    ],
)
def test_described_as_people_say_it(ms: int, said: str) -> None:
    assert describe_ms(ms) == said


def test_future_timestamp_error_is_readable() -> None:
    now = 1_800_000_000_000
    event = {"event_id": "e", "platform": "p", "community": "c", "user_id": "u", "type": "like"}
    with pytest.raises(InvalidEvent) as info:
        validate({**event, "ts": now + 26 * 86_400_000}, now, Limits())
    assert info.value.detail == "ts is 26 days in the future (tolerance 5 minutes)"
