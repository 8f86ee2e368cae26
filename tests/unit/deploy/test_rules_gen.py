"""Prometheus rules and Alertmanager config: generated files current, valid and tested.

Runs the real tools: ``promtool check rules``, ``promtool test rules`` (the unit tests in
deploy/prometheus/tests/) and ``amtool check-config``. Skipped when a tool is missing.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[3]
PROM = REPO / "deploy" / "prometheus"
RULES = sorted((PROM / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))
ALERTMANAGER_YML = REPO / "deploy" / "alertmanager" / "alertmanager.yml"

RECORDING_RULES = (  # docs/metrics.md: dashboards depend on these names
    "engagement:active_users:sum",
    "engagement:followers:sum",
    "engagement:active_followers_ratio",
    "engagement:stickiness_dau_mau",
    "engagement:stickiness_dau_wau",
    "engagement:events:rate5m",
    "engagement:invalid_events:rate5m",
    "engagement:active_followers:sum",
    "engagement:new_users:sum",
    "engagement:returning_users:sum",
    "engagement:dormant_users:sum",
    "engagement:active_follower_share",
    "engagement:ghost_follower_share",
    "engagement:non_follower_active_users",
)
ALERTS = (
    "EngagementDropVsLastWeek",
    "EngagementDropSudden",
    "EngagementStopped",
    "EngagementWorkerDown",
    "EngagementWorkerAbsent",
    "EngagementWatermarkStale",
    "EngagementConsumerLagGrowing",
    "EngagementInvalidEventsSpike",
    "Watchdog",
)


def _load_gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rules_gen", PROM / "rules_gen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["rules_gen"] = module
    spec.loader.exec_module(module)
    return module


gen = _load_gen()


def _run(*cmd: str | Path, cwd: Path = REPO) -> None:
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed")
    return path


def test_committed_files_match_the_generator() -> None:
    settings = gen.load_settings("production")
    for path, text in gen.render_all(settings, "production").items():
        assert path.exists(), f"{path} missing: run python deploy/prometheus/rules_gen.py"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path} differs from thresholds.toml: run python deploy/prometheus/rules_gen.py"
        )


def test_contract_names_present() -> None:
    text = "\n".join(p.read_text() for p in RULES)
    for name in RECORDING_RULES:
        assert f"- record: {name}\n" in text
    for name in ALERTS:
        assert f"- alert: {name}\n" in text
        # every alert has a runbook section (GitHub anchor = lower-cased heading)
        assert f'#{name.lower()}"' in text
    runbook = (REPO / "docs" / "runbook.md").read_text()
    for name in ALERTS:
        assert f"\n## {name}\n" in runbook, f"docs/runbook.md lacks a section for {name}"


def test_every_alert_has_a_rule_test() -> None:
    text = "\n".join(p.read_text() for p in RULE_TESTS)
    for name in ALERTS:
        assert name in text, f"no promtool test mentions {name}"


def test_promtool_check_rules() -> None:
    _run(_need("promtool"), "check", "rules", *RULES)


def test_promtool_test_rules() -> None:
    _run(_need("promtool"), "test", "rules", *RULE_TESTS, cwd=PROM)


def test_amtool_check_config() -> None:
    _run(_need("amtool"), "check-config", ALERTMANAGER_YML)


def test_alertmanager_routes() -> None:
    amtool = _need("amtool")
    cases = {
        "page": ["alertname=EngagementDropSudden", "severity=page", "community=acme"],
        "ticket": ["alertname=EngagementDropVsLastWeek", "severity=ticket"],
        "watchdog": ["alertname=Watchdog", "severity=none"],
        "info": ["alertname=Something", "severity=info"],
    }
    for receiver, labels in cases.items():
        proc = subprocess.run(
            [
                amtool,
                "config",
                "routes",
                "test",
                f"--config.file={ALERTMANAGER_YML}",
                f"--verify.receivers={receiver}",
                *labels,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, f"{labels} -> {proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("profile", ["production", "fast"])
def test_profiles_render_valid_files(profile: str, tmp_path: Path) -> None:
    am = tmp_path / "alertmanager.yml"
    assert (
        gen.main(
            [
                "--profile",
                profile,
                "--rules-out",
                str(tmp_path / "rules"),
                "--alertmanager-out",
                str(am),
            ]
        )
        == 0
    )
    rules = sorted((tmp_path / "rules").glob("*.yml"))
    assert [p.name for p in rules] == sorted(p.name for p in RULES)
    _run(_need("promtool"), "check", "rules", *rules)
    if shutil.which("amtool"):
        _run("amtool", "check-config", am)


def test_fast_profile_is_fast() -> None:
    fast = gen.load_settings("fast")
    text = "\n".join(gen.render_rules(fast, "fast").values())
    assert "offset 1w" not in text and "offset 2m" in text
    for key, value in fast.items():
        if key.endswith("_for"):
            assert gen.duration_seconds(value) <= 60, (key, value)


def test_overrides_and_validation() -> None:
    s = gen.load_settings("production", ["drop_week_fraction=0.4", "drop_week_floor=80"])
    text = gen.render_rules(s, "production")["engagement-alerts.yml"]
    assert ") < 0.4\n" in text and ">= 80\n" in text
    with pytest.raises(ValueError, match="unknown"):
        gen.load_settings("nope")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        gen.load_settings("production", ["no_such_key=1"])
    with pytest.raises(ValueError, match="between 0 and 1"):
        gen.load_settings("production", ["drop_sudden_fraction=1.5"])
    with pytest.raises(ValueError, match="Prometheus duration"):
        gen.load_settings("production", ["drop_week_for=thirty"])
    # the pipeline-down alert must be able to inhibit a drop alert: fire first
    with pytest.raises(ValueError, match="inhibit"):
        gen.load_settings("production", ["watermark_stale_after=1h"])
