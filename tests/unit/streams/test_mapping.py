"""Input mapping: another JSON shape onto the event contract, same validation after."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streams.events import Event, InvalidEvent, Limits, parse_event
from streams.mapping import MappingError, from_file, load_mapping

NOW = 1_800_000_000_000

ACTOR = """
[fields]
ts = "created_at"
user_id = "actor.id"
community = "page"
type = "action"
event_id = "id"

[constants]
platform = "facebook"

[types]
reaction = "like"
reshare = "share"

[timestamp]
format = "%Y-%m-%d %H:%M:%S"
"""


def parse(mapping_text: str, message: dict | list | str) -> Event:
    return parse_event(orjson.dumps(message), NOW, Limits(), load_mapping(mapping_text))


def test_nested_paths_constants_type_map_and_timestamp_pattern() -> None:
    event = parse(
        ACTOR,
        {
            "id": 991,
            "created_at": "2027-01-15 08:00:00",
            "actor": {"id": 42, "name": "x"},
            "page": "acme",
            "action": "reaction",
        },
    )
    # 2027-01-15T08:00:00Z, read as UTC (the pattern has no offset)
    assert event == Event("991", 1_800_000_000_000, "facebook", "acme", "42", "like")


def test_unlisted_types_pass_through_and_validation_decides() -> None:
    base = {"id": "e", "created_at": "2027-01-15 08:00:00", "actor": {"id": "u"}, "page": "p"}
    assert parse(ACTOR, {**base, "action": "comment"}).type == "comment"
    with pytest.raises(InvalidEvent) as info:
        parse(ACTOR, {**base, "action": "poke"})
    assert info.value.reason == "bad_type"


@pytest.mark.parametrize(
    ("message", "reason", "detail"),
    [
        (
            {"created_at": "2027-01-15 08:00:00", "page": "p", "action": "reaction", "id": "e"},
            "missing_field",
            "missing user_id (path actor.id)",
        ),
        (
            {
                "created_at": "2027-01-15 08:00:00",
                "actor": "u",
                "page": "p",
                "action": "x",
                "id": "e",
            },
            "missing_field",
            "path actor.id",
        ),
        (
            {
                "created_at": "15/01/2027",
                "actor": {"id": "u"},
                "page": "p",
                "action": "x",
                "id": "e",
            },
            "bad_timestamp",
            "does not match",
        ),
        (
            {
                "created_at": "2099-01-01 00:00:00",
                "actor": {"id": "u"},
                "page": "p",
                "action": "reaction",
                "id": "e",
            },
            "future_timestamp",
            "in the future",
        ),
        (
            {
                "created_at": "2027-01-15 08:00:00",
                "actor": {"id": "u\x00"},
                "page": "p",
                "action": "reaction",
                "id": "e",
            },
            "bad_field",
            "user_id",
        ),
        ([1, 2], "not_object", "JSON object"),
    ],
)
def test_refusals_keep_the_contract_reasons(message: object, reason: str, detail: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse(ACTOR, message)  # type: ignore[arg-type]
    assert info.value.reason == reason
    assert detail in info.value.detail


def test_not_json_and_too_large_before_the_mapping() -> None:
    mapping = load_mapping(ACTOR)
    with pytest.raises(InvalidEvent, match="not_json"):
        parse_event(b"{nope", NOW, Limits(), mapping)
    with pytest.raises(InvalidEvent, match="too_large"):
        parse_event(b" " * 5000, NOW, Limits(), mapping)


EPOCH = """
[fields]
ts = "t"
user_id = "who"
community = "meta.channel"
type = "kind"
platform = "meta.src"
[constants]
event_id = "-"
[timestamp]
format = "{fmt}"
"""


@pytest.mark.parametrize(
    ("fmt", "value", "want"),
    [
        ("epoch_s", 1_799_999_000, 1_799_999_000_000),
        ("epoch_s", "1799999000.5", 1_799_999_000_500),
        ("epoch_ms", 1_799_999_000_123, 1_799_999_000_123),
        ("epoch_ms", "1799999000123", 1_799_999_000_123),
        ("rfc3339", "2027-01-15T08:00:00Z", 1_800_000_000_000),
        ("auto", 1_799_999_000, 1_799_999_000_000),
        ("%d/%m/%Y %H:%M %z", "15/01/2027 09:00 +0100", 1_800_000_000_000),
    ],
)
def test_timestamp_formats(fmt: str, value: object, want: int) -> None:
    message = {"t": value, "who": "u", "kind": "post", "meta": {"channel": "c", "src": "tw"}}
    assert parse(EPOCH.format(fmt=fmt), message).ts_ms == want


@pytest.mark.parametrize(
    ("fmt", "value"), [("epoch_s", "soon"), ("epoch_ms", True), ("rfc3339", 17), ("epoch_s", -5)]
)
def test_bad_timestamps_are_bad_timestamp(fmt: str, value: object) -> None:
    message = {"t": value, "who": "u", "kind": "post", "meta": {"channel": "c", "src": "tw"}}
    with pytest.raises(InvalidEvent) as info:
        parse(EPOCH.format(fmt=fmt), message)
    assert info.value.reason == "bad_timestamp"


def test_list_index_in_a_path() -> None:
    text = EPOCH.format(fmt="auto").replace('community = "meta.channel"', 'community = "tags.1"')
    message = {
        "t": 1_799_999_000,
        "who": "u",
        "kind": "post",
        "tags": ["a", "b"],
        "meta": {"src": "x"},
    }
    assert parse(text, message).community == "b"
    with pytest.raises(InvalidEvent, match="missing_field"):
        parse(text, {**message, "tags": ["a"]})


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[fields\n", "not TOML"),
        ('[fields]\nts = "a"\n[extra]\n', "unknown sections"),
        ('[fields]\nnope = "a"\n', "'nope' is not a contract field"),
        ('[fields]\nts = "t"\n', "no path or constant for event_id, platform"),
        ('[fields]\nts = "a..b"\n', "empty step"),
        ("[fields]\nts = 3\n", "text values"),
        (ACTOR.replace('reshare = "share"', 'reshare = "boost"'), "['boost'] are not contract"),
        (ACTOR.replace("%Y-%m-%d %H:%M:%S", "iso"), "timestamp format 'iso'"),
        (ACTOR + "[constants]\n", "not TOML"),  # a second [constants] table
        (
            ACTOR.replace('platform = "facebook"', 'platform = "f"\nts = "x"').replace(
                'ts = "created_at"\n', ""
            ),
            "ts cannot be a constant",
        ),
        (ACTOR.replace('platform = "facebook"', 'platform = "f"\npage = "x"'), "not a contract"),
        (
            ACTOR.replace(
                '[constants]\nplatform = "facebook"', '[constants]\nuser_id = "x"\nplatform = "f"'
            ),
            "in both [fields] and [constants]",
        ),
    ],
)
def test_a_wrong_file_is_refused_at_start_with_the_reason(text: str, error: str) -> None:
    with pytest.raises(MappingError) as info:
        load_mapping(text)
    assert error in str(info.value)


def test_from_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(ACTOR)
    assert from_file(str(path)).constants == {"platform": "facebook"}
    path.write_text("[fields]\n")
    with pytest.raises(MappingError, match=f"{path}: no path or constant"):
        from_file(str(path))
    with pytest.raises(MappingError, match="cannot read"):
        from_file(str(tmp_path / "missing.toml"))


def test_settings_check_reads_the_file_once(tmp_path: Path) -> None:
    from streams.settings import Settings

    path = tmp_path / "m.toml"
    path.write_text(ACTOR)
    settings = Settings(input_mapping=str(path))
    settings.check()
    assert settings.mapping is not None and settings.mapping.types["reaction"] == "like"
    assert Settings().mapping is None
    with pytest.raises(ValueError, match="EM_INPUT_MAPPING"):
        Settings(input_mapping=str(tmp_path / "nope.toml")).check()
