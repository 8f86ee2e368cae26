"""watch: where it looks (EM_WEB_PORT, host:port URLs) and what --once says about it."""

from __future__ import annotations

import socket

import pytest

from commands import cli
from commands.watch import default_url, metrics_url


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("127.0.0.1:6099", "http://127.0.0.1:6099/metrics"),
        ("http://127.0.0.1:6099", "http://127.0.0.1:6099/metrics"),
        ("https://h:1/custom", "https://h:1/custom"),
        (" host:6066/metrics ", "http://host:6066/metrics"),
    ],
)
def test_url_without_scheme_or_path(given: str, url: str) -> None:
    assert metrics_url(given) == url


def test_default_port_is_em_web_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EM_WEB_PORT", "6123")
    assert default_url() == "http://127.0.0.1:6123/metrics"
    args = cli.build_parser().parse_args(["watch", "--once"])
    assert args.url == "http://127.0.0.1:6123/metrics"
    monkeypatch.delenv("EM_WEB_PORT")
    assert default_url() == "http://127.0.0.1:6066/metrics"


def test_once_on_a_dead_worker_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert cli.main(["watch", "--once", "--url", f"127.0.0.1:{port}"]) == 1
    assert f"127.0.0.1:{port}/metrics" in capsys.readouterr().out
