"""Throw-away TLS material for tests: the stack's (emstack.tls — a CA, a server
certificate for 127.0.0.1, a client certificate) plus a second CA that nobody trusts."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy" / "local"))

import emstack.tls as tls  # noqa: E402

__all__ = ["make_certs", "untrusted_ca"]


def make_certs(folder: Path) -> Path:
    """ca.pem, server.{pem,key} (for 127.0.0.1), client.{pem,key} in ``folder``."""
    return tls.make_certs(folder)


def untrusted_ca(folder: Path) -> Path:
    """A CA that signed nothing the tests' servers present: trusting only it fails."""
    folder.mkdir(parents=True, exist_ok=True)
    tls.make_ca(folder, "other-ca")
    return folder / "other-ca.pem"
