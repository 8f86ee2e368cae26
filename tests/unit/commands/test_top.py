"""top: an unknown community exits 1 (a quiet day of a known one does not); --limit is
capped like the API's."""

from __future__ import annotations

from typing import Any

import pytest

from commands import cli, status
from tests.unit.commands.test_api import APP, DAY, FakeRedis, fed


@pytest.fixture
def redis(monkeypatch: pytest.MonkeyPatch) -> FakeRedis:
    fake = fed()

    async def with_fake(url: str, fn: Any) -> Any:
        return await fn(fake)

    monkeypatch.setattr(status, "_with_client", with_fake)
    return fake


def top(*argv: str) -> int:
    return cli.main(["top", *argv, "--app-id", APP, "--day", DAY])


def test_known_and_unknown_communities(redis: FakeRedis, capsys: pytest.CaptureFixture) -> None:
    assert top("acme") == 0
    assert "u1" in capsys.readouterr().out
    assert top("beta") == 0  # counted in the snapshots, no top users that day: not an error
    assert top("nosuch") == 1
    assert "unknown community 'nosuch'" in capsys.readouterr().err
    assert top("nosuch", "--json") == 1


def test_limit_is_capped_like_the_api(redis: FakeRedis, capsys: pytest.CaptureFixture) -> None:
    assert top("acme", "--limit", "1000") == 0
    assert top("acme", "--limit", "1001") == 2
    assert "--limit must be between 1 and 1000" in capsys.readouterr().err
