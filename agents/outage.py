"""One log line when a dependency fails, one when it is back — not one per retry."""

from __future__ import annotations

import logging
import time

from streams.security import redact_url

log = logging.getLogger(__name__)


class Outage:
    """``down`` is logged with the first error of an outage, ``up`` on recovery with
    how long it lasted and how many attempts failed."""

    def __init__(self, down: str, up: str | None = None) -> None:
        self.down = down
        self.up = up if up is not None else f"{down}: recovered"
        self.since: float | None = None
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            log.warning(
                "%s (%s: %s); retrying",
                self.down,
                type(exc).__name__,
                redact_url(str(exc)) or "timeout",
            )

    def ok(self) -> None:
        if self.since is not None:
            log.warning(
                "%s after %.1fs (%d failed attempts)",
                self.up,
                time.monotonic() - self.since,
                self.failures,
            )
            self.since = None
            self.failures = 0
