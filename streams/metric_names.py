"""The metric contract: every name the worker exposes and the dashboards and rules read.

One module so that adding or renaming a metric is one edit here plus the code that
computes it; the collector (:mod:`agents.metrics`), ``backfill``, ``watch``, the
dashboards (``grafana/``) and the rules generator (``deploy/prometheus/rules_gen.py``)
import these constants instead of spelling the strings. docs/contracts.md describes
each one. Pure constants: the rules generator imports this module as a plain script.
"""

from __future__ import annotations

# -- families the worker exposes (counters without the ``_total`` suffix) ------------

ACTIVE_USERS = "engagement_active_users"
FOLLOWERS = "engagement_followers"
EVENTS = "engagement_events"
INVALID_EVENTS = "engagement_invalid_events"
EVENT_LAG = "engagement_event_lag_seconds"
WATERMARK = "engagement_watermark_seconds"
REDIS_WRITE_FAILURES = "engagement_redis_write_failures"
TOP_USERS_DROPPED = "engagement_top_users_dropped_events"
REDIS_LAST_WRITE = "engagement_redis_last_write_seconds"
ACTIVE_FOLLOWERS = "engagement_active_followers"
NEW_USERS = "engagement_new_users"
RETURNING_USERS = "engagement_returning_users"
DORMANT_USERS = "engagement_dormant_users"
LATE_EVENTS = "engagement_late_events"
LATE_EVENT_DELAY = "engagement_late_event_delay_seconds"

#: The audience families, one per field of :class:`streams.state.Lifecycle` (in order).
LIFECYCLE = {
    "active_followers": ACTIVE_FOLLOWERS,
    "new_users": NEW_USERS,
    "returning_users": RETURNING_USERS,
    "dormant_users": DORMANT_USERS,
}

#: Counters as Prometheus stores them.
EVENTS_TOTAL = EVENTS + "_total"
INVALID_EVENTS_TOTAL = INVALID_EVENTS + "_total"
LATE_EVENTS_TOTAL = LATE_EVENTS + "_total"

#: Prefix of Faust's own sensor (``faust_topic_partition_end_offset``, ...): fixed, so
#: names don't change with the app id.
FAUST_METRIC_PREFIX = "faust"

HELP = {
    ACTIVE_USERS: "Distinct users whose last active event is within the window.",
    FOLLOWERS: "Users whose latest follow/unfollow event is a follow.",
    EVENTS: "Valid events ingested.",
    INVALID_EVENTS: "Invalid messages sent to the DLQ.",
    EVENT_LAG: "Arrival time minus event time.",
    WATERMARK: "Newest event time seen (epoch seconds).",
    REDIS_WRITE_FAILURES: "Read-model writes to Redis that failed or timed out.",
    TOP_USERS_DROPPED: "Active events left out of the top-users sets: pending buffer full.",
    REDIS_LAST_WRITE: "Wall time of the last successful read-model write.",
    ACTIVE_FOLLOWERS: "Users following now whose last active event is within the window.",
    NEW_USERS: "Users first seen within the window.",
    RETURNING_USERS: "Users active within the window and first seen before it.",
    DORMANT_USERS: "Users last active in the window before this one, not since.",
    LATE_EVENTS: "Events applied with a time behind the worker's event clock.",
    LATE_EVENT_DELAY: "How far behind the worker's event clock late events were.",
}

LABELS: dict[str, tuple[str, ...]] = {
    ACTIVE_USERS: ("platform", "community", "window"),
    FOLLOWERS: ("platform", "community"),
    EVENTS: ("platform", "community", "type"),
    INVALID_EVENTS: ("reason",),
    **dict.fromkeys(LIFECYCLE.values(), ("platform", "community", "window")),
    LATE_EVENTS: ("platform",),
}

# -- recording rules (deploy/prometheus/rules_gen.py), read by the dashboards ----------

ACTIVE_USERS_SUM = "engagement:active_users:sum"
FOLLOWERS_SUM = "engagement:followers:sum"
ACTIVE_FOLLOWERS_RATIO = "engagement:active_followers_ratio"
EVENTS_RATE = "engagement:events:rate5m"
INVALID_EVENTS_RATE = "engagement:invalid_events:rate5m"
CONSUMER_LAG_SUM = "engagement:consumer_lag:sum"
ACTIVE_FOLLOWERS_SUM = "engagement:active_followers:sum"
NEW_USERS_SUM = "engagement:new_users:sum"
RETURNING_USERS_SUM = "engagement:returning_users:sum"
DORMANT_USERS_SUM = "engagement:dormant_users:sum"
#: Share of followers active in the window / not active in GHOST_WINDOW.
ACTIVE_FOLLOWER_SHARE = "engagement:active_follower_share"
GHOST_FOLLOWER_SHARE = "engagement:ghost_follower_share"
#: Active users who do not follow: active_users - active_followers, per window.
NON_FOLLOWER_ACTIVE = "engagement:non_follower_active_users"

# -- DAU / WAU / MAU and stickiness ---------------------------------------------------

#: The window labels that DAU, WAU and MAU mean; they must be among the worker's
#: EM_WINDOWS for the ratios to exist (they are in the default list).
DAU_WINDOW = "1d"
WAU_WINDOW = "7d"
MAU_WINDOW = "30d"
#: A ghost follower follows and has not been active in this window.
GHOST_WINDOW = MAU_WINDOW

#: Stickiness ratios: name -> (numerator window, denominator window). The name is the
#: key in the status document and the suffix of the ``engagement:stickiness_*`` rule.
STICKINESS: dict[str, tuple[str, str]] = {
    "dau_mau": (DAU_WINDOW, MAU_WINDOW),
    "dau_wau": (DAU_WINDOW, WAU_WINDOW),
}


def stickiness_record(name: str) -> str:
    """The recording rule of one stickiness ratio: ``engagement:stickiness_dau_mau``."""
    return f"engagement:stickiness_{name}"
