"""Install the stack's Debian packages when their commands are missing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from emstack.config import StackError
from emstack.log import say

# command -> Debian package that provides it
COMMANDS = {
    "java": "openjdk-17-jre-headless",
    "mvn": "maven",
    "redis-server": "redis-server",
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "docker-compose": "docker-compose",
}


def missing_packages(with_maven: bool = True) -> list[str]:
    packages = {
        pkg
        for cmd, pkg in COMMANDS.items()
        if shutil.which(cmd) is None and (with_maven or cmd != "mvn")
    }
    return sorted(packages)


def ensure_installed(with_maven: bool = True) -> None:
    """apt-get install what is missing (as root); otherwise say what to install and fail."""
    packages = missing_packages(with_maven)
    if packages:
        if os.geteuid() != 0:
            raise StackError(
                "missing packages; install them with:\n"
                f"  sudo apt-get install -y {' '.join(packages)}"
            )
        _apt_install(packages)
    _check_java()


def _apt_install(packages: list[str]) -> None:
    say(f"installing {' '.join(packages)} with apt-get…")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if subprocess.run(cmd, env=env).returncode == 0:
        return
    say("apt-get install failed; running apt-get update and trying again…")
    subprocess.run(["apt-get", "update"], env=env, check=False)
    if subprocess.run(cmd, env=env).returncode != 0:
        raise StackError(f"apt-get install -y {' '.join(packages)} failed")


def _check_java() -> None:
    result = subprocess.run(["java", "-version"], capture_output=True, text=True)
    match = re.search(r'version "(\d+)', result.stderr + result.stdout)
    if match is None or int(match[1]) < 17:
        raise StackError(
            "Kafka 4 needs Java 17 or newer (Debian: apt-get install -y openjdk-17-jre-headless)"
        )
