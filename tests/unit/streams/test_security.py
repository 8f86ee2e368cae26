"""Security settings from the environment, redaction, bearer tokens, pseudonyms."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams import security
from streams.security import Security, bearer_ok, pseudonym, pseudonymiser, redact, redact_url


def test_defaults_are_plaintext_with_hostname_checks() -> None:
    sec = security.from_env({})
    assert sec == Security()
    assert sec.kafka_security_protocol == "PLAINTEXT"
    assert not sec.kafka_tls and not sec.kafka_sasl
    assert sec.kafka_ssl_check_hostname == "true"
    sec.check()


def test_a_secret_file_wins_over_the_value_and_is_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    sec = security.from_env(
        {
            "EM_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "EM_KAFKA_SASL_MECHANISM": "scram-sha-256",
            "EM_KAFKA_SASL_USERNAME": "alice",
            "EM_KAFKA_SASL_PASSWORD": "from-env",
            "EM_KAFKA_SASL_PASSWORD_FILE": str(secret),
            "EM_USER_ID_KEY_FILE": str(secret),
        }
    )
    assert (sec.kafka_security_protocol, sec.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
    assert sec.kafka_sasl_password == "from-file"
    assert sec.user_id_key == "from-file"
    assert sec.secrets() == ["from-file", "from-file"]
    sec.check()


def test_an_unreadable_secret_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="EM_HTTP_TOKEN_FILE: cannot read"):
        security.from_env({"EM_HTTP_TOKEN_FILE": str(tmp_path / "missing")})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "EM_KAFKA_SECURITY_PROTOCOL must be one of"),
        (
            {"EM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "EM_KAFKA_SASL_USERNAME": "a"},
            "needs EM_KAFKA_SASL_USERNAME and EM_KAFKA_SASL_PASSWORD",
        ),
        (
            {
                "EM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "EM_KAFKA_SASL_MECHANISM": "GSSAPI",
            },
            "EM_KAFKA_SASL_MECHANISM must be one of",
        ),
        ({"EM_KAFKA_SSL_CERT_FILE": "/etc/hostname"}, "go together"),
        ({"EM_KAFKA_SSL_CA_FILE": "/nonexistent/ca.pem"}, "EM_KAFKA_SSL_CA_FILE: no such file"),
        ({"EM_REDIS_SSL_CA_FILE": "/nonexistent/ca.pem"}, "EM_REDIS_SSL_CA_FILE: no such file"),
        ({"EM_KAFKA_SSL_CHECK_HOSTNAME": "maybe"}, "must be true or false"),
    ],
)
def test_check_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        security.from_env(env).check()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:S3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://user:S3cret@host:6380/0", "rediss://user:***@host:6380/0"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://user@host/0", "redis://user@host/0"),
        (
            "at redis://:p%40ss@h:1/0 and rediss://u:x@h2",
            "at redis://:***@h:1/0 and rediss://u:***@h2",
        ),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_removes_given_secrets_too() -> None:
    assert redact("pw=hunter2 url=redis://:a@h", ["hunter2", ""]) == "pw=*** url=redis://:***@h"


def test_bearer_ok() -> None:
    assert bearer_ok(None, "")  # no token configured: open
    assert bearer_ok("Bearer t0ken", "t0ken")
    assert bearer_ok("bearer t0ken", "t0ken")
    assert not bearer_ok(None, "t0ken")
    assert not bearer_ok("Bearer t0ke", "t0ken")
    assert not bearer_ok("Basic t0ken", "t0ken")


def test_pseudonym_is_the_truncated_hmac_sha256() -> None:
    # RFC 4231, test case 2: HMAC-SHA-256(key "Jefe", "what do ya want for nothing?")
    full = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert pseudonym(b"Jefe", "what do ya want for nothing?") == full[:32]


def test_pseudonymiser_is_deterministic_per_key() -> None:
    assert pseudonymiser("") is None
    one, other = pseudonymiser("k1"), pseudonymiser("k2")
    assert one is not None and other is not None
    assert one("u1") == one("u1") == pseudonym(b"k1", "u1")
    assert one("u1") != one("u2")
    assert one("u1") != other("u1")
    assert len(one("u1")) == 32


def test_describe_lists_variables_never_values() -> None:
    text = security.describe(["kafka", "redis"])
    assert "EM_KAFKA_SASL_PASSWORD" in text and "EM_REDIS_SSL_CA_FILE" in text
    assert "EM_USER_ID_KEY" not in text
