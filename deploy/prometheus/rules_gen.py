#!/usr/bin/env python3
"""Render the Prometheus rules and the Alertmanager config from thresholds.toml.

The committed files under deploy/prometheus/rules/ and deploy/alertmanager/alertmanager.yml
are this script's output for the ``production`` profile; a unit test checks that
re-rendering gives them byte for byte. The ``fast`` profile (seconds instead of hours and
weeks) is for the end-to-end test, rendered into a temporary folder:

    python deploy/prometheus/rules_gen.py                       # rewrite the committed files
    python deploy/prometheus/rules_gen.py --check               # exit 1 if they are stale
    python deploy/prometheus/rules_gen.py --profile fast --rules-out DIR --alertmanager-out FILE
    python deploy/prometheus/rules_gen.py --set drop_week_fraction=0.4 --rules-out DIR

Standard library only (tomllib to read, YAML written as text), plus the metric names of
streams/metric_names.py (plain constants, found from this file's path), so it runs anywhere
Python 3.11 does. See docs/alerting.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# The metric contract (names, DAU/WAU/MAU windows, stickiness pairs) is defined once, in
# streams/metric_names.py: a module of plain constants, importable from the repository.
sys.path.insert(0, str(HERE.parents[1]))
from streams import metric_names as names  # noqa: E402

THRESHOLDS = HERE / "thresholds.toml"
RULES_DIR = HERE / "rules"
ALERTMANAGER_YML = HERE.parent / "alertmanager" / "alertmanager.yml"

Settings = dict[str, Any]

#: " (app X)" in summaries, when the series carries the worker's app label (it always
#: does on a live worker; hand-written test series may omit it).
APP_SUFFIX = "{{ with $labels.app }} (app {{ . }}){{ end }}"

#: Alerts raised when the pipeline itself is broken; they inhibit the engagement alerts.
PIPELINE_DOWN_ALERTS = (
    "EngagementWorkerDown",
    "EngagementWorkerAbsent",
    "EngagementWatermarkStale",
)

_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


# --------------------------------------------------------------------------- settings


def load_settings(
    profile: str = "production",
    overrides: Sequence[str] = (),
    path: Path = THRESHOLDS,
) -> Settings:
    """The production settings, updated by ``profile``'s table and ``key=value`` overrides."""
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    settings: Settings = dict(data["production"])
    if profile != "production":
        if profile not in data:
            raise ValueError(f"unknown profile {profile!r}; known: {', '.join(data)}")
        unknown = set(data[profile]) - set(settings)
        if unknown:
            raise ValueError(f"profile {profile!r} sets unknown keys: {sorted(unknown)}")
        settings.update(data[profile])
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or key not in settings:
            raise ValueError(f"bad --set {item!r}: expected KEY=VALUE with a known KEY")
        default = settings[key]
        value: Any = raw
        if isinstance(default, bool):
            value = raw.lower() in ("1", "true", "yes")
        elif isinstance(default, int | float):
            value = float(raw) if "." in raw or isinstance(default, float) else int(raw)
        settings[key] = value
    validate(settings)
    return settings


def duration_seconds(text: str) -> float:
    """Seconds in a Prometheus duration such as ``1h30m``."""
    if not _DURATION.match(text):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNIT_S[unit] for n, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text))


def validate(s: Settings) -> None:
    """Reject settings that would render broken or self-defeating rules."""
    for key, value in s.items():
        if key.endswith(
            ("_for", "_after", "_offset", "_lookback", "_interval", "_wait", "_window", "_timeout")
        ):
            duration_seconds(str(value))
    for key in ("drop_week_fraction", "drop_sudden_fraction", "invalid_ratio"):
        if not 0 < float(s[key]) < 1:
            raise ValueError(f"{key} must be between 0 and 1, got {s[key]}")
    # A broken pipeline must be reported (and inhibit) before it looks like a drop.
    down = duration_seconds(s["watermark_stale_after"]) + duration_seconds(s["watermark_for"])
    for key in ("drop_week_for", "drop_sudden_for"):
        if down > duration_seconds(s[key]):
            raise ValueError(
                f"watermark_stale_after + watermark_for ({down:g}s) must not exceed {key} "
                f"({s[key]}): the pipeline alert has to fire first to inhibit the drop alert"
            )
    if down > duration_seconds(s["stopped_after"]) + duration_seconds(s["stopped_for"]):
        raise ValueError(
            "watermark_stale_after + watermark_for must not exceed stopped_after + stopped_for"
        )


# --------------------------------------------------------------------------- YAML text


def q(value: str) -> str:
    """A YAML double-quoted scalar (JSON string syntax is valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def num(value: float | int) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def block(text: str, indent: int) -> str:
    """A YAML literal block scalar for a multi-line expression."""
    text = text.strip("\n")
    if "\n" not in text:
        return " " + text
    pad = " " * indent
    return " |-\n" + "\n".join(pad + line if line else "" for line in text.splitlines())


def render_rule(rule: dict[str, Any]) -> str:
    lines: list[str] = []
    if "record" in rule:
        lines.append(f"      - record: {rule['record']}")
    else:
        lines.append(f"      - alert: {rule['alert']}")
    lines.append("        expr:" + block(rule["expr"], 10))
    if rule.get("for"):
        lines.append(f"        for: {rule['for']}")
    for section in ("labels", "annotations"):
        if rule.get(section):
            lines.append(f"        {section}:")
            for key, value in rule[section].items():
                lines.append(f"          {key}: {q(str(value))}")
    return "\n".join(lines)


def render_group(name: str, interval: str, rules: list[dict[str, Any]], profile: str) -> str:
    header = (
        f"# Generated by deploy/prometheus/rules_gen.py from thresholds.toml "
        f"(profile {profile}).\n"
        "# Do not edit: change deploy/prometheus/thresholds.toml and re-run the generator.\n"
    )
    body = "\n".join(render_rule(r) for r in rules)
    return f"{header}groups:\n  - name: {name}\n    interval: {interval}\n    rules:\n{body}\n"


# --------------------------------------------------------------------------- rules


def _annotations(s: Settings, alert: str, summary: str, description: str) -> dict[str, str]:
    return {
        "summary": summary,
        "description": description,
        "runbook_url": f"{s['runbook_base_url']}#{alert.lower()}",
    }


def recording_rules(s: Settings) -> list[dict[str, Any]]:
    w = s["events_rate_window"]
    active = names.ACTIVE_USERS_SUM
    # Ratios: a zero denominator gives no series (not 0, +Inf or NaN).
    stickiness = [
        {
            "record": names.stickiness_record(name),
            "expr": f'{active}{{window="{numerator}"}}\n'
            "  / ignoring (window)\n"
            f'({active}{{window="{denominator}"}} > 0)',
        }
        for name, (numerator, denominator) in names.STICKINESS.items()
    ]
    return [
        {"record": active, "expr": f"sum without (instance, job) ({names.ACTIVE_USERS})"},
        {
            "record": names.FOLLOWERS_SUM,
            "expr": f"sum without (instance, job) ({names.FOLLOWERS})",
        },
        {
            "record": names.ACTIVE_FOLLOWERS_RATIO,
            "expr": f"{active}\n  / ignoring (window) group_left ()\n({names.FOLLOWERS_SUM} > 0)",
        },
        *stickiness,
        *audience_rules(),
        {
            "record": names.EVENTS_RATE,
            "expr": f"sum without (instance, job, partition) (rate({names.EVENTS_TOTAL}[{w}]))",
        },
        {
            "record": names.INVALID_EVENTS_RATE,
            "expr": "sum without (instance, job, partition) "
            f"(rate({names.INVALID_EVENTS_TOTAL}[{w}]))",
        },
    ]


def audience_rules() -> list[dict[str, Any]]:
    """Sums of the audience gauges, the follower shares and the non-follower engagers."""
    sums = [
        (names.ACTIVE_FOLLOWERS_SUM, names.ACTIVE_FOLLOWERS),
        (names.NEW_USERS_SUM, names.NEW_USERS),
        (names.RETURNING_USERS_SUM, names.RETURNING_USERS),
        (names.DORMANT_USERS_SUM, names.DORMANT_USERS),
    ]
    followers, active_followers = names.FOLLOWERS_SUM, names.ACTIVE_FOLLOWERS_SUM
    return [
        *(
            {"record": record, "expr": f"sum without (instance, job) ({family})"}
            for record, family in sums
        ),
        {
            "record": names.ACTIVE_FOLLOWER_SHARE,
            "expr": f"{active_followers}\n  / ignoring (window) group_left ()\n({followers} > 0)",
        },
        {
            "record": names.GHOST_FOLLOWER_SHARE,
            "expr": f"(\n  {followers}\n  - ignoring (window)\n"
            f'  {active_followers}{{window="{names.GHOST_WINDOW}"}}\n)\n/\n({followers} > 0)',
        },
        {
            "record": names.NON_FOLLOWER_ACTIVE,
            "expr": f"{names.ACTIVE_USERS_SUM} - {active_followers}",
        },
    ]


def engagement_alerts(s: Settings) -> list[dict[str, Any]]:
    def active(window: str, offset: str = "") -> str:
        off = f" offset {offset}" if offset else ""
        return f'sum without (instance, job) ({names.ACTIVE_USERS}{{window="{window}"}}{off})'

    ww, wo = s["drop_week_window"], s["drop_week_offset"]
    sw, so = s["drop_sudden_window"], s["drop_sudden_offset"]
    lookback, after = s["stopped_lookback"], s["stopped_after"]
    where = f"{{{{ $labels.community }}}} on {{{{ $labels.platform }}}}{APP_SUFFIX}"
    return [
        {
            "alert": "EngagementDropVsLastWeek",
            "expr": f"(\n  {active(ww)}\n/\n  {active(ww, wo)}\n)"
            f" < {num(s['drop_week_fraction'])}\n"
            f"and\n{active(ww, wo)} >= {num(s['drop_week_floor'])}",
            "for": s["drop_week_for"],
            "labels": {"severity": s["drop_week_severity"], "component": "engagement"},
            "annotations": _annotations(
                s,
                "EngagementDropVsLastWeek",
                f"{where}: {ww} active users at {{{{ $value | humanizePercentage }}}} "
                f"of the same time {wo} ago",
                f"Active users over {ww} in {where} are {{{{ $value | humanizePercentage }}}} "
                f"of their value {wo} ago (alert below {num(s['drop_week_fraction'])}, "
                f"only when that value was at least {num(s['drop_week_floor'])}) "
                f"for {s['drop_week_for']}.",
            ),
        },
        {
            "alert": "EngagementDropSudden",
            "expr": f"(\n  {active(sw)}\n/\n  {active(sw, so)}\n)"
            f" < {num(s['drop_sudden_fraction'])}\n"
            f"and\n{active(sw, so)} >= {num(s['drop_sudden_floor'])}",
            "for": s["drop_sudden_for"],
            "labels": {"severity": s["drop_sudden_severity"], "component": "engagement"},
            "annotations": _annotations(
                s,
                "EngagementDropSudden",
                f"{where}: {sw} active users fell to {{{{ $value | humanizePercentage }}}} "
                f"of their level {so} earlier",
                f"Active users over {sw} in {where} are {{{{ $value | humanizePercentage }}}} "
                f"of their level {so} earlier (alert below {num(s['drop_sudden_fraction'])}, "
                f"only when that level was at least {num(s['drop_sudden_floor'])}) "
                f"for {s['drop_sudden_for']}.",
            ),
        },
        {
            # increase() copes with counter resets (worker restarts); `unless` also fires
            # when a community's series vanished (no sample in the last `after`).
            "alert": "EngagementStopped",
            "expr": "sum without (instance, job, partition, type) "
            f"(increase({names.EVENTS_TOTAL}[{lookback}]))"
            f" >= {num(s['stopped_min_events'])}\n"
            "unless\n"
            "sum without (instance, job, partition, type) "
            f"(increase({names.EVENTS_TOTAL}[{after}])) > 0",
            "for": s["stopped_for"],
            "labels": {"severity": s["stopped_severity"], "component": "engagement"},
            "annotations": _annotations(
                s,
                "EngagementStopped",
                f"{where}: no events for {after}",
                f'{where} had {{{{ printf "%.0f" $value }}}} events in the last {lookback} '
                f"but none in the last {after} (checked for {s['stopped_for']}; only "
                f"communities with at least {num(s['stopped_min_events'])} events "
                f"in {lookback}).",
            ),
        },
    ]


def pipeline_alerts(s: Settings) -> list[dict[str, Any]]:
    job = s["job"]
    # Faust's sensor spells it "commited".
    end = f"{s['faust_metric_prefix']}_topic_partition_end_offset"
    committed = f"{s['faust_metric_prefix']}_topic_partition_offset_commited"
    topics = f'topic=~{q(s["lag_topic_regex"])}, topic!~".*-changelog"'
    w = s["events_rate_window"]
    invalid = (
        f"sum without (instance, job, partition, reason) (rate({names.INVALID_EVENTS_TOTAL}[{w}]))"
    )
    valid = (
        "sum without (instance, job, partition, platform, community, type) "
        f"(rate({names.EVENTS_TOTAL}[{w}]))"
    )
    return [
        # Consumer lag per app and topic from Faust's sensor: end offset - committed offset, per
        # partition. `max` over workers because a worker keeps exposing the (stale, lower)
        # offsets of partitions it lost in a rebalance; offsets only grow. Recorded here,
        # in the group of the alert that reads it, so the alert sees this round's value.
        {
            "record": names.CONSUMER_LAG_SUM,
            "expr": "sum by (app, topic) (clamp_min(\n"
            f"    max without (instance, job) ({end}{{{topics}}})\n"
            f"  - max without (instance, job) ({committed}{{{topics}}}),\n"
            "  0))",
        },
        {
            "alert": "EngagementWorkerDown",
            "expr": f'up{{job="{job}"}} == 0',
            "for": s["worker_down_for"],
            "labels": {"severity": s["worker_severity"], "component": "pipeline"},
            "annotations": _annotations(
                s,
                "EngagementWorkerDown",
                "engagement-monitor worker {{ $labels.instance }} is down",
                f"Prometheus has failed to scrape {{{{ $labels.instance }}}} (job {job}) for "
                f"{s['worker_down_for']}. Engagement alerts are inhibited meanwhile.",
            ),
        },
        {
            "alert": "EngagementWorkerAbsent",
            "expr": f'absent(up{{job="{job}"}})',
            "for": s["worker_absent_for"],
            "labels": {"severity": s["worker_severity"], "component": "pipeline"},
            "annotations": _annotations(
                s,
                "EngagementWorkerAbsent",
                f"no engagement-monitor worker target (job {job})",
                f"Prometheus has had no target in job {job} for {s['worker_absent_for']}: "
                "service discovery or the scrape config lost the workers. "
                "Engagement alerts are inhibited meanwhile.",
            ),
        },
        {
            "alert": "EngagementWatermarkStale",
            "expr": "time() - max without (instance, job) "
            f"({names.WATERMARK} > 0)"
            f" > {num(duration_seconds(s['watermark_stale_after']))}",
            "for": s["watermark_for"],
            "labels": {"severity": s["watermark_severity"], "component": "pipeline"},
            "annotations": _annotations(
                s,
                "EngagementWatermarkStale",
                f"no new event for {{{{ $value | humanizeDuration }}}}{APP_SUFFIX}",
                "The newest event time seen by the workers is {{ $value | humanizeDuration }} "
                f"old (threshold {s['watermark_stale_after']}): input stopped or the workers "
                "are stuck. Engagement alerts are inhibited meanwhile.",
            ),
        },
        {
            "alert": "EngagementConsumerLagGrowing",
            "expr": f"{names.CONSUMER_LAG_SUM} >= {num(s['lag_min_messages'])}\n"
            f"and\nderiv({names.CONSUMER_LAG_SUM}[{s['lag_growth_window']}]) > 0",
            "for": s["lag_for"],
            "labels": {"severity": s["lag_severity"], "component": "pipeline"},
            "annotations": _annotations(
                s,
                "EngagementConsumerLagGrowing",
                f"consumer lag on {{{{ $labels.topic }}}}{APP_SUFFIX} is "
                "{{ $value | humanize }} and growing",
                "The workers are {{ $value | humanize }} messages behind on topic "
                f"{{{{ $labels.topic }}}} (alert from {num(s['lag_min_messages'])}) and the "
                f"lag has kept growing (slope over {s['lag_growth_window']} > 0) "
                f"for {s['lag_for']}.",
            ),
        },
        {
            "alert": "EngagementInvalidEventsSpike",
            "expr": f"(\n  {invalid}\n/\n  (\n    {invalid}\n  +\n    ({valid}\n"
            f"     or {invalid} * 0)\n  )\n) > {num(s['invalid_ratio'])}\n"
            f"and\n{invalid} >= {num(s['invalid_min_rate'])}",
            "for": s["invalid_for"],
            "labels": {"severity": s["invalid_severity"], "component": "pipeline"},
            "annotations": _annotations(
                s,
                "EngagementInvalidEventsSpike",
                "{{ $value | humanizePercentage }} of incoming events are invalid",
                "{{ $value | humanizePercentage }} of the messages on the input topic are "
                f"invalid (threshold {num(s['invalid_ratio'])}, and at least "
                f"{num(s['invalid_min_rate'])}/s) for {s['invalid_for']}; they go to the "
                f"DLQ, see {names.INVALID_EVENTS_RATE} by reason.",
            ),
        },
        {
            "alert": "Watchdog",
            "expr": "vector(1)",
            "labels": {"severity": "none", "component": "alerting"},
            "annotations": _annotations(
                s,
                "Watchdog",
                "alerting pipeline heartbeat (always firing)",
                "Always fires, so that a dead Prometheus -> Alertmanager -> receiver path is "
                "noticed by whatever expects this heartbeat.",
            ),
        },
    ]


def render_rules(s: Settings, profile: str) -> dict[str, str]:
    """File name -> YAML text for deploy/prometheus/rules/."""
    itv = s["evaluation_interval"]
    return {
        "recording.yml": render_group("engagement-recording", itv, recording_rules(s), profile),
        "engagement-alerts.yml": render_group(
            "engagement-alerts", itv, engagement_alerts(s), profile
        ),
        "pipeline-alerts.yml": render_group(
            "engagement-pipeline-alerts", itv, pipeline_alerts(s), profile
        ),
    }


# --------------------------------------------------------------------------- alertmanager


def render_alertmanager(s: Settings, profile: str) -> str:
    url = q(s["webhook_url"])
    down = "|".join(PIPELINE_DOWN_ALERTS)

    def receiver(name: str) -> str:
        return (
            f"  - name: {name}\n"
            "    webhook_configs:\n"
            f"      - url: {url}\n"
            "        send_resolved: true\n"
        )

    return f"""\
# Generated by deploy/prometheus/rules_gen.py from deploy/prometheus/thresholds.toml
# (profile {profile}). Do not edit: change thresholds.toml and re-run the generator.
# docs/alerting.md explains routing and inhibition. All receivers post to the
# engagement-monitor alerts-webhook; swap in Slack/PagerDuty receivers in production.
global:
  resolve_timeout: {s["resolve_timeout"]}

route:
  receiver: ticket
  group_by: [alertname, app, platform, community]
  group_wait: {s["group_wait"]}
  group_interval: {s["group_interval"]}
  repeat_interval: {s["ticket_repeat_interval"]}
  routes:
    - matchers: ['alertname="Watchdog"']
      receiver: watchdog
      group_wait: {s["group_wait"]}
      group_interval: {s["watchdog_repeat_interval"]}
      repeat_interval: {s["watchdog_repeat_interval"]}
    - matchers: ['severity="page"']
      receiver: page
      repeat_interval: {s["page_repeat_interval"]}
    - matchers: ['severity="ticket"']
      receiver: ticket
      repeat_interval: {s["ticket_repeat_interval"]}
    - matchers: ['severity=~"info|none"']
      receiver: info
      repeat_interval: {s["ticket_repeat_interval"]}

inhibit_rules:
  # A broken pipeline must not page as "engagement dropped".
  - source_matchers: ['alertname=~"{down}"']
    target_matchers: ['component="engagement"']
  # One notification per community problem: stopped > sudden drop > weekly drop.
  - source_matchers: ['alertname="EngagementStopped"']
    target_matchers: ['alertname=~"EngagementDropSudden|EngagementDropVsLastWeek"']
    equal: [app, platform, community]
  - source_matchers: ['alertname="EngagementDropSudden"']
    target_matchers: ['alertname="EngagementDropVsLastWeek"']
    equal: [app, platform, community]
  # A target that is gone entirely needs no per-instance "down" alert as well.
  - source_matchers: ['alertname="EngagementWorkerAbsent"']
    target_matchers: ['alertname="EngagementWorkerDown"']

receivers:
{receiver("page")}{receiver("ticket")}{receiver("info")}{receiver("watchdog")}"""


# --------------------------------------------------------------------------- CLI


def render_all(s: Settings, profile: str) -> dict[Path, str]:
    return {RULES_DIR / name: text for name, text in render_rules(s, profile).items()} | {
        ALERTMANAGER_YML: render_alertmanager(s, profile)
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--profile", default="production", help="table of thresholds.toml")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting (repeatable)",
    )
    parser.add_argument("--thresholds", type=Path, default=THRESHOLDS)
    parser.add_argument("--rules-out", type=Path, help=f"rules folder (default {RULES_DIR})")
    parser.add_argument(
        "--alertmanager-out", type=Path, help=f"alertmanager.yml path (default {ALERTMANAGER_YML})"
    )
    parser.add_argument(
        "--check", action="store_true", help="don't write; exit 1 if the committed files differ"
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.profile, args.set, args.thresholds)
    except ValueError as exc:
        parser.error(str(exc))
    rules_dir = args.rules_out or RULES_DIR
    am_path = args.alertmanager_out or ALERTMANAGER_YML
    outputs = {rules_dir / n: t for n, t in render_rules(settings, args.profile).items()}
    outputs[am_path] = render_alertmanager(settings, args.profile)
    if args.check:
        stale = [
            str(p)
            for p, text in outputs.items()
            if not p.exists() or p.read_text(encoding="utf-8") != text
        ]
        for name in stale:
            print(f"out of date: {name}", file=sys.stderr)
        if stale:
            print("run: python deploy/prometheus/rules_gen.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
