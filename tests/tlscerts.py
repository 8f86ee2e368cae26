"""Throw-away TLS material for tests, made with openssl: a CA, a server certificate for
127.0.0.1 and a client certificate signed by it, and a second CA (with a server
certificate of its own) that nobody trusts. EC P-256 keys: fast to make."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["make_certs"]


def openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {result.stderr}")


def _ca(folder: Path, name: str) -> None:
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip


def _signed(folder: Path, name: str, ca: str, ext: str) -> None:
    (folder / f"{name}.ext").write_text(ext)
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=folder,
    )  # fmt: skip


def make_certs(folder: Path) -> Path:
    """ca.pem, server.{pem,key} (for 127.0.0.1), client.{pem,key}, and other-ca.pem
    with other-client.{pem,key} signed by it (trusted by nobody)."""
    folder.mkdir(parents=True, exist_ok=True)
    _ca(folder, "ca")
    _ca(folder, "other-ca")
    server_ext = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    client_ext = "extendedKeyUsage=clientAuth\n"
    _signed(folder, "server", "ca", server_ext)
    _signed(folder, "client", "ca", client_ext)
    _signed(folder, "other-server", "other-ca", server_ext)
    # Kafka's PEM keystore: the (PKCS#8) key, then the certificate chain.
    (folder / "server-keystore.pem").write_text(
        (folder / "server.key").read_text() + (folder / "server.pem").read_text()
    )
    return folder
