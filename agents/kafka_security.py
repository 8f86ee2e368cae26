"""The one place that turns :class:`streams.security.Security` into client arguments.

Every Kafka client of the project (the worker's Faust app, its ingest consumer and
shared producer, topic administration, the batch writer, and the commands' readers
and writers) takes its security arguments from :func:`client_kwargs` or, for Faust,
:func:`faust_settings`, so no client can be left talking plaintext by accident.
Redis clients take theirs from :func:`redis_kwargs`.
"""

from __future__ import annotations

import logging
import ssl
from functools import lru_cache
from typing import Any

from streams.security import Security, from_env


class _BootstrapFailures(logging.Filter):
    """Keeps the reason of the last failed bootstrap connection, which aiokafka only
    logs (its exception says "Unable to bootstrap from [...]" and nothing more), so
    :func:`failure` can put it in the one error line. A TLS or authentication
    failure is not logged a second time: the command reports it."""

    last: BaseException | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != 'Unable connect to "%s:%s": %s' or not isinstance(record.args, tuple):
            return True
        err = record.args[-1]
        if not isinstance(err, BaseException):
            return True
        _BootstrapFailures.last = err
        return _kind(err) is None


def _kind(err: BaseException) -> str | None:
    """ "tls", "auth" or "closed" (by the broker, e.g. for lack of a client certificate)
    for failures that retrying won't fix, else None."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            cause
        ):
            return "tls"
        if "Authentication" in type(cause).__name__:
            return "auth"
        if "closed" in str(cause):
            return "closed"
        cause = cause.__cause__ or cause.__context__
    return None


logging.getLogger("aiokafka").addFilter(_BootstrapFailures())


def current() -> Security:
    """The process's security settings (environment), checked."""
    security = from_env()
    security.check()
    return security


@lru_cache(maxsize=8)
def _context(
    ca_file: str, cert_file: str, key_file: str, key_password: str, check_hostname: bool
) -> ssl.SSLContext:
    """A client TLS context: the system's CAs unless a CA file is given, TLS 1.2+,
    hostname checked unless turned off; one per distinct setting (files read once)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname
    if cert_file:
        try:
            context.load_cert_chain(cert_file, key_file, password=key_password or None)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"client certificate {cert_file} / key {key_file}: {exc}") from None
    return context


def kafka_ssl_context(security: Security) -> ssl.SSLContext | None:
    if not security.kafka_tls:
        return None
    try:
        return _context(
            security.kafka_ssl_ca_file,
            security.kafka_ssl_cert_file,
            security.kafka_ssl_key_file,
            security.kafka_ssl_key_password,
            security.kafka_ssl_check_hostname.lower() == "true",
        )
    except ssl.SSLError as exc:
        raise ValueError(f"EM_KAFKA_SSL_CA_FILE {security.kafka_ssl_ca_file}: {exc}") from None


def client_kwargs(security: Security | None = None) -> dict[str, Any]:
    """aiokafka keyword arguments (producer, consumer, admin) for ``security``
    (default: the environment's)."""
    security = security or current()
    kwargs: dict[str, Any] = {"security_protocol": security.kafka_security_protocol}
    context = kafka_ssl_context(security)
    if context is not None:
        kwargs["ssl_context"] = context
    if security.kafka_sasl:
        kwargs["sasl_mechanism"] = security.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = security.kafka_sasl_username
        kwargs["sasl_plain_password"] = security.kafka_sasl_password
    return kwargs


def faust_settings(security: Security | None = None) -> dict[str, Any]:
    """``faust.App`` keyword arguments carrying the same security as :func:`client_kwargs`."""
    import faust

    security = security or current()
    context = kafka_ssl_context(security)
    if security.kafka_sasl:
        credentials: Any = faust.SASLCredentials(
            username=security.kafka_sasl_username,
            password=security.kafka_sasl_password,
            ssl_context=context,
            mechanism=security.kafka_sasl_mechanism,
        )
        return {"broker_credentials": credentials}
    if context is not None:
        return {"broker_credentials": faust.SSLCredentials(context)}
    return {}


def redis_kwargs(url: str, security: Security | None = None) -> dict[str, Any]:
    """redis-py ``from_url`` keyword arguments: password and TLS files for ``url``."""
    security = security or current()
    kwargs: dict[str, Any] = {}
    if security.redis_password:
        kwargs["password"] = security.redis_password
    if url.startswith("rediss://"):
        if security.redis_ssl_ca_file:
            kwargs["ssl_ca_certs"] = security.redis_ssl_ca_file
        if security.redis_ssl_cert_file:
            kwargs["ssl_certfile"] = security.redis_ssl_cert_file
            kwargs["ssl_keyfile"] = security.redis_ssl_key_file
    return kwargs


def failure(exc: BaseException) -> str:
    """One line for a Kafka connection failure, saying what to check; never a secret
    (aiokafka's messages carry hosts and reasons, not credentials)."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    reason = _BootstrapFailures.last if "Unable to bootstrap" in str(exc) else exc
    kind = _kind(reason) if reason is not None else None
    if kind == "tls":
        return (
            f"TLS: the broker's certificate is not trusted ({reason}); check EM_KAFKA_SSL_CA_FILE"
        )
    if kind == "auth":
        return f"SASL authentication failed ({reason}); check the user name and password"
    if kind == "closed":
        return (
            f"the broker closed the connection ({reason}); check EM_KAFKA_SECURITY_PROTOCOL "
            "and whether the listener requires a client certificate (EM_KAFKA_SSL_CERT_FILE)"
        )
    if reason is not None and reason is not exc:
        return f"{text} ({reason})"
    return text


async def start_or_close(client: Any) -> None:
    """Start an aiokafka client; if that fails (a wrong password, say), close it before
    raising, or aiokafka adds "Unclosed AIOKafkaConsumer" lines to the one error line."""
    try:
        await client.start()
    except BaseException:
        await (client.stop() if hasattr(client, "stop") else client.close())
        raise
