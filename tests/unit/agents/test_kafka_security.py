"""Security settings → aiokafka, Faust and redis-py arguments; failures in one line."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from agents.kafka_security import client_kwargs, failure, faust_settings, redis_kwargs
from streams.security import from_env
from tests.tlscerts import make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("certs"))


def sasl_ssl(certs: Path, **extra: str) -> dict[str, str]:
    return {
        "EM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "EM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "EM_KAFKA_SASL_USERNAME": "alice",
        "EM_KAFKA_SASL_PASSWORD": "pw",
        "EM_KAFKA_SSL_CA_FILE": str(certs / "ca.pem"),
        **extra,
    }


def test_plaintext() -> None:
    assert client_kwargs(from_env({})) == {"security_protocol": "PLAINTEXT"}
    assert faust_settings(from_env({})) == {}


def test_sasl_ssl_verifies_the_broker_and_its_name(certs: Path) -> None:
    kwargs = client_kwargs(from_env(sasl_ssl(certs)))
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "pw",
    }
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_hostname_check_can_be_turned_off(certs: Path) -> None:
    env = sasl_ssl(certs, EM_KAFKA_SSL_CHECK_HOSTNAME="false")
    assert client_kwargs(from_env(env))["ssl_context"].check_hostname is False


def test_sasl_plaintext_has_no_tls() -> None:
    env = {
        "EM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "EM_KAFKA_SASL_MECHANISM": "PLAIN",
        "EM_KAFKA_SASL_USERNAME": "a",
        "EM_KAFKA_SASL_PASSWORD": "b",
    }
    assert "ssl_context" not in client_kwargs(from_env(env))


def test_mutual_tls_loads_the_client_certificate(certs: Path) -> None:
    env = {
        "EM_KAFKA_SECURITY_PROTOCOL": "SSL",
        "EM_KAFKA_SSL_CA_FILE": str(certs / "ca.pem"),
        "EM_KAFKA_SSL_CERT_FILE": str(certs / "client.pem"),
        "EM_KAFKA_SSL_KEY_FILE": str(certs / "client.key"),
    }
    kwargs = client_kwargs(from_env(env))
    assert kwargs["security_protocol"] == "SSL"
    # a certificate that doesn't match its key is refused here, with the file names
    bad = env | {"EM_KAFKA_SSL_KEY_FILE": str(certs / "server.key")}
    with pytest.raises(ValueError, match="client certificate .*client.pem"):
        client_kwargs(from_env(bad))


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL", "SASL_PLAINTEXT", "PLAINTEXT"])
def test_faust_gets_what_every_other_client_gets(certs: Path, protocol: str) -> None:
    env = sasl_ssl(certs, EM_KAFKA_SECURITY_PROTOCOL=protocol)
    security = from_env(env)
    ours = client_kwargs(security)
    auth = credentials_to_aiokafka_auth(faust_settings(security).get("broker_credentials"))
    theirs = {key: value for key, value in auth.items() if value is not None}
    assert theirs == ours  # the same context object too: one per distinct setting


def test_redis_kwargs(certs: Path) -> None:
    env = {
        "EM_REDIS_PASSWORD": "pw",
        "EM_REDIS_SSL_CA_FILE": str(certs / "ca.pem"),
        "EM_REDIS_SSL_CERT_FILE": str(certs / "client.pem"),
        "EM_REDIS_SSL_KEY_FILE": str(certs / "client.key"),
    }
    security = from_env(env)
    assert redis_kwargs("redis://h/0", security) == {"password": "pw"}
    assert redis_kwargs("rediss://h/0", security) == {
        "password": "pw",
        "ssl_ca_certs": str(certs / "ca.pem"),
        "ssl_certfile": str(certs / "client.pem"),
        "ssl_keyfile": str(certs / "client.key"),
    }


@pytest.fixture(autouse=True)
def _aiokafka_logger_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another test in the same process may have run a logging setup that disables
    existing loggers (mode's dictConfig does); the reason is recorded from aiokafka's
    log record, so this module needs the logger as a fresh worker has it."""
    logger = logging.getLogger("aiokafka")
    monkeypatch.setattr(logger, "disabled", False)
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    monkeypatch.setattr(logging.root.manager, "disable", 0)


def _bootstrap_failed(reason: BaseException) -> KafkaConnectionError:
    """What aiokafka does: log the reason, raise without it."""
    logging.getLogger("aiokafka").error('Unable connect to "%s:%s": %s', "127.0.0.1", 1, reason)
    return KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")


def test_failure_names_an_authentication_failure(caplog: pytest.LogCaptureFixture) -> None:
    exc = _bootstrap_failed(SaslAuthenticationFailed("invalid credentials"))
    assert failure(exc).startswith("SASL authentication failed (")
    assert "Unable connect" not in caplog.text  # said once, by the command


def test_failure_names_an_untrusted_certificate() -> None:
    reason = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
    )
    message = failure(_bootstrap_failed(reason))
    assert message.startswith("TLS: the broker's certificate is not trusted")
    assert "EM_KAFKA_SSL_CA_FILE" in message


def test_failure_keeps_other_reasons() -> None:
    message = failure(_bootstrap_failed(ConnectionRefusedError(111, "Connect call failed")))
    assert "Unable to bootstrap" in message and "Connect call failed" in message
