"""Apache Kafka from Maven Central: fetch once into a shared cache, configure, format, run.

The jars of org.apache.kafka:kafka_2.13 and its runtime dependencies, plus the
log4j2 binding for slf4j, are copied by Maven into
``<cache>/kafka-<version>/libs``. The copy is made under a lock in a temporary
folder and renamed into place, so concurrent `up`s (other users of the cache)
neither download twice nor see a half-filled folder. ``KAFKA_HOME`` (an unpacked
Kafka release) is used instead when set.
"""

from __future__ import annotations

import base64
import fcntl
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from emstack.config import Config, StackError
from emstack.log import say

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.engagement-monitor</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""

LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""

HEAP = "-Xmx1G -Xms256m"
# As Kafka's bin/kafka-run-class.sh: G1 with short pauses.
SERVER_JVM = "-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35"
# The storage tool runs for a second: skip the optimising JIT.
TOOL_JVM = "-Xmx256m -XX:TieredStopAtLevel=1"


def libs_dir(cfg: Config) -> Path:
    return cfg.cache_dir / f"kafka-{cfg.kafka_version}" / "libs"


def ensure_fetched(cfg: Config) -> None:
    """Make sure the Kafka jars are in the cache (no-op with KAFKA_HOME)."""
    if cfg.kafka_home is not None:
        _check_kafka_home(cfg.kafka_home)
        return
    dest = libs_dir(cfg)
    if (dest / ".complete").exists():
        return
    dest.parent.parent.mkdir(parents=True, exist_ok=True)
    lock_path = dest.parent.parent / f"kafka-{cfg.kafka_version}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another `up` may be fetching the same version
        if not (dest / ".complete").exists():
            _fetch(cfg.kafka_version, dest)


def _check_kafka_home(home: Path) -> None:
    for script in ("kafka-server-start.sh", "kafka-storage.sh"):
        if not (home / "bin" / script).is_file():
            raise StackError(f"KAFKA_HOME={home} has no bin/{script}: not a Kafka installation")


def _fetch(version: str, dest: Path) -> None:
    say(f"fetching Kafka {version} from Maven Central (once; cached in {dest.parent})…")
    tmp = Path(tempfile.mkdtemp(prefix=f".kafka-{version}-", dir=dest.parent.parent))
    try:
        (tmp / "pom.xml").write_text(POM.format(version=version))
        libs = tmp / "libs"
        _mvn(
            tmp,
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        )
        log4j = _log4j_version(libs)
        _mvn(
            tmp,
            "dependency:copy",
            f"-Dartifact=org.apache.logging.log4j:log4j-slf4j-impl:{log4j}",
            f"-DoutputDirectory={libs}",
        )
        (libs / ".complete").write_text(version + "\n")
        shutil.rmtree(dest.parent, ignore_errors=True)
        dest.parent.mkdir(parents=True)
        libs.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _mvn(workdir: Path, *args: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven is missing (Debian: apt-get install -y maven), or set KAFKA_HOME")
    cmd = [mvn, "-B", "-q", "-f", str(workdir / "pom.xml"), *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        out = (result.stdout + result.stderr).strip().splitlines()[-30:]
        raise StackError("Maven failed:\n  " + "\n  ".join(out))


def _log4j_version(libs: Path) -> str:
    jars = sorted(libs.glob("log4j-api-*.jar"))
    if not jars:
        raise StackError(f"no log4j-api jar among Kafka's dependencies in {libs}")
    return jars[-1].name.removeprefix("log4j-api-").removesuffix(".jar")


def server_properties(cfg: Config) -> str:
    port, ctrl = cfg.ports["KAFKA_PORT"], cfg.ports["KAFKA_CONTROLLER_PORT"]
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{ctrl}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{ctrl}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(cfg.state_dir / "kafka" / "data"),
        "num.partitions": "4",
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "delete.topic.enable": "true",
    }
    if cfg.secure:
        props.update(secure_properties(cfg))
    return "".join(f"{k}={v}\n" for k, v in props.items())


def secure_properties(cfg: Config) -> dict[str, str]:
    """EM_STACK_SECURE: a SASL_SSL listener (SCRAM-SHA-256/512 users made at format time)
    and an SSL listener that requires a client certificate, beside the plaintext one
    (which stays the inter-broker listener and the health check's)."""
    tls = cfg.state_dir / "tls"
    port, ctrl = cfg.ports["KAFKA_PORT"], cfg.ports["KAFKA_CONTROLLER_PORT"]
    sasl, ssl = cfg.ports["KAFKA_SASL_SSL_PORT"], cfg.ports["KAFKA_SSL_PORT"]
    clients = f"PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{sasl},SSL://127.0.0.1:{ssl}"
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return {
        "listeners": f"{clients},CONTROLLER://127.0.0.1:{ctrl}",
        "advertised.listeners": clients,
        "listener.security.protocol.map": (
            "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:PLAINTEXT"
        ),
        "sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": scram,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls / "server-keystore.pem"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls / "ca.pem"),
        "listener.name.ssl.ssl.client.auth": "required",
    }


def write_config(cfg: Config) -> Path:
    folder = cfg.state_dir / "kafka"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log4j2.properties").write_text(LOG4J2)
    path = folder / "server.properties"
    path.write_text(server_properties(cfg))
    return path


def java_env(cfg: Config) -> dict[str, str]:
    """Environment for Kafka's JVM (and for KAFKA_HOME's scripts)."""
    env = dict(os.environ)
    log4j = cfg.state_dir / "kafka" / "log4j2.properties"
    env.setdefault("KAFKA_HEAP_OPTS", HEAP)
    env["KAFKA_LOG4J_OPTS"] = f"-Dlog4j2.configurationFile={log4j}"
    env["LOG_DIR"] = str(cfg.state_dir / "kafka" / "logs")
    return env


def _java_cmd(cfg: Config, jvm_opts: str, main: str, *args: str) -> list[str]:
    env = java_env(cfg)
    java = shutil.which("java")
    if java is None:
        raise StackError("Java is missing (Debian: apt-get install -y openjdk-17-jre-headless)")
    return [
        java,
        *jvm_opts.split(),
        env["KAFKA_LOG4J_OPTS"],
        "-Djava.awt.headless=true",
        "-cp",
        f"{libs_dir(cfg)}/*",
        main,
        *args,
    ]


def format_storage(cfg: Config, props: Path, scram_users: dict[str, str] | None = None) -> None:
    """Format the log dir once (KRaft needs a cluster id before the first start).

    ``scram_users`` ({name: password}) are created as SCRAM-SHA-256 and -512 users at
    format time: KRaft has no other way to have a first user before the broker runs.
    """
    marker = cfg.state_dir / "kafka" / "scram-users"
    if (cfg.state_dir / "kafka" / "data" / "meta.properties").exists():
        if scram_users and not marker.exists():
            raise StackError(
                f"EM_STACK_SECURE needs SCRAM users, made only when Kafka's storage is "
                f"formatted, and {cfg.state_dir} was formatted without: use a fresh "
                "EM_STATE_DIR (or delete this one)"
            )
        return
    args = ["format", "-t", _cluster_id(), "-c", str(props)]
    for name, password in (scram_users or {}).items():
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            args += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
    if cfg.kafka_home is not None:
        cmd = [str(cfg.kafka_home / "bin" / "kafka-storage.sh"), *args]
    else:
        cmd = _java_cmd(cfg, TOOL_JVM, "kafka.tools.StorageTool", *args)
    env = java_env(cfg) | {"KAFKA_HEAP_OPTS": "-Xmx256m"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")
    if scram_users:
        marker.write_text("\n".join(scram_users) + "\n")  # names only


def _cluster_id() -> str:
    """A random Kafka Uuid in its string form (URL-safe base64, no padding)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def server_cmd(cfg: Config, props: Path) -> list[str]:
    if cfg.kafka_home is not None:
        return [str(cfg.kafka_home / "bin" / "kafka-server-start.sh"), str(props)]
    jvm_opts = f"{java_env(cfg)['KAFKA_HEAP_OPTS']} {SERVER_JVM}"
    return _java_cmd(cfg, jvm_opts, "kafka.Kafka", str(props))
