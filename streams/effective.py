"""The worker's effective configuration as one printable block, secrets redacted.

Printed at start so a log answers "which topic, which app id, which windows was it
running with?" without access to its environment. Secret settings (metadata
``secret``) show only whether they are set, and URL passwords (``REDIS_URL``) are
masked — nothing here may print a secret.
"""

from __future__ import annotations

from dataclasses import fields

from streams.security import Security, redact
from streams.settings import Settings


def effective_settings(settings: Settings, security: Security) -> list[str]:
    """``VARIABLE=value`` lines: every setting, then the security ones that are set."""
    secrets = security.secrets()
    lines = [
        f"{f.metadata['env']}={redact(str(getattr(settings, f.name)), secrets)}"
        for f in fields(settings)
    ]
    for f in fields(security):
        value = str(getattr(security, f.name))
        default = f.default
        if value == default or not value:
            continue
        shown = "*** (set)" if f.metadata["secret"] else redact(value, secrets)
        lines.append(f"{f.metadata['env']}={shown}")
    return lines


def metrics_url(settings: Settings) -> str:
    return f"http://{settings.web_host}:{settings.web_port}/metrics"
