"""deploy/docker-compose.yml: valid for docker-compose, and consistent with the files it
mounts (the repository's Prometheus, Alertmanager and Grafana configuration).

No Docker engine is needed: ``docker-compose config`` only parses and resolves. The
local stack script installs docker-compose (``deploy/local/stack install``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from grafana.dashboards.common import DATASOURCE_UID

REPO = Path(__file__).resolve().parents[3]
COMPOSE_FILE = REPO / "deploy" / "docker-compose.yml"
#: Services that share one network namespace so that prometheus.yml's loopback
#: addresses (worker 127.0.0.1:6066, Alertmanager 127.0.0.1:9093) hold in compose.
NETNS_HOLDER = "monitor"
NETNS_MEMBERS = ("worker", "prometheus", "alertmanager", "alerts-webhook")

_YAML_TO_JSON = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"


def docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail("docker-compose is missing: run `deploy/local/stack install` (or apt-get)")
    return path


#: The compose file requires it (no default admin password); a value for `config`.
GRAFANA_PASSWORD = "compose-test-Pw"


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    env.setdefault("GRAFANA_ADMIN_PASSWORD", GRAFANA_PASSWORD)
    return subprocess.run(
        [docker_compose(), "-f", str(COMPOSE_FILE), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def yaml_load(text: str) -> Any:
    """Parse YAML with PyYAML from this interpreter, else docker-compose's own."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        return yaml.safe_load(text)
    interpreter = sys.executable
    first = Path(docker_compose()).read_bytes()[:200].split(b"\n", 1)[0]
    if first.startswith(b"#!"):
        interpreter = first[2:].decode().strip().split()[0]
    done = subprocess.run(
        [interpreter, "-c", _YAML_TO_JSON],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"no YAML parser available (PyYAML): {done.stderr.strip()}")
    return json.loads(done.stdout)


@cache
def resolved() -> dict[str, Any]:
    """The compose file as docker-compose resolves it (defaults filled, paths absolute)."""
    done = compose("config")
    assert done.returncode == 0, done.stderr
    config = yaml_load(done.stdout)
    assert isinstance(config, dict)
    return config


def services() -> dict[str, Any]:
    result = resolved()["services"]
    assert isinstance(result, dict)
    return result


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of the service's bind mounts."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((Path(volume["source"]), volume["target"]))
            continue
        source, target = volume.split(":")[:2]
        if source.startswith(("/", ".")):
            mounts.append((Path(source), target))
    return mounts


def mount_of(service: str, host_path: Path) -> str:
    for source, target in bind_mounts(services()[service]):
        if source.resolve() == host_path.resolve():
            return target
    raise AssertionError(f"{service} doesn't mount {host_path.relative_to(REPO)}")


def flag(service: str, name: str) -> str:
    for arg in services()[service].get("command") or []:
        if arg.startswith(f"--{name}="):
            return str(arg.split("=", 1)[1])
    raise AssertionError(f"{service} has no --{name}")


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_docker_compose_config_validates() -> None:
    done = compose("config", "-q")
    assert done.returncode == 0, done.stderr
    assert "ERROR" not in done.stderr


def test_expected_services() -> None:
    assert set(services()) == {
        "kafka",
        "redis",
        NETNS_HOLDER,
        "worker",
        "simulator",
        "prometheus",
        "alertmanager",
        "alerts-webhook",
        "grafana",
    }


def test_every_bind_mount_exists_in_the_repository() -> None:
    mounts = [(name, src) for name, svc in services().items() for src, _ in bind_mounts(svc)]
    assert len(mounts) >= 5
    for name, source in mounts:
        assert source.exists(), f"{name} mounts {source}, which is missing"
        assert source.resolve().is_relative_to(REPO), f"{name} mounts {source}, outside the repo"


def test_mounted_files() -> None:
    expected = {
        "prometheus": [REPO / "deploy/prometheus/prometheus.yml", REPO / "deploy/prometheus/rules"],
        "alertmanager": [REPO / "deploy/alertmanager/alertmanager.yml"],
        "grafana": [REPO / "grafana/provisioning", REPO / "grafana/dashboards-json"],
    }
    for service, paths in expected.items():
        for path in paths:
            mount_of(service, path)
    assert list((REPO / "deploy/prometheus/rules").glob("*.yml")), "no rule files to mount"
    assert list((REPO / "grafana/dashboards-json").glob("*.json")), "no dashboards to mount"


def test_project_image_builds_from_the_root_dockerfile() -> None:
    built = [svc for svc in services().values() if "build" in svc]
    assert built
    for service in built:
        context = Path(service["build"]["context"])
        assert context.resolve() == REPO
        assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file()
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert "pip install -c constraints.txt ." in dockerfile
    for line in re.findall(r"^COPY (.+)$", dockerfile, re.M):
        for source in line.split()[:-1]:
            if not re.search(r"[\[*?]", source):
                assert (REPO / source).exists(), f"Dockerfile copies missing {source}"
    dockerignore = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    for needed in ("pyproject.toml", "streams/", "agents/", "commands/"):
        assert f"!{needed}" in dockerignore


def test_worker_and_simulator() -> None:
    worker, simulator = services()["worker"], services()["simulator"]
    assert worker["command"] == ["worker"]
    assert simulator["command"] == ["simulate", "--rate", "200"]
    env = worker["environment"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert env["EM_WEB_HOST"] == "0.0.0.0"
    assert simulator["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert worker["image"] == simulator["image"] == services()[NETNS_HOLDER]["image"]


def test_kafka_is_one_kraft_node() -> None:
    kafka = services()["kafka"]
    # the same release the local stack runs (default of ${KAFKA_VERSION})
    config = (Path(__file__).resolve().parents[3] / "deploy/local/emstack/config.py").read_text()
    pinned = re.search(r'^KAFKA_VERSION = "([^"]+)"', config, re.M)
    assert pinned is not None
    assert kafka["image"] == f"apache/kafka:{pinned.group(1)}"
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert str(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == "1"


def test_prometheus_config_holds_inside_the_shared_namespace() -> None:
    """prometheus.yml is mounted as it is: its loopback targets must be the worker's
    and Alertmanager's ports in the namespace they share with Prometheus."""
    for member in NETNS_MEMBERS:
        assert services()[member].get("network_mode") == f"service:{NETNS_HOLDER}", member
    holder = services()[NETNS_HOLDER]
    aliases = holder["networks"]["default"]["aliases"]
    assert {"prometheus", "alertmanager", "worker"} <= set(aliases)

    config_path = REPO / "deploy/prometheus/prometheus.yml"
    assert flag("prometheus", "config.file") == mount_of("prometheus", config_path)
    config = yaml_load(config_path.read_text(encoding="utf-8"))

    worker_port = int(services()["worker"]["environment"].get("EM_WEB_PORT", 6066))
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "engagement-monitor"]
    targets = [t for sc in job.get("static_configs", []) for t in sc["targets"]]
    assert f"127.0.0.1:{worker_port}" in targets

    alertmanager_port = port_of(flag("alertmanager", "web.listen-address"))
    am_targets = [
        t
        for am in config["alerting"]["alertmanagers"]
        for sc in am.get("static_configs", [])
        for t in sc["targets"]
    ]
    assert f"127.0.0.1:{alertmanager_port}" in am_targets

    # Alertmanager's receivers post to the webhook in the same namespace.
    receivers = (REPO / "deploy/alertmanager/alertmanager.yml").read_text(encoding="utf-8")
    webhook = services()["alerts-webhook"]["command"]
    host, port = webhook[webhook.index("--host") + 1], webhook[webhook.index("--port") + 1]
    urls = set(re.findall(r"url:\s*[\"']?(https?://[^\"'\s]+)", receivers))
    local = {u for u in urls if urlparse(u).hostname in ("127.0.0.1", "localhost")}
    assert local == {f"http://{host}:{port}/alerts"}, urls

    # rule_files are relative to the config file: they must land in the mounted rules.
    config_dir = Path(mount_of("prometheus", config_path)).parent
    rules_target = Path(mount_of("prometheus", REPO / "deploy/prometheus/rules"))
    for pattern in config["rule_files"]:
        assert (config_dir / pattern).parent == rules_target, pattern

    ports = " ".join(str(p) for p in holder.get("ports", []))
    for port in (worker_port, alertmanager_port, port_of(flag("prometheus", "web.listen-address"))):
        assert f"127.0.0.1:{port}:{port}" in ports


def test_grafana_gets_datasource_and_dashboards() -> None:
    grafana = services()["grafana"]
    assert mount_of("grafana", REPO / "grafana/provisioning") == "/etc/grafana/provisioning"
    dashboards_target = mount_of("grafana", REPO / "grafana/dashboards-json")

    provider = (REPO / "grafana/provisioning/dashboards/dashboards.yml").read_text("utf-8")
    [path] = re.findall(r"^\s+path:\s*(\S+)\s*$", provider, re.M)
    assert path == dashboards_target

    datasource = yaml_load((REPO / "grafana/provisioning/datasources/prometheus.yml").read_text())
    [prometheus] = datasource["datasources"]
    assert prometheus["uid"] == DATASOURCE_UID
    url = urlparse(prometheus["url"])
    aliases = services()[NETNS_HOLDER]["networks"]["default"]["aliases"]
    assert url.hostname in aliases
    assert url.port == port_of(flag("prometheus", "web.listen-address"))

    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent == Path(dashboards_target)
    assert (REPO / "grafana/dashboards-json" / Path(home).name).is_file()


def test_grafana_image_matches_the_sdk_version() -> None:
    """The dashboards are generated with the SDK build for one Grafana minor version."""
    sdk = version("grafana-foundation-sdk")  # "<epoch>!<grafana version>"
    grafana_version = sdk.split("!", 1)[1]
    major_minor = ".".join(grafana_version.split(".")[:2])
    image = services()["grafana"]["image"]
    assert image.startswith(f"grafana/grafana:{major_minor}."), (image, sdk)


def test_grafana_admin_password_is_required_and_never_defaulted() -> None:
    env = services()["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == os.environ.get(
        "GRAFANA_ADMIN_PASSWORD", GRAFANA_PASSWORD
    )
    unset = {k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    done = subprocess.run(
        [docker_compose(), "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO,
        env={k: v for k, v in unset.items() if not k.startswith("COMPOSE_")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in done.stderr
