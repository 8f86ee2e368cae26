"""Security settings shared by every command: Kafka TLS/SASL, Redis TLS/ACL, HTTP token,
user-id pseudonymisation; and the redaction that keeps secrets out of every message.

Environment only, never flags: a secret on a command line is readable by every user
of the machine (``ps``, ``/proc/*/cmdline``) and lands in shell history. Each secret
can also come from a file (``*_FILE``), which is how container secrets are mounted.
``--help`` lists the variables and never their values.

Pure: no ssl, Kafka or Redis library here; ``agents/kafka_security.py`` turns
:class:`Security` into client arguments.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: Bytes of the HMAC kept in a pseudonym: 16 bytes (32 hex digits) make a collision
#: between two users of one deployment practically impossible (~2^-64 at 4 billion ids).
PSEUDONYM_BYTES = 16


def _meta(env: str, help_text: str, *, secret: bool = False, group: str = "kafka") -> dict:
    return {"env": env, "help": help_text, "secret": secret, "group": group}


def _setting(env: str, help_text: str, default: str = "", *, group: str = "kafka") -> Any:
    return field(default=default, metadata=_meta(env, help_text, group=group))


def _secret(env: str, help_text: str, *, group: str = "kafka") -> Any:
    """A secret: never shown, and also read from the file ``{env}_FILE`` names."""
    return field(
        default="", metadata=_meta(env, f"{help_text} (or {env}_FILE)", secret=True, group=group)
    )


@dataclass(frozen=True)
class Security:
    """Everything that authenticates or protects; ``env`` in metadata names the variable."""

    kafka_security_protocol: str = _setting(
        "EM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL", "PLAINTEXT"
    )
    kafka_sasl_mechanism: str = _setting(
        "EM_KAFKA_SASL_MECHANISM", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", "SCRAM-SHA-512"
    )
    kafka_sasl_username: str = _setting("EM_KAFKA_SASL_USERNAME", "SASL user name")
    kafka_sasl_password: str = _secret("EM_KAFKA_SASL_PASSWORD", "SASL password")
    kafka_ssl_ca_file: str = _setting(
        "EM_KAFKA_SSL_CA_FILE", "CA certificates (PEM), else the system's"
    )
    kafka_ssl_cert_file: str = _setting(
        "EM_KAFKA_SSL_CERT_FILE", "client certificate (PEM), for mutual TLS"
    )
    kafka_ssl_key_file: str = _setting("EM_KAFKA_SSL_KEY_FILE", "client private key (PEM)")
    kafka_ssl_key_password: str = _secret(
        "EM_KAFKA_SSL_KEY_PASSWORD", "password of an encrypted client key"
    )
    kafka_ssl_check_hostname: str = _setting(
        "EM_KAFKA_SSL_CHECK_HOSTNAME", "true: the broker certificate must name the host", "true"
    )
    redis_password: str = _secret(
        "EM_REDIS_PASSWORD", "Redis password, instead of one in REDIS_URL", group="redis"
    )
    redis_ssl_ca_file: str = _setting(
        "EM_REDIS_SSL_CA_FILE", "CA certificates for rediss:// (PEM)", group="redis"
    )
    redis_ssl_cert_file: str = _setting(
        "EM_REDIS_SSL_CERT_FILE", "client certificate for rediss://", group="redis"
    )
    redis_ssl_key_file: str = _setting(
        "EM_REDIS_SSL_KEY_FILE", "client private key for rediss://", group="redis"
    )
    http_token: str = _secret(
        "EM_HTTP_TOKEN", "bearer token required by /metrics and /api", group="http"
    )
    user_id_key: str = _secret(
        "EM_USER_ID_KEY", "key that pseudonymises user ids at ingest", group="worker"
    )

    @property
    def kafka_sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    @property
    def kafka_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    def check(self) -> None:
        """Fail before connecting, naming the variable, on settings that can't work."""
        if self.kafka_security_protocol not in PROTOCOLS:
            raise ValueError(
                f"{_env('kafka_security_protocol')} must be one of {', '.join(PROTOCOLS)}"
            )
        if self.kafka_sasl:
            if self.kafka_sasl_mechanism not in MECHANISMS:
                raise ValueError(
                    f"{_env('kafka_sasl_mechanism')} must be one of {', '.join(MECHANISMS)}"
                )
            if not self.kafka_sasl_username or not self.kafka_sasl_password:
                raise ValueError(
                    f"{self.kafka_security_protocol} needs {_env('kafka_sasl_username')} and "
                    f"{_env('kafka_sasl_password')} (or EM_KAFKA_SASL_PASSWORD_FILE)"
                )
        if bool(self.kafka_ssl_cert_file) != bool(self.kafka_ssl_key_file):
            raise ValueError("EM_KAFKA_SSL_CERT_FILE and EM_KAFKA_SSL_KEY_FILE go together")
        if bool(self.redis_ssl_cert_file) != bool(self.redis_ssl_key_file):
            raise ValueError("EM_REDIS_SSL_CERT_FILE and EM_REDIS_SSL_KEY_FILE go together")
        if self.kafka_ssl_check_hostname.lower() not in ("true", "false"):
            raise ValueError(f"{_env('kafka_ssl_check_hostname')} must be true or false")
        for name in (
            "kafka_ssl_ca_file",
            "kafka_ssl_cert_file",
            "kafka_ssl_key_file",
            "redis_ssl_ca_file",
            "redis_ssl_cert_file",
            "redis_ssl_key_file",
        ):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ValueError(f"{_env(name)}: no such file: {path}")

    def secrets(self) -> list[str]:
        """The secret values set (to scrub from any text that might echo them)."""
        return [
            getattr(self, f.name)
            for f in fields(self)
            if f.metadata["secret"] and getattr(self, f.name)
        ]


def _env(name: str) -> str:
    for f in fields(Security):
        if f.name == name:
            return str(f.metadata["env"])
    raise KeyError(name)


def _read_secret_file(var: str, path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"{var}: cannot read {path}: {exc.strerror}") from None


def from_env(environ: Mapping[str, str] | None = None) -> Security:
    """Security settings from the environment; a secret's ``*_FILE`` wins over its value."""
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for f in fields(Security):
        var = str(f.metadata["env"])
        raw = env.get(var, "")
        if f.metadata["secret"] and env.get(var + "_FILE"):
            raw = _read_secret_file(var + "_FILE", env[var + "_FILE"])
        if raw:
            values[f.name] = raw.upper() if f.name.endswith(("_protocol", "_mechanism")) else raw
    return Security(**values)


def describe(groups: Iterable[str]) -> str:
    """Help text: the variables of ``groups``, never their values."""
    wanted = set(groups)
    lines = [
        f"{f.metadata['env']}: {f.metadata['help']}"
        for f in fields(Security)
        if f.metadata["group"] in wanted
    ]
    return "; ".join(lines)


# -- redaction -----------------------------------------------------------------------

_URL_PASSWORD = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@"
)


def redact_url(url: str) -> str:
    """``redis://user:S3cret@host`` → ``redis://user:***@host``: safe to print."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL passwords and every given secret value replaced by ``***``."""
    text = redact_url(text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


# -- HTTP bearer token -----------------------------------------------------------------


def bearer_ok(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (always, when no token is
    set). Constant-time, so response timing doesn't reveal how much of a guess matched."""
    if not token:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


# -- pseudonyms ----------------------------------------------------------------------


def pseudonym(key: bytes, user_id: str) -> str:
    """The keyed HMAC-SHA256 of a user id, first :data:`PSEUDONYM_BYTES` bytes in hex.

    Deterministic per key, so counts and per-user state are unchanged; without the
    key, a pseudonym can't be linked to an id (not even by hashing guessed ids).
    """
    digest = hmac.new(key, user_id.encode(), hashlib.sha256).digest()
    return digest[:PSEUDONYM_BYTES].hex()


def pseudonymiser(key: str, cache_size: int = 1 << 18) -> Callable[[str], str] | None:
    """``user_id -> pseudonym`` for a key (None without one). Memoised: the same users
    come back all day, and a cache hit costs a tenth of an HMAC."""
    if not key:
        return None
    secret = key.encode()

    @lru_cache(maxsize=cache_size)
    def apply(user_id: str) -> str:
        return pseudonym(secret, user_id)

    return apply
