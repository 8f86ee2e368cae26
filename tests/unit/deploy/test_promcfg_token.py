"""The stack's Prometheus config sends the workers' bearer token when EM_HTTP_TOKEN is set,
from a file, so the token is never in the config itself."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "deploy" / "local"))

import emstack.promcfg as promcfg  # noqa: E402
from emstack.config import Config  # noqa: E402

TOKEN = "T0ken-S3cret"


def test_no_token_no_authorization(tmp_path: Path) -> None:
    assert "authorization" not in promcfg.render(Config.from_env({"EM_STATE_DIR": str(tmp_path)}))


def test_token_rendered_as_a_credentials_file(tmp_path: Path) -> None:
    cfg = Config.from_env({"EM_STATE_DIR": str(tmp_path), "EM_HTTP_TOKEN": TOKEN})
    path = promcfg.write(cfg)
    text = path.read_text()
    token_file = tmp_path / "prometheus" / "http-token"
    assert "    authorization:  # EM_HTTP_TOKEN is set\n      type: Bearer\n" in text
    assert f'      credentials_file: "{token_file}"\n' in text
    assert TOKEN not in text and TOKEN not in repr(cfg)
    assert token_file.read_text() == TOKEN
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: run `deploy/local/stack install`")
    check = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_token_file_is_used_as_it_is(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN)
    cfg = Config.from_env({"EM_STATE_DIR": str(tmp_path), "EM_HTTP_TOKEN_FILE": str(secret)})
    assert f'credentials_file: "{secret}"' in promcfg.render(cfg)
