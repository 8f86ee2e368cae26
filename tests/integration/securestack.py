"""A test-owned secure stack: `deploy/local/stack`'s Kafka and Redis with EM_STACK_SECURE,
in their own state folder, on free ports, apart from the shared stack.

Started by the stack script's own code (emstack: the same configuration, TLS material,
SCRAM users at format time, readiness checks as ``EM_STACK_SECURE=1 stack up``), only
the two services the secure tests need; stopped by their PID files at the end.

* Kafka: a ``SASL_SSL`` listener (SCRAM-SHA-256/512) and an ``SSL`` listener that
  requires a client certificate, beside the plaintext one;
* Redis: a TLS port and the ACL user ``em-monitor``.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.workers import free_port

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "local"))

import emstack.cli as stack_cli  # noqa: E402
import emstack.procs as procs  # noqa: E402
import emstack.tls as tls  # noqa: E402
from emstack.config import Config  # noqa: E402
from emstack.services import by_name  # noqa: E402

PORTS = (
    "KAFKA_PORT",
    "KAFKA_CONTROLLER_PORT",
    "KAFKA_SASL_SSL_PORT",
    "KAFKA_SSL_PORT",
    "REDIS_PORT",
    "REDIS_TLS_PORT",
)
SERVICES = ("kafka", "redis")


@dataclass
class SecureStack:
    folder: Path
    ports: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in PORTS})

    @property
    def cfg(self) -> Config:
        env = {name: str(port) for name, port in self.ports.items()}
        return Config.from_env(env | {"EM_STATE_DIR": str(self.folder), "EM_STACK_SECURE": "1"})

    @property
    def certs(self) -> Path:
        return tls.folder(self.cfg)

    @property
    def kafka_password(self) -> str:
        return (self.certs / "kafka-password").read_text().strip()

    @property
    def redis_password(self) -> str:
        return (self.certs / "redis-password").read_text().strip()

    def start(self) -> SecureStack:
        cfg, started = self.cfg, time.monotonic()
        try:
            for name in SERVICES:
                stack_cli._start(cfg, by_name(name))  # noqa: SLF001 - `up` for two services
            for name in SERVICES:
                stack_cli._wait_ready(cfg, by_name(name), started)  # noqa: SLF001
            asyncio.run(self._wait_sasl_ready(timeout=60))
        except BaseException:
            self.stop()
            raise
        return self

    async def _wait_sasl_ready(self, timeout: float) -> None:
        """The plaintext listener answers first; wait until SCRAM logins work too."""
        from aiokafka import AIOKafkaProducer

        deadline = time.monotonic() + timeout
        context = ssl.create_default_context(cafile=str(self.certs / "ca.pem"))
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.sasl_bootstrap,
                request_timeout_ms=5000,
                security_protocol="SASL_SSL",
                sasl_mechanism="SCRAM-SHA-512",
                sasl_plain_username=tls.KAFKA_USER,
                sasl_plain_password=self.kafka_password,
                ssl_context=context,
            )
            try:
                await producer.start()
                await producer.send_and_wait("em-secure-healthcheck", b"ok")
                return
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"SASL_SSL listener not ready:\n{self.log_tail()}") from None
                await asyncio.sleep(1)
            finally:
                await producer.stop()

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['KAFKA_SASL_SSL_PORT']}"

    @property
    def ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['KAFKA_SSL_PORT']}"

    def env_sasl(self, password: str | None = None) -> dict[str, str]:
        """Client environment for SASL_SSL with SCRAM-SHA-512 (password from a file)."""
        secret = self.certs / "kafka-password"
        if password is not None:
            secret = self.folder / "other-kafka-password"
            secret.write_text(password + "\n")
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.sasl_bootstrap,
            "EM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "EM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "EM_KAFKA_SASL_USERNAME": tls.KAFKA_USER,
            "EM_KAFKA_SASL_PASSWORD_FILE": str(secret),
            "EM_KAFKA_SSL_CA_FILE": str(self.certs / "ca.pem"),
        }

    def env_mtls(self, ca_file: Path | None = None) -> dict[str, str]:
        """Client environment for mutual TLS (``ca_file``: the CAs the client trusts)."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.ssl_bootstrap,
            "EM_KAFKA_SECURITY_PROTOCOL": "SSL",
            "EM_KAFKA_SSL_CA_FILE": str(ca_file or self.certs / "ca.pem"),
            "EM_KAFKA_SSL_CERT_FILE": str(self.certs / "client.pem"),
            "EM_KAFKA_SSL_KEY_FILE": str(self.certs / "client.key"),
        }

    def redis_env(self) -> dict[str, str]:
        """rediss:// with the ACL user; the password from its file, not in the URL."""
        return {
            "REDIS_URL": self.redis_url(),
            "EM_REDIS_PASSWORD_FILE": str(self.certs / "redis-password"),
            "EM_REDIS_SSL_CA_FILE": str(self.certs / "ca.pem"),
        }

    def redis_url(self, password: str = "") -> str:
        auth = f"{tls.REDIS_USER}:{password}" if password else tls.REDIS_USER
        return f"rediss://{auth}@127.0.0.1:{self.ports['REDIS_TLS_PORT']}/0"

    def log_tail(self, lines: int = 40) -> str:
        return procs.tail(self.cfg.log_file("kafka"), lines)

    def stop(self) -> None:
        cfg = self.cfg
        for name in reversed(SERVICES):
            procs.stop(cfg.pid_file(name), by_name(name).stop_timeout)
