"""The worker's start-up block: every setting, secrets never shown."""

from __future__ import annotations

from streams.effective import effective_settings, metrics_url
from streams.security import Security
from streams.settings import Settings


def test_every_setting_and_no_secret() -> None:
    settings = Settings(app_id="shop", redis_url="redis://:R3disPw@127.0.0.1:6379/0", web_port=6099)
    security = Security(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="svc",
        kafka_sasl_password="SaslPw!",
        http_token="Tok3n",
        user_id_key="K3y",
    )
    lines = effective_settings(settings, security)
    text = "\n".join(lines)
    for secret in ("R3disPw", "SaslPw!", "Tok3n", "K3y"):
        assert secret not in text
    assert "EM_APP_ID=shop" in lines
    assert "REDIS_URL=redis://:***@127.0.0.1:6379/0" in lines
    assert "EM_WEB_PORT=6099" in lines
    assert "EM_KAFKA_SECURITY_PROTOCOL=SASL_SSL" in lines
    assert "EM_KAFKA_SASL_USERNAME=svc" in lines
    assert "EM_KAFKA_SASL_PASSWORD=*** (set)" in lines and "EM_HTTP_TOKEN=*** (set)" in lines
    assert sum(line.startswith("EM_") or "=" in line for line in lines) == len(lines)
    assert len([line for line in lines if line.split("=")[0] in {"EM_APP_ID", "EM_DATA_DIR"}]) == 2
    assert metrics_url(settings) == "http://127.0.0.1:6099/metrics"


def test_unset_security_settings_are_left_out() -> None:
    lines = effective_settings(Settings(), Security())
    assert not any(line.startswith(("EM_KAFKA_SASL", "EM_HTTP_TOKEN")) for line in lines)
