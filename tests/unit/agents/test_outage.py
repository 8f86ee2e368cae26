"""Outage logging: one line when a dependency fails, one when it is back."""

from __future__ import annotations

import logging

import pytest

from agents import outage as outage_mod
from agents.outage import Outage


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "agents.outage"]


def test_one_line_per_outage_and_one_on_recovery(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter([100.0, 102.5, 200.0, 200.25])
    monkeypatch.setattr(outage_mod.time, "monotonic", lambda: next(clock))
    caplog.set_level(logging.WARNING, "agents.outage")
    o = Outage("redis write failed", "redis writes resumed")
    o.ok()  # nothing to recover from: silent
    for _ in range(5):
        o.failed(ConnectionError("refused"))
    assert lines(caplog) == ["redis write failed (ConnectionError: refused); retrying"]
    assert (o.failures, o.since) == (5, 100.0)
    o.ok()
    o.ok()
    assert lines(caplog)[1:] == ["redis writes resumed after 2.5s (5 failed attempts)"]
    assert (o.failures, o.since) == (0, None)
    # a second outage is logged again, with its own count and duration
    o.failed(TimeoutError())
    o.ok()
    assert lines(caplog)[2:] == [
        "redis write failed (TimeoutError: timeout); retrying",
        "redis writes resumed after 0.2s (1 failed attempts)",
    ]


def test_default_recovery_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "agents.outage")
    o = Outage("changelog write failed")
    o.failed(OSError("broker down"))
    o.ok()
    assert lines(caplog)[0] == "changelog write failed (OSError: broker down); retrying"
    assert lines(caplog)[1].startswith("changelog write failed: recovered after ")
    assert len(lines(caplog)) == 2
