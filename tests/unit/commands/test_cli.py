"""Relative times as the docs write them (``--from -2m``), and --speed's range."""

from __future__ import annotations

import pytest

from commands import cli
from commands.replay import parse_speed
from commands.sources import parse_time_bound

NOW = 1_800_000_000_000


@pytest.mark.parametrize(
    "argv",
    [
        ["replay", "--from-topic", "X", "--from", "-2m", "--to", "now", "--speed", "10"],
        ["backfill", "--from", "-2d", "--to", "-3h"],
        ["rebuild", "--from", "-7m30s"],
        ["dlq", "stats", "--from", "-2h"],
    ],
)
def test_a_relative_time_is_a_value_not_an_option(argv: list[str]) -> None:
    args = cli.build_parser().parse_args(argv)
    assert args.start == argv[argv.index("--from") + 1]


def test_unknown_options_are_still_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["replay", "--from-topic", "X", "-z"])
    assert "unrecognized arguments: -z" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "ms"),
    [("-2m", NOW - 120_000), ("-7m30s", NOW - 450_000), ("+1h 30m", NOW + 5_400_000)],
)
def test_relative_times(text: str, ms: int) -> None:
    assert parse_time_bound(text, NOW) == ms


@pytest.mark.parametrize("text", ["0", "-1", "nan", "1e999", "fast"])
def test_speed_must_be_above_zero(text: str) -> None:
    with pytest.raises(ValueError, match="> 0"):
        parse_speed(text)


def test_speeds() -> None:
    assert parse_speed("max") is None
    assert parse_speed("0.5") == 0.5 and parse_speed("10") == 10
