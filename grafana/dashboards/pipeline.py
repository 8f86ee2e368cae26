"""The "Pipeline health" dashboard: is the stream flowing, on time, and are the workers well.

Engagement families come from the worker's collector (docs/metrics.md); consumer
offsets and rebalances from Faust's own sensor (faust.sensors.prometheus, prefix
``faust_``): ``topic_partition_end_offset`` and
``topic_partition_offset_commited`` (sic) are gauges per topic/partition,
``total_rebalances`` / ``total_rebalances_recovering`` are gauges of rebalances in
progress, and ``rebalance_done_latency`` is a histogram observed once per completed
rebalance.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as model

from grafana.dashboards.common import (
    APP_SEL,
    FAUST_PREFIX,
    JOB,
    app_variable,
    base_dashboard,
    finish,
    row,
    stat_panel,
    targets,
    timeseries_panel,
)
from streams.metric_names import EVENT_LAG, EVENTS_RATE, INVALID_EVENTS_RATE, WATERMARK

UID = "engagement-pipeline"
TITLE = "Pipeline health"

#: Valid events/s per platform. Exclude community="*" (the all-communities total)
#: so that communities are not counted twice.
EVENTS_IN = f'sum by (platform) ({EVENTS_RATE}{{{APP_SEL}, community!="*"}})'
INVALID_IN = f"sum({INVALID_EVENTS_RATE}{{{APP_SEL}}})"
#: End offset minus committed offset per topic/partition; ``max without`` so that a
#: partition briefly reported by two workers around a rebalance counts once.
CONSUMER_LAG_PARTITIONS = (
    "clamp_min(max without (instance, job) "
    f"({FAUST_PREFIX}_topic_partition_end_offset{{{APP_SEL}}})"
    " - max without (instance, job) "
    f"({FAUST_PREFIX}_topic_partition_offset_commited{{{APP_SEL}}}), 0)"
)
WATERMARK_AGE = f"time() - max({WATERMARK}{{{APP_SEL}}})"
UP = f'up{{job="{JOB}"}}'


def lag_quantile(q: str) -> str:
    return (
        f"histogram_quantile({q}, sum without (instance, job, partition) "
        f"(rate({EVENT_LAG}_bucket{{{APP_SEL}}}[$__rate_interval])))"
    )


def build() -> model.Dashboard:
    dash = base_dashboard(
        TITLE,
        UID,
        "Throughput, invalid input, event and consumer lag, watermark, workers and "
        "rebalances of the engagement-monitor pipeline.",
    ).with_variable(app_variable())
    dash = (
        dash.with_row(row("Now"))
        .with_panel(
            stat_panel(
                "Workers up",
                f'Workers Prometheus scrapes successfully (up{{job="{JOB}"}}).',
                f"sum without (instance, job) ({UP})",
                thresholds=[(None, "red"), (1, "green")],
            )
        )
        .with_panel(
            stat_panel(
                "Events/s in",
                "Valid events per second, all platforms (5m rate).",
                f'sum({EVENTS_RATE}{{{APP_SEL}, community!="*"}})',
                unit="cps",
            )
        )
        .with_panel(
            stat_panel(
                "Consumer lag",
                "Messages not yet committed, summed over consumed topics and partitions.",
                f"sum({CONSUMER_LAG_PARTITIONS})",
                thresholds=[(None, "green"), (10000, "orange"), (100000, "red")],
            )
        )
        .with_panel(
            stat_panel(
                "Watermark age",
                "Time since the newest event time the workers have seen; grows when "
                "events stop arriving or the workers stall.",
                WATERMARK_AGE,
                unit="s",
                thresholds=[(None, "green"), (60, "orange"), (300, "red")],
            )
        )
    )

    dash = (
        dash.with_row(row("Input"))
        .with_panel(
            timeseries_panel(
                "Events/s in by platform",
                "Valid events per second by platform, and invalid ones (5m rate).",
                targets((EVENTS_IN, "{{platform}}"), (INVALID_IN, "invalid")),
                unit="cps",
            )
        )
        .with_panel(
            timeseries_panel(
                "Invalid events by reason",
                "Messages sent to the dead-letter topic per second, by reason (5m rate).",
                targets((f"{INVALID_EVENTS_RATE}{{{APP_SEL}}}", "{{reason}}")),
                unit="cps",
                stacked=True,
            )
        )
    )

    dash = (
        dash.with_row(row("Lag"))
        .with_panel(
            timeseries_panel(
                "Event lag",
                "Arrival time minus event time, quantiles over all workers.",
                targets(
                    (lag_quantile("0.5"), "p50"),
                    (lag_quantile("0.95"), "p95"),
                    (lag_quantile("0.99"), "p99"),
                ),
                unit="s",
            )
        )
        .with_panel(
            timeseries_panel(
                "Consumer lag by topic/partition",
                "End offset minus committed offset, per topic and partition (Faust sensor).",
                targets(
                    (
                        CONSUMER_LAG_PARTITIONS,
                        "{{topic}}/{{partition}}",
                    )
                ),
            )
        )
        .with_panel(
            timeseries_panel(
                "Watermark age over time",
                "Seconds between now and the newest event time seen.",
                targets((WATERMARK_AGE, "watermark age")),
                unit="s",
            )
        )
        .with_panel(
            timeseries_panel(
                "Scrape health per worker",
                "Workers up per instance: 1 scraped, 0 down.",
                targets((UP, "{{instance}}")),
                unit="none",
            )
        )
    )

    dash = (
        dash.with_row(row("Workers"))
        .with_panel(
            timeseries_panel(
                "Rebalances",
                "Consumer-group rebalances completed per interval, and those in progress "
                "or recovering now (Faust sensor).",
                targets(
                    (
                        "sum without (instance, job) (increase("
                        f"{FAUST_PREFIX}_rebalance_done_latency_count{{{APP_SEL}}}[$__rate_interval]))",
                        "completed",
                    ),
                    (
                        "sum without (instance, job) "
                        f"({FAUST_PREFIX}_total_rebalances{{{APP_SEL}}})",
                        "in progress",
                    ),
                    (
                        "sum without (instance, job) "
                        f"({FAUST_PREFIX}_total_rebalances_recovering{{{APP_SEL}}})",
                        "recovering",
                    ),
                ),
            )
        )
        .with_panel(
            timeseries_panel(
                "Scrape duration",
                "How long Prometheus takes to scrape each worker's /metrics.",
                targets((f'scrape_duration_seconds{{job="{JOB}"}}', "{{instance}}")),
                unit="s",
            )
        )
    )
    return finish(dash)
