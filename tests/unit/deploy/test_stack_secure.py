"""EM_STACK_SECURE: the stack's Kafka and Redis configuration for the secure listeners
(the live side is tests/integration/test_secure.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "deploy" / "local"))

import emstack.cli as stack_cli  # noqa: E402
import emstack.kafka as kafka  # noqa: E402
from emstack.config import Config, StackError  # noqa: E402


def config(tmp_path: Path, secure: bool) -> Config:
    return Config.from_env(
        {"EM_STATE_DIR": str(tmp_path), "EM_STACK_SECURE": "1" if secure else ""}
    )


def props(cfg: Config) -> dict[str, str]:
    lines = kafka.server_properties(cfg).splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_plain_stack_is_unchanged(tmp_path: Path) -> None:
    plain = props(config(tmp_path, secure=False))
    assert plain["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9095"
    assert not [key for key in plain if "ssl" in key or "sasl" in key]


def test_secure_stack_adds_sasl_ssl_and_mutual_tls_listeners(tmp_path: Path) -> None:
    secure = props(config(tmp_path, secure=True))
    assert secure["advertised.listeners"] == (
        "PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9094,SSL://127.0.0.1:9096"
    )
    assert secure["inter.broker.listener.name"] == "PLAINTEXT"
    assert secure["listener.name.ssl.ssl.client.auth"] == "required"
    assert secure["sasl.enabled.mechanisms"] == "SCRAM-SHA-512,SCRAM-SHA-256"
    assert secure["ssl.keystore.location"] == str(tmp_path / "tls" / "server-keystore.pem")


def test_scram_users_need_a_fresh_storage(tmp_path: Path) -> None:
    cfg = config(tmp_path, secure=True)
    meta = tmp_path / "kafka" / "data" / "meta.properties"
    meta.parent.mkdir(parents=True)
    meta.write_text("formatted without SCRAM users\n")
    with pytest.raises(StackError, match="use a fresh EM_STATE_DIR"):
        kafka.format_storage(cfg, tmp_path / "server.properties", scram_users={"u": "p"})


def test_env_names_the_secret_files_never_the_secrets(tmp_path: Path) -> None:
    lines = "\n".join(stack_cli.secure_env_lines(config(tmp_path, secure=True)))
    assert f"EM_KAFKA_SASL_PASSWORD_FILE={tmp_path / 'tls' / 'kafka-password'}" in lines
    assert f"EM_REDIS_PASSWORD_FILE={tmp_path / 'tls' / 'redis-password'}" in lines
    assert "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9096 EM_KAFKA_SECURITY_PROTOCOL=SSL" in lines


def test_private_material_is_owner_only(tmp_path: Path) -> None:
    import stat

    import emstack.tls as tls

    folder = tls.ensure(config(tmp_path, secure=True))
    for name in ("ca.key", "server.key", "client.key", "server-keystore.pem",
                 "kafka-password", "redis-password", "redis-users.acl"):  # fmt: skip
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    assert tls.kafka_users(config(tmp_path, secure=True)) == {
        "em-monitor": (folder / "kafka-password").read_text().strip()
    }
