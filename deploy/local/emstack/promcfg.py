"""Render deploy/prometheus/prometheus.yml with the ports, targets and rules in use; reload.

The rendered file is the record of what the running Prometheus does: `scrape` keeps its
rule files, `load_rules` keeps its targets. Alertmanager reads a copy of its config in
the state folder, so `load_rules` can swap it too and reload.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from emstack.config import (
    DEFAULT_ALERTMANAGER_CONFIG,
    DEFAULT_RULES_DIR,
    REPO,
    Config,
    StackError,
)

TEMPLATE = REPO / "deploy" / "prometheus" / "prometheus.yml"
RULES_DIR = DEFAULT_RULES_DIR
ALERTMANAGER_CONFIG = DEFAULT_ALERTMANAGER_CONFIG

_TARGETS_LINE = re.compile(r"^(?P<head>.*targets:\s*)\[[^\]]*\](?P<tail>\s*# @(?P<mark>[\w-]+).*)$")
_RULE_LINE = re.compile(r"^(?P<head>\s*-\s*)\"(?P<path>[^\"]+)\"(?P<tail>\s*# @rule-files.*)$")


def render(cfg: Config, targets: Sequence[str] | None = None, rules_dir: Path | None = None) -> str:
    """The template with scrape targets, Alertmanager address and absolute rule paths."""
    values = {
        "scrape-targets": list(targets if targets is not None else cfg.scrape_targets),
        "alertmanager-targets": [f"127.0.0.1:{cfg.ports['ALERTMANAGER_PORT']}"],
    }
    seen: set[str] = set()
    lines = []
    for line in TEMPLATE.read_text().splitlines():
        line, mark = _render_line(line, values, rules_dir or cfg.rules_dir)
        if mark:
            seen.add(mark)
        lines.append(line)
    if cfg.http_token_file is not None:
        lines = _with_authorization(lines, cfg.http_token_file)
    missing = {*values, "rule-files"} - seen
    if missing:
        raise StackError(f"{TEMPLATE} lost its marker(s): {', '.join(sorted(missing))}")
    return "\n".join(lines) + "\n"


def _with_authorization(lines: list[str], token_file: Path) -> list[str]:
    """The workers require a bearer token (EM_HTTP_TOKEN): Prometheus sends it, read
    from a file so the token itself is not in the config."""
    out: list[str] = []
    for line in lines:
        out.append(line)
        if line.strip() == "metrics_path: /metrics":
            indent = line[: len(line) - len(line.lstrip())]
            out += [
                f"{indent}authorization:  # EM_HTTP_TOKEN is set",
                f"{indent}  type: Bearer",
                f'{indent}  credentials_file: "{token_file}"',
            ]
    return out


def _write_token(cfg: Config) -> None:
    """EM_HTTP_TOKEN into the file the rendered config names (owner-only)."""
    if cfg.http_token and cfg.http_token_file is not None:
        cfg.http_token_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(cfg.http_token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(cfg.http_token)


def _render_line(
    line: str, values: dict[str, list[str]], rules_dir: Path
) -> tuple[str, str | None]:
    match = _TARGETS_LINE.match(line)
    if match and match["mark"] in values:
        return f"{match['head']}{json.dumps(values[match['mark']])}{match['tail']}", match["mark"]
    match = _RULE_LINE.match(line)
    if match:  # the template's file pattern (*.yml) in the rules folder in use
        absolute = rules_dir / Path(match["path"]).name
        return f'{match["head"]}"{absolute}"{match["tail"]}', "rule-files"
    return line, None


def rendered(path: Path) -> tuple[list[str] | None, Path | None]:
    """(scrape targets, rules folder) of a rendered config; None where it has none."""
    targets: list[str] | None = None
    rules: Path | None = None
    try:
        text = path.read_text()
    except OSError:
        return None, None
    for line in text.splitlines():
        match = _TARGETS_LINE.match(line)
        if match and match["mark"] == "scrape-targets":
            try:
                targets = [
                    str(t) for t in json.loads(line[match.end("head") : match.start("tail")])
                ]
            except ValueError:
                targets = None
        match = _RULE_LINE.match(line)
        if match:
            rules = Path(match["path"]).parent
    return targets, rules


def write(
    cfg: Config,
    targets: Sequence[str] | None = None,
    path: Path | None = None,
    rules_dir: Path | None = None,
) -> Path:
    path = path or cfg.prometheus_config
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_token(cfg)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render(cfg, targets, rules_dir))
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
    """Point the running Prometheus' engagement-monitor job at targets (rules unchanged)."""
    path = active_config_path(cfg)
    write(cfg, targets, path, rendered(path)[1])
    reload(cfg)
    return path


def ensure_alertmanager_config(cfg: Config) -> Path:
    """The Alertmanager config to start with; it must exist."""
    if not cfg.alertmanager_source.is_file():
        raise StackError(f"{cfg.alertmanager_source} is missing (EM_ALERTMANAGER_CONFIG)")
    return cfg.alertmanager_source


def without_webhooks(text: str) -> str:
    """The repo's generated config with every receiver's ``webhook_configs`` removed:
    the receivers still exist (Alertmanager keeps the alerts, its UI and API show
    them) but send nowhere, instead of logging "connection refused" for the
    alerts-webhook on 127.0.0.1:9099 that a plain stack does not run."""
    return re.sub(r"^    webhook_configs:\n(?:^      .*\n)+", "", text, flags=re.MULTILINE)


def write_alertmanager_config(cfg: Config, source: Path | None = None) -> Path:
    """Copy source (default: EM_ALERTMANAGER_CONFIG) to the file Alertmanager reads;
    the repo's own config without its webhooks unless EM_ALERTS_WEBHOOK=on."""
    source = source or ensure_alertmanager_config(cfg)
    if not source.is_file():
        raise StackError(f"{source} is missing")
    cfg.alertmanager_config.parent.mkdir(parents=True, exist_ok=True)
    tmp = cfg.alertmanager_config.with_suffix(".tmp")
    text = source.read_text(encoding="utf-8")
    if source.resolve() == DEFAULT_ALERTMANAGER_CONFIG.resolve() and not cfg.alerts_webhook:
        text = without_webhooks(text)
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(cfg.alertmanager_config)
    return cfg.alertmanager_config


def config_hash(data: bytes) -> float:
    """Alertmanager's `alertmanager_config_hash` of a config file's bytes."""
    return float(int.from_bytes(hashlib.md5(data).digest()[:6], "little"))


def reload_alertmanager(cfg: Config) -> None:
    """Re-read the config; fail unless the running Alertmanager now has our file."""
    request = urllib.request.Request(f"{cfg.alertmanager_url}/-/reload", method="POST")
    loaded: float | None = None
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        with urllib.request.urlopen(f"{cfg.alertmanager_url}/metrics", timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("alertmanager_config_hash "):
                    loaded = float(line.split()[1])
    except (OSError, ValueError) as exc:
        raise StackError(f"Alertmanager reload failed: {exc}") from exc
    if loaded != config_hash(cfg.alertmanager_config.read_bytes()):
        raise StackError(
            f"the Alertmanager at {cfg.alertmanager_url} does not read "
            f"{cfg.alertmanager_config} (another state folder, or started by an older "
            "deploy/local/stack?); restart it: deploy/local/stack down && deploy/local/stack up"
        )


def load_rules(
    cfg: Config, rules_dir: Path | None = None, alertmanager: Path | None = None
) -> Path:
    """Make the running Prometheus load rules_dir/*.yml (default EM_RULES_DIR), keeping
    its targets, and, if given, Alertmanager load `alertmanager`; reload both.
    Alertmanager goes first, so no alert of the new rules meets the old routing."""
    rules_dir = (rules_dir or cfg.rules_dir).resolve()
    if not sorted(rules_dir.glob("*.yml")):
        raise StackError(f"no *.yml rule files in {rules_dir}")
    if alertmanager is not None:
        write_alertmanager_config(cfg, alertmanager.resolve())
        reload_alertmanager(cfg)
    path = active_config_path(cfg)
    targets = rendered(path)[0]
    write(cfg, targets, path, rules_dir)
    reload(cfg)
    return path
