"""streams.json_bytes gives orjson's bytes for every input, fast path or not."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from streams.json_bytes import json_record, json_string, kept
from streams.state import SEP

# keys as the state builds them (fields joined by SEP), and any text at all
fields = st.text(min_size=1, max_size=12)
keys = st.builds(lambda *parts: SEP.join(parts), fields, fields, fields)
times = st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1))


@given(st.one_of(keys, st.text()))
def test_json_string_is_orjsons(text: str) -> None:
    assert json_string(text) == orjson.dumps(text)


def test_json_string_takes_the_fast_path_on_plain_keys() -> None:
    key = SEP.join(["instagram", "Café ☕ acme", "user-42"])
    assert (
        json_string(key)
        == orjson.dumps(key)
        == b'"instagram\\u001fCaf\xc3\xa9 \xe2\x98\x95 acme\\u001fuser-42"'
    )
    for awkward in ['say "hi"', "back\\slash", "tab\there", "nbsp\u00a0", "line\u2028sep"]:
        assert json_string(awkward) == orjson.dumps(awkward)


@given(st.lists(st.one_of(times, st.booleans()), max_size=6))
def test_json_record_is_orjsons(value: list) -> None:
    assert json_record(value) == orjson.dumps(value)


@given(times, times, times, st.integers(min_value=0, max_value=1))
def test_json_record_of_wire_values(
    first: int | None, last: int | None, follow: int | None, following: int
) -> None:
    value = [first, last, follow, following]
    assert json_record(value) == orjson.dumps(value)


def test_kept_is_the_same_bytes() -> None:
    raw = orjson.dumps({"event_id": "e1", "ts": "2026-12-07T09:00:00.000Z"})
    assert kept(raw) == raw and type(kept(raw)) is bytes
