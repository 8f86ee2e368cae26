"""The "Engagement overview" dashboard: how many people are active, not just following.

Queries read the recording rules of docs/metrics.md (``engagement:*``), which already
sum over workers; ``$community`` defaults to ``*``, the all-communities total.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as model

from grafana.dashboards.common import (
    APP_SEL,
    DATASOURCE,
    app_variable,
    base_dashboard,
    finish,
    query,
    row,
    stat_panel,
    table_panel,
    targets,
    timeseries_panel,
)
from streams.metric_names import (
    ACTIVE_FOLLOWERS_RATIO,
    ACTIVE_FOLLOWERS_SUM,
    ACTIVE_USERS,
    ACTIVE_USERS_SUM,
    DAU_WINDOW,
    DORMANT_USERS_SUM,
    EVENTS_RATE,
    FOLLOWERS_SUM,
    GHOST_FOLLOWER_SHARE,
    GHOST_WINDOW,
    MAU_WINDOW,
    NEW_USERS_SUM,
    NON_FOLLOWER_ACTIVE,
    RETURNING_USERS_SUM,
    WAU_WINDOW,
    stickiness_record,
)

UID = "engagement-overview"
TITLE = "Engagement overview"

#: Label matchers of the selected platform and community.
SEL = f'{APP_SEL}, platform="$platform", community="$community"'
#: Matchers of the selected app and platform (every community).
PLATFORM_SEL = f'{APP_SEL}, platform="$platform"'


#: Events/s by type for the selected community. The worker counts events per real
#: community only (no "*" series), and "*" can't go in a regex matcher; so the
#: per-community rates and their all-communities sum (labelled community="*") are
#: united, then filtered to $community by joining on a one-series vector that carries
#: it. Any "*" series a future worker might add is left out first, so it's never
#: counted twice.
EVENTS_BY_TYPE = (
    "(\n"
    f'  sum by (type, community) ({EVENTS_RATE}{{{PLATFORM_SEL}, community!="*"}})\n'
    "  or\n"
    f"  label_replace(sum by (type) ({EVENTS_RATE}{{{PLATFORM_SEL}, "
    'community!="*"}), "community", "*", "", "")\n'
    ")\n"
    'and on (community) label_replace(vector(1), "community", "$community", "", "")'
)


def active(window: str) -> str:
    return f'{ACTIVE_USERS_SUM}{{{SEL}, window="{window}"}}'


#: The window of the new / returning / dormant panel.
LIFECYCLE_WINDOW = WAU_WINDOW


def in_window(record: str, window: str) -> str:
    return f'{record}{{{SEL}, window="{window}"}}'


def audience_row(dash: db.Dashboard) -> db.Dashboard:
    """Who the followers are (active or ghosts), who else engages, and whether people
    are arriving, coming back or going quiet."""
    ghosts = (
        f"{FOLLOWERS_SUM}{{{SEL}}}\n  - ignoring (window)\n"
        f"{in_window(ACTIVE_FOLLOWERS_SUM, GHOST_WINDOW)}"
    )
    return (
        dash.with_row(row("Audience"))
        .with_panel(
            timeseries_panel(
                "Active vs ghost followers",
                f"Followers active in the last {GHOST_WINDOW} and ghost followers (following, "
                f"not active in {GHOST_WINDOW}), stacked: together they are the followers.",
                targets(
                    (in_window(ACTIVE_FOLLOWERS_SUM, GHOST_WINDOW), "active followers"),
                    (ghosts, "ghost followers"),
                ),
                stacked=True,
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                f"Active users: followers and non-followers ({MAU_WINDOW})",
                f"Users active in the last {MAU_WINDOW}, stacked: those who follow and those "
                "who engage without following.",
                targets(
                    (in_window(ACTIVE_FOLLOWERS_SUM, MAU_WINDOW), "followers"),
                    (in_window(NON_FOLLOWER_ACTIVE, MAU_WINDOW), "non-followers"),
                ),
                stacked=True,
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                f"New, returning and dormant users ({LIFECYCLE_WINDOW})",
                f"Over the last {LIFECYCLE_WINDOW}: new (first seen in it), returning (active "
                "in it, first seen before) and dormant (active in the previous "
                f"{LIFECYCLE_WINDOW}, not since), stacked.",
                targets(
                    (in_window(NEW_USERS_SUM, LIFECYCLE_WINDOW), "new"),
                    (in_window(RETURNING_USERS_SUM, LIFECYCLE_WINDOW), "returning"),
                    (in_window(DORMANT_USERS_SUM, LIFECYCLE_WINDOW), "dormant"),
                ),
                stacked=True,
                width=8,
            )
        )
        .with_panel(
            stat_panel(
                f"Ghost followers ({GHOST_WINDOW})",
                f"Share of followers with no active event in the last {GHOST_WINDOW}.",
                f"{GHOST_FOLLOWER_SHARE}{{{SEL}}}",
                unit="percentunit",
                width=8,
                decimals=1,
            )
        )
    )


def variables() -> list[db.QueryVariable]:
    platform = (
        db.QueryVariable("platform")
        .label("Platform")
        .description(f"Platform (label platform of {ACTIVE_USERS})")
        .datasource(DATASOURCE)
        .query(f"label_values({ACTIVE_USERS}{{{APP_SEL}}}, platform)")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .include_all(False)
        .multi(False)
    )
    community = (
        db.QueryVariable("community")
        .label("Community")
        .description('Community; "*" is every community of the platform together')
        .datasource(DATASOURCE)
        .query(f"label_values({ACTIVE_USERS}{{{PLATFORM_SEL}}}, community)")
        .current(model.VariableOption(selected=True, text="*", value="*"))
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .include_all(False)
        .multi(False)
    )
    return [app_variable(), platform, community]


def build() -> model.Dashboard:
    dash = base_dashboard(
        TITLE,
        UID,
        "Active users per rolling window, followers, engagement ratios and alerts "
        "for one platform and community.",
    )
    for variable in variables():
        dash = dash.with_variable(variable)

    dash = dash.with_row(row("Right now"))
    for title, window, what in (
        ("Active users (5m)", "5m", "in the last 5 minutes"),
        (f"DAU ({DAU_WINDOW})", DAU_WINDOW, "in the last 24 hours"),
        (f"WAU ({WAU_WINDOW})", WAU_WINDOW, "in the last 7 days"),
        (f"MAU ({MAU_WINDOW})", MAU_WINDOW, "in the last 30 days"),
    ):
        dash = dash.with_panel(
            stat_panel(title, f"Distinct users with an active event {what}.", active(window))
        )
    dash = (
        dash.with_panel(
            stat_panel(
                "Followers",
                "Users whose latest follow/unfollow is a follow.",
                f"{FOLLOWERS_SUM}{{{SEL}}}",
                width=8,
            )
        )
        .with_panel(
            stat_panel(
                f"Active ({MAU_WINDOW}) / followers",
                "Monthly active users as a share of followers: how much of the audience "
                "actually engages (can exceed 100%: non-followers engage too).",
                f'{ACTIVE_FOLLOWERS_RATIO}{{{SEL}, window="{MAU_WINDOW}"}}',
                unit="percentunit",
                width=8,
                decimals=1,
            )
        )
        .with_panel(
            stat_panel(
                "Stickiness (DAU / MAU)",
                "Share of the month's active users who were active today.",
                f"{stickiness_record('dau_mau')}{{{SEL}}}",
                unit="percentunit",
                width=8,
                decimals=1,
            )
        )
    )

    dash = (
        dash.with_row(row("Trends"))
        .with_panel(
            timeseries_panel(
                "Active users per window",
                "Distinct active users over each rolling window.",
                [query(f"{ACTIVE_USERS_SUM}{{{SEL}}}", "{{window}}")],
            )
        )
        .with_panel(
            timeseries_panel(
                "Followers against active users",
                "Audience size next to the people who actually engage.",
                targets(
                    (f"{FOLLOWERS_SUM}{{{SEL}}}", "followers"),
                    (active(MAU_WINDOW), f"active {MAU_WINDOW}"),
                    (active(DAU_WINDOW), f"active {DAU_WINDOW}"),
                ),
            )
        )
        .with_panel(
            timeseries_panel(
                "Events/s by type",
                "Valid interaction events per second, 5m rate, stacked by type.",
                [query(EVENTS_BY_TYPE, "{{type}}")],
                unit="cps",
                stacked=True,
            )
        )
        .with_panel(
            timeseries_panel(
                "DAU against the same time last week",
                "Daily active users now and 7 days earlier (offset 1w).",
                targets(
                    (active(DAU_WINDOW), "now"),
                    (f"{active(DAU_WINDOW)} offset 1w", "a week ago"),
                ),
            )
        )
    )

    dash = audience_row(dash)
    dash = (
        dash.with_row(row("Communities and alerts"))
        .with_panel(
            table_panel(
                f"Top communities by active users ({DAU_WINDOW})",
                "The 10 communities of the platform with the most daily active users "
                '(the "*" total and the "_other" overflow excluded).',
                f"topk(10, {ACTIVE_USERS_SUM}"
                f'{{{PLATFORM_SEL}, window="{DAU_WINDOW}", community!~"[*]|_other"}})',
                exclude=["Time", "__name__", "app", "platform", "window"],
                rename={"community": "Community", "Value": f"Active users ({DAU_WINDOW})"},
                sort_desc=f"Active users ({DAU_WINDOW})",
            )
        )
        .with_panel(
            table_panel(
                "Firing engagement alerts",
                "Engagement alerts firing now (Prometheus ALERTS).",
                'ALERTS{alertstate="firing", alertname=~"Engagement.*"}',
                exclude=["Time", "__name__", "Value", "alertstate"],
                rename={"alertname": "Alert"},
            )
        )
    )
    return finish(dash)
