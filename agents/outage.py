"""One log line when a dependency fails, one when it is back — not one per retry."""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


class Outage:
    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            log.warning("%s (%s: %s); retrying", self.what, type(exc).__name__, exc)

    def ok(self) -> None:
        if self.since is not None:
            log.warning("%s: recovered after %.1fs (%d failed attempts)", self.what,
                        time.monotonic() - self.since, self.failures)
            self.since = None
            self.failures = 0
