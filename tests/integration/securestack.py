"""A test-owned secure Kafka broker and Redis, apart from the shared stack.

One Kafka 4.4 node (the stack's release and launcher, deploy/local/emstack/kafka.py)
with three client listeners on free loopback ports:

* ``SASL_SSL`` — SCRAM-SHA-256/512 users created when the storage is formatted;
* ``SSL`` — mutual TLS: a client certificate signed by the test CA is required;
* ``INTERNAL`` — plaintext, for the broker itself (inter-broker listener) only;

and a ``redis-server`` with only a TLS port and an ACL user (the default user off).
Certificates come from :func:`tests.tlscerts.make_certs`. Processes are stopped by
their PIDs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.workers import free_port

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "local"))

import emstack.kafka as stack_kafka  # noqa: E402
from emstack.config import Config  # noqa: E402

KAFKA_USER, KAFKA_PASSWORD = "em-monitor", "kafka-S3cret-pw"
REDIS_USER, REDIS_PASSWORD = "em-reader", "redis-S3cret-pw"


@dataclass
class SecureKafka:
    """The broker's addresses and files; ``env_*`` give the client settings for each."""

    folder: Path
    certs: Path
    sasl_port: int = field(default_factory=free_port)
    ssl_port: int = field(default_factory=free_port)
    internal_port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def cfg(self) -> Config:
        return Config.from_env(
            {
                "EM_STATE_DIR": str(self.folder),
                "KAFKA_PORT": str(self.internal_port),
                "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            }
        )

    def properties(self) -> str:
        props = dict(
            line.split("=", 1) for line in stack_kafka.server_properties(self.cfg).splitlines()
        )
        listeners = {
            "INTERNAL": self.internal_port,
            "SASL_SSL": self.sasl_port,
            "SSL": self.ssl_port,
        }
        addresses = ",".join(f"{name}://127.0.0.1:{port}" for name, port in listeners.items())
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        props.update(
            {
                "listeners": f"{addresses},CONTROLLER://127.0.0.1:{self.controller_port}",
                "advertised.listeners": addresses,
                "listener.security.protocol.map": (
                    "INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:PLAINTEXT"
                ),
                "inter.broker.listener.name": "INTERNAL",
                "sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
                "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": scram,
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(self.certs / "server-keystore.pem"),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(self.certs / "ca.pem"),
                "listener.name.ssl.ssl.client.auth": "required",
            }
        )
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def start(self, timeout: float = 120) -> SecureKafka:
        cfg = self.cfg
        stack_kafka.ensure_fetched(cfg)
        folder = self.folder / "kafka"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "log4j2.properties").write_text(stack_kafka.LOG4J2)
        props = folder / "server.properties"
        props.write_text(self.properties())
        stack_kafka.format_storage(cfg, props, scram_users={KAFKA_USER: KAFKA_PASSWORD})
        log = open(folder / "server.log", "ab")  # noqa: SIM115 - owned by the process
        env = stack_kafka.java_env(cfg) | {"KAFKA_HEAP_OPTS": "-Xmx512m -Xms128m"}
        cmd = stack_kafka.server_cmd(cfg, props)
        small_heap = {"-Xmx1G": "-Xmx512m", "-Xms256m": "-Xms128m"}
        cmd = [small_heap.get(part, part) for part in cmd]
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        asyncio.run(self._wait_ready(timeout))
        return self

    async def _wait_ready(self, timeout: float) -> None:
        from aiokafka import AIOKafkaProducer

        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"secure Kafka exited:\n{self.log_tail()}")
            if not _port_open(self.sasl_port):  # quietly, until the JVM listens
                if time.monotonic() > deadline:
                    raise RuntimeError(f"secure Kafka not listening:\n{self.log_tail()}")
                await asyncio.sleep(0.5)
                continue
            producer = AIOKafkaProducer(
                bootstrap_servers=self.sasl_bootstrap, request_timeout_ms=5000, **self.sasl_kwargs()
            )
            try:
                await producer.start()
                await producer.send_and_wait("em-secure-healthcheck", b"ok")
                return
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"secure Kafka not ready:\n{self.log_tail()}") from None
                await asyncio.sleep(1)
            finally:
                await producer.stop()

    def sasl_kwargs(self) -> dict[str, object]:
        return {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": KAFKA_USER,
            "sasl_plain_password": KAFKA_PASSWORD,
            "ssl_context": ssl.create_default_context(cafile=str(self.certs / "ca.pem")),
        }

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ssl_port}"

    def env_sasl(self, password: str = KAFKA_PASSWORD) -> dict[str, str]:
        """Client environment for SASL_SSL with SCRAM-SHA-512 (password from a file)."""
        secret = self.folder / "kafka-password"
        secret.write_text(password + "\n")
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.sasl_bootstrap,
            "EM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "EM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "EM_KAFKA_SASL_USERNAME": KAFKA_USER,
            "EM_KAFKA_SASL_PASSWORD_FILE": str(secret),
            "EM_KAFKA_SSL_CA_FILE": str(self.certs / "ca.pem"),
        }

    def env_mtls(self, ca: str = "ca") -> dict[str, str]:
        """Client environment for mutual TLS (``ca``: the CA file the client trusts)."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.ssl_bootstrap,
            "EM_KAFKA_SECURITY_PROTOCOL": "SSL",
            "EM_KAFKA_SSL_CA_FILE": str(self.certs / f"{ca}.pem"),
            "EM_KAFKA_SSL_CERT_FILE": str(self.certs / "client.pem"),
            "EM_KAFKA_SSL_KEY_FILE": str(self.certs / "client.key"),
        }

    def log_tail(self, lines: int = 40) -> str:
        path = self.folder / "kafka" / "server.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        stop_process(self.proc)


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


@dataclass
class SecureRedis:
    """redis-server with TLS only (no plaintext port) and ACL user REDIS_USER."""

    folder: Path
    certs: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> SecureRedis:
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "redis.conf"
        conf.write_text(
            "bind 127.0.0.1\nport 0\n"
            f"tls-port {self.port}\n"
            f"tls-cert-file {self.certs / 'server.pem'}\n"
            f"tls-key-file {self.certs / 'server.key'}\n"
            f"tls-ca-cert-file {self.certs / 'ca.pem'}\n"
            "tls-auth-clients no\n"
            'save ""\nappendonly no\n'
            "user default off\n"
            f"user {REDIS_USER} on >{REDIS_PASSWORD} ~* &* +@all\n"
        )
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            ["redis-server", str(conf)], cwd=self.folder, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.folder / "redis.log").read_text(errors="replace"))
            time.sleep(0.2)
        return self

    def _ready(self) -> bool:
        import redis

        try:
            client = redis.Redis.from_url(
                self.url(), ssl_ca_certs=str(self.certs / "ca.pem"), socket_timeout=2
            )
            return bool(client.ping())
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def url(self, password: str = REDIS_PASSWORD) -> str:
        return f"rediss://{REDIS_USER}:{password}@127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop_process(self.proc)
