"""EM_STACK_SECURE: TLS material and credentials for the stack's secure listeners.

Made once with openssl into ``<state>/tls``: a CA, a server certificate for
127.0.0.1/localhost (Kafka's SASL_SSL and SSL listeners, Redis' TLS port), a client
certificate for mutual TLS, Kafka's PEM keystore, random passwords for the Kafka SCRAM
user and the Redis ACL user (owner-only files), and Redis' ACL file. EC P-256 keys,
valid 30 days: development material, not a PKI.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

from emstack.config import Config, StackError

KAFKA_USER = "em-monitor"
REDIS_USER = "em-monitor"
DAYS = "30"


def openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"openssl {' '.join(args)}: {result.stderr.strip()}")


def make_ca(folder: Path, name: str) -> None:
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", DAYS, "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip


def make_signed(folder: Path, name: str, ca: str, ext: str) -> None:
    (folder / f"{name}.ext").write_text(ext)
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", DAYS, "-extfile", f"{name}.ext",
        cwd=folder,
    )  # fmt: skip


SERVER_EXT = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
CLIENT_EXT = "extendedKeyUsage=clientAuth\n"


def make_certs(folder: Path) -> Path:
    """ca.pem; server.{pem,key} for 127.0.0.1; client.{pem,key}; server-keystore.pem."""
    folder.mkdir(parents=True, exist_ok=True)
    make_ca(folder, "ca")
    make_signed(folder, "server", "ca", SERVER_EXT)
    make_signed(folder, "client", "ca", CLIENT_EXT)
    # Kafka's PEM keystore: the (PKCS#8) key, then the certificate chain; owner-only
    keystore = folder / "server-keystore.pem"
    fd = os.open(keystore, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write((folder / "server.key").read_text() + (folder / "server.pem").read_text())
    return folder


def folder(cfg: Config) -> Path:
    return cfg.state_dir / "tls"


def _secret_file(path: Path) -> str:
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


def ensure(cfg: Config) -> Path:
    """The material, made on first use; the same files on every later `up`."""
    tls = folder(cfg)
    if not (tls / "server-keystore.pem").exists():
        make_certs(tls)
    password = _secret_file(tls / "redis-password")
    acl = tls / "redis-users.acl"
    fd = os.open(acl, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:  # the default user stays open on the plaintext port
        out.write(
            f"user default on nopass ~* &* +@all\nuser {REDIS_USER} on >{password} ~* &* +@all\n"
        )
    _secret_file(tls / "kafka-password")
    return tls


def kafka_users(cfg: Config) -> dict[str, str]:
    return {KAFKA_USER: _secret_file(folder(cfg) / "kafka-password")}
