"""Render deploy/prometheus/prometheus.yml with the ports and targets in use; reload."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from emstack.config import REPO, Config, StackError

TEMPLATE = REPO / "deploy" / "prometheus" / "prometheus.yml"
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
ALERTMANAGER_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"

_TARGETS_LINE = re.compile(r"^(?P<head>.*targets:\s*)\[[^\]]*\](?P<tail>\s*# @(?P<mark>[\w-]+).*)$")
_RULE_LINE = re.compile(r"^(?P<head>\s*-\s*)\"(?P<path>[^\"]+)\"(?P<tail>\s*# @rule-files.*)$")


def render(cfg: Config, targets: Sequence[str] | None = None) -> str:
    """The template with scrape targets, Alertmanager address and absolute rule paths."""
    values = {
        "scrape-targets": list(targets if targets is not None else cfg.scrape_targets),
        "alertmanager-targets": [f"127.0.0.1:{cfg.ports['ALERTMANAGER_PORT']}"],
    }
    seen: set[str] = set()
    lines = []
    for line in TEMPLATE.read_text().splitlines():
        line, mark = _render_line(line, values)
        if mark:
            seen.add(mark)
        lines.append(line)
    missing = {*values, "rule-files"} - seen
    if missing:
        raise StackError(f"{TEMPLATE} lost its marker(s): {', '.join(sorted(missing))}")
    return "\n".join(lines) + "\n"


def _render_line(line: str, values: dict[str, list[str]]) -> tuple[str, str | None]:
    match = _TARGETS_LINE.match(line)
    if match and match["mark"] in values:
        return f"{match['head']}{json.dumps(values[match['mark']])}{match['tail']}", match["mark"]
    match = _RULE_LINE.match(line)
    if match:
        path = Path(match["path"])
        absolute = path if path.is_absolute() else TEMPLATE.parent / path
        return f'{match["head"]}"{absolute}"{match["tail"]}', "rule-files"
    return line, None


def write(cfg: Config, targets: Sequence[str] | None = None, path: Path | None = None) -> Path:
    path = path or cfg.prometheus_config
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render(cfg, targets))
    tmp.replace(path)
    return path


def reload(cfg: Config) -> None:
    """Ask the running Prometheus to re-read its config (needs --web.enable-lifecycle)."""
    request = urllib.request.Request(f"{cfg.prometheus_url}/-/reload", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    except OSError as exc:
        raise StackError(f"Prometheus reload failed: {exc}") from exc


def active_config_path(cfg: Config) -> Path:
    """The config file the running Prometheus reads (it may be another state folder's)."""
    url = f"{cfg.prometheus_url}/api/v1/status/flags"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return Path(json.load(response)["data"]["config.file"])
    except (OSError, KeyError, ValueError):
        return cfg.prometheus_config


def scrape(cfg: Config, targets: Sequence[str]) -> Path:
    """Point the running Prometheus' engagement-monitor job at targets."""
    path = write(cfg, targets, active_config_path(cfg))
    reload(cfg)
    return path


def ensure_alertmanager_config() -> Path:
    """deploy/alertmanager/alertmanager.yml is owned elsewhere; it must exist to start."""
    if not ALERTMANAGER_CONFIG.exists():
        raise StackError(f"{ALERTMANAGER_CONFIG} is missing")
    return ALERTMANAGER_CONFIG
