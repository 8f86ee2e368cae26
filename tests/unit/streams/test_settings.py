"""Settings: environment and flags in, typed values out, errors that name flag and variable."""

from __future__ import annotations

import argparse
import dataclasses
from functools import cached_property

import pytest

from streams import settings as settings_mod
from streams.durations import DEFAULT_WINDOWS
from streams.events import DEFAULT_ACTIVE_TYPES
from streams.settings import Settings, from_args, from_env


def parse(argv: list[str], environ: dict[str, str] | None = None) -> Settings:
    """Settings as a command builds them: flags over the environment over defaults."""
    mp = pytest.MonkeyPatch()
    try:
        for key in [f.metadata["env"] for f in dataclasses.fields(Settings)]:
            mp.delenv(key, raising=False)
        for key, value in (environ or {}).items():
            mp.setenv(key, value)
        parser = argparse.ArgumentParser()
        settings_mod.add_arguments(parser)
        return from_args(parser.parse_args(argv))
    finally:
        mp.undo()


def test_defaults_are_typed() -> None:
    s = Settings()
    assert s.session_timeout_ms == 10_000
    assert s.rebalance_timeout_ms == 30_000
    assert s.heartbeat_interval_ms == 3_000
    assert s.expiry_interval_ms == 600_000
    assert s.snapshot_interval_ms == 1_000
    assert s.future_tolerance_ms == 300_000
    assert s.windows == DEFAULT_WINDOWS
    assert s.window_ms == {
        "5m": 300_000,
        "1h": 3_600_000,
        "1d": 86_400_000,
        "7d": 604_800_000,
        "30d": 2_592_000_000,
    }
    assert s.active_type_set == DEFAULT_ACTIVE_TYPES
    assert s.limits.future_tolerance_ms == 300_000
    assert s.limits.max_message_bytes == 4096
    assert s.limits.max_event_age_ms == 400 * 86_400_000


def test_every_duration_field_has_a_millisecond_view() -> None:
    """The pattern new duration settings follow: kind=duration and a ``<name>_ms`` view."""
    durations = [
        f.name for f in dataclasses.fields(Settings) if f.metadata.get("kind") == "duration"
    ]
    assert len(durations) == 8
    for name in durations:
        assert isinstance(vars(Settings).get(f"{name}_ms"), cached_property), name
        s = Settings(**{name: "1500ms"})  # type: ignore[arg-type]
        assert getattr(s, f"{name}_ms") == 1500, name


def test_every_field_has_env_and_help() -> None:
    envs = [f.metadata["env"] for f in dataclasses.fields(Settings)]
    assert len(envs) == len(set(envs))
    for f in dataclasses.fields(Settings):
        assert f.metadata["help"], f.name
        assert f.metadata.get("kind") in (None, *settings_mod.KIND_CHECKS), f.name


def test_environment_then_flags() -> None:
    env = {"EM_SESSION_TIMEOUT": "6s", "EM_PARTITIONS": "8", "EM_WINDOWS": "1h,5m"}
    s = parse([], env)
    assert (s.session_timeout_ms, s.partitions, s.window_ms) == (
        6_000,
        8,
        {"5m": 300_000, "1h": 3_600_000},
    )
    s = parse(["--session-timeout", "2m", "--partitions", "2"], env)
    assert (s.session_timeout_ms, s.partitions) == (120_000, 2)
    assert from_env({"EM_PARTITIONS": ""}).partitions == 4  # empty means unset


def test_settings_are_frozen() -> None:
    """Typed views are cached: a value that could change under them would go stale."""
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.session_timeout = "1s"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ("EM_SESSION_TIMEOUT=30", "--session-timeout (EM_SESSION_TIMEOUT): bad duration '30'"),
        ("EM_EXPIRY_INTERVAL=0s", "--expiry-interval (EM_EXPIRY_INTERVAL): bad duration '0s'"),
        ("EM_FUTURE_TOLERANCE=soon", "--future-tolerance (EM_FUTURE_TOLERANCE): bad duration"),
        ("EM_HEARTBEAT_INTERVAL=3 sec", "--heartbeat-interval (EM_HEARTBEAT_INTERVAL): bad"),
        ("EM_SNAPSHOT_INTERVAL=1x", "--snapshot-interval (EM_SNAPSHOT_INTERVAL): bad duration"),
        ("EM_REBALANCE_TIMEOUT=-1s", "--rebalance-timeout (EM_REBALANCE_TIMEOUT): bad duration"),
        ("EM_WINDOWS= , ", "--windows (EM_WINDOWS): no windows given"),
        ("EM_WINDOWS=5m,1y", "--windows (EM_WINDOWS): bad duration '1y'"),
        (
            "EM_ACTIVE_TYPES=like,poke",
            "--active-types (EM_ACTIVE_TYPES): unknown event types ['poke']",
        ),
        ("EM_STORE=redis://", "--store (EM_STORE): must be memory:// or rocksdb://"),
        ("EM_PARTITIONS=0", "--partitions (EM_PARTITIONS): must be at least 1, got 0"),
        ("EM_TOP_USERS=0", "--top-users (EM_TOP_USERS): must be at least 1, got 0"),
        ("EM_CLOCK=sundial", "--clock (EM_CLOCK): must be one of wall, event"),
        ("EM_READ_MODEL=maybe", "--read-model (EM_READ_MODEL): must be one of on, off"),
    ],
)
def test_check_names_flag_and_variable(env: str, message: str) -> None:
    key, value = env.split("=", 1)
    with pytest.raises(ValueError) as info:
        from_env({key: value}).check()
    assert str(info.value).startswith(message), str(info.value)


def test_bad_integer_in_the_environment() -> None:
    with pytest.raises(
        ValueError, match=r"^--partitions \(EM_PARTITIONS\): expected an integer, got 'four'$"
    ):
        from_env({"EM_PARTITIONS": "four"})


def test_a_bad_flag_is_refused_by_from_args() -> None:
    with pytest.raises(
        ValueError, match=r"^--session-timeout \(EM_SESSION_TIMEOUT\): bad duration"
    ):
        parse(["--session-timeout", "fast"])


def test_typed_view_names_the_setting_too() -> None:
    """A caller that skips check() still gets the flag and variable in the error."""
    with pytest.raises(ValueError, match=r"^--session-timeout \(EM_SESSION_TIMEOUT\)"):
        Settings(session_timeout="x").session_timeout_ms  # noqa: B018


def test_store_schemes_and_choices_accepted() -> None:
    for store in ("memory://", "rocksdb://"):
        Settings(store=store).check()
    Settings(clock="event", read_model="off").check()


def test_each_app_id_has_its_own_data_folder() -> None:
    """Two app ids with the same EM_DATA_DIR never share RocksDB files."""
    shop = Settings(datadir="/data/em", app_id="shop")
    blog = Settings(datadir="/data/em", app_id="blog")
    assert shop.app_datadir == "/data/em/shop"
    assert blog.app_datadir == "/data/em/blog"


@pytest.mark.parametrize("app_id", ["", ".", "..", "a/b"])
def test_app_id_must_be_a_folder_name(app_id: str) -> None:
    with pytest.raises(ValueError, match="EM_APP_ID"):
        Settings(app_id=app_id).check()
