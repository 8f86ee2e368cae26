"""watch (and demo, through it) send EM_HTTP_TOKEN to a worker that requires it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from commands.watch import fetch


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        ok = self.headers.get("Authorization") == "Bearer t0ken"
        self.send_response(200 if ok else 401)
        self.end_headers()
        self.wfile.write(b"# EOF\n" if ok else b"unauthorized\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_sends_the_token(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EM_HTTP_TOKEN", "t0ken")
    assert fetch(url) == "# EOF\n"


def test_fetch_without_the_token_is_refused(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EM_HTTP_TOKEN", raising=False)
    monkeypatch.delenv("EM_HTTP_TOKEN_FILE", raising=False)
    with pytest.raises(OSError, match="401"):
        fetch(url)
