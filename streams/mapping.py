"""Input mapping: any JSON object shape in, the event contract's shape out.

A topic the monitor does not own rarely carries ``{"event_id", "ts", "platform",
"community", "user_id", "type"}``. A small TOML file (``EM_INPUT_MAPPING``) says where
each contract field is in the message (a dotted path), which fields are constants
for the whole topic, how the source's action names map to the contract's types, and
how its timestamps are written. The mapped object then goes through the *same*
validation as a native event (:func:`streams.events.validate`), so every refusal has a
contract reason and lands in the DLQ with the original bytes.

Pure apart from :func:`from_file`: text in, an :class:`InputMapping` out; a decoded
object in, a contract object out.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streams.events import EVENT_TYPES, REQUIRED_FIELDS, InvalidEvent

#: Timestamp formats besides strptime patterns (a pattern contains ``%``).
TIMESTAMP_FORMATS = ("auto", "rfc3339", "epoch_s", "epoch_ms")
_TEXT_FIELDS = ("event_id", "platform", "community", "user_id")
_SECTIONS = {"fields", "constants", "types", "timestamp"}


class MappingError(ValueError):
    """The mapping file itself is wrong (raised at start, never per message)."""


@dataclass(frozen=True)
class InputMapping:
    """Where each contract field comes from; see :func:`load_mapping` for the file."""

    #: contract field -> path in the message, as a tuple of keys / list indexes
    paths: dict[str, tuple[str | int, ...]] = field(default_factory=dict)
    #: contract field -> the same value for every message
    constants: dict[str, str] = field(default_factory=dict)
    #: source value of ``type`` -> contract type (values not listed pass unchanged)
    types: dict[str, str] = field(default_factory=dict)
    #: "auto" (the contract's rules), "rfc3339", "epoch_s", "epoch_ms" or a strptime pattern
    timestamp_format: str = "auto"

    def __call__(self, obj: Any) -> Any:
        """The contract object for one decoded message; non-objects pass unchanged
        (validation refuses them as ``not_object``)."""
        if not isinstance(obj, dict):
            return obj
        out: dict[str, Any] = dict(self.constants)
        for name, path in self.paths.items():
            value = _lookup(obj, path)
            if value is None:
                raise InvalidEvent("missing_field", f"missing {name} (path {_dotted(path)})")
            out[name] = value
        for name in _TEXT_FIELDS:
            if type(out.get(name)) is int:  # numeric ids are common; the contract wants text
                out[name] = str(out[name])
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = self.types.get(kind, kind)
        if "ts" in self.paths and self.timestamp_format != "auto":
            out["ts"] = convert_timestamp(out["ts"], self.timestamp_format)
        return out


def _lookup(obj: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        if isinstance(step, int) and isinstance(obj, list):
            obj = obj[step] if -len(obj) <= step < len(obj) else None
        elif isinstance(obj, dict):
            obj = obj.get(str(step))
        else:
            return None
        if obj is None:
            return None
    return obj


def _dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(step) for step in path)


def parse_path(text: str) -> tuple[str | int, ...]:
    """``"actor.id"`` -> ("actor", "id"); a numeric step indexes a list (``tags.0``)."""
    if not text or any(not part for part in text.split(".")):
        raise MappingError(f"path {text!r}: empty step (use a.b.c)")
    return tuple(int(p) if p.lstrip("-").isdigit() else p for p in text.split("."))


def convert_timestamp(value: Any, fmt: str) -> Any:
    """The source timestamp as epoch milliseconds (an int) or, for "rfc3339", unchanged
    text for the contract's own parser. Unreadable values raise ``bad_timestamp``."""
    if fmt == "rfc3339":
        if not isinstance(value, str):
            raise InvalidEvent("bad_timestamp", f"ts must be RFC 3339 text, not {value!r}"[:120])
        return value
    if fmt in ("epoch_s", "epoch_ms"):
        number = _number(value)
        ms = number * 1000 if fmt == "epoch_s" else number
        if ms < 0:
            raise InvalidEvent("bad_timestamp", f"ts is before 1970: {value!r}")
        return int(ms)
    if not isinstance(value, str):
        raise InvalidEvent("bad_timestamp", f"ts must be text in {fmt!r}, not {value!r}"[:120])
    try:
        moment = datetime.strptime(value, fmt)
    except ValueError:
        raise InvalidEvent("bad_timestamp", f"ts {value[:64]!r} does not match {fmt!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    ms = int(moment.timestamp() * 1000)
    if ms < 0:
        raise InvalidEvent("bad_timestamp", f"ts is before 1970: {value[:64]!r}")
    return ms


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidEvent("bad_timestamp", "ts is a boolean")
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value) if "." in value else int(value)
        except ValueError:
            pass
    raise InvalidEvent("bad_timestamp", f"ts is not an epoch number: {str(value)[:64]!r}")


def load_mapping(text: str) -> InputMapping:
    """Parse and check a mapping file; :class:`MappingError` names what is wrong.

    ::

        [fields]                 # contract field = dotted path in the message
        ts = "created_at"
        user_id = "actor.id"
        community = "page"
        type = "action"
        [constants]              # contract field = the same value for every message
        platform = "facebook"
        event_id = "-"           # the contract needs one; counting never uses it
        [types]                  # source type = contract type
        reaction = "like"
        [timestamp]
        format = "%Y-%m-%d %H:%M:%S"   # or auto, rfc3339, epoch_s, epoch_ms
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"not TOML: {exc}") from None
    unknown = set(doc) - _SECTIONS
    if unknown:
        raise MappingError(f"unknown sections {sorted(unknown)}; known: {sorted(_SECTIONS)}")
    fields_, constants = _table(doc, "fields"), _table(doc, "constants")
    paths = {name: parse_path(path) for name, path in fields_.items()}
    _check_fields(fields_, constants)
    types = _table(doc, "types")
    wrong = sorted({*types.values(), constants.get("type", "post")} - EVENT_TYPES)
    if wrong:
        raise MappingError(
            f"types {wrong} are not contract types ({', '.join(sorted(EVENT_TYPES))})"
        )
    fmt = str(_table(doc, "timestamp").get("format", "auto"))
    if fmt not in TIMESTAMP_FORMATS and "%" not in fmt:
        raise MappingError(f"timestamp format {fmt!r}: one of {TIMESTAMP_FORMATS} or a %-pattern")
    return InputMapping(
        paths=paths,
        constants=constants,
        types=types,
        timestamp_format=fmt,
    )


def _check_fields(fields_: dict[str, str], constants: dict[str, str]) -> None:
    """Every contract field exactly once, as a path or a constant (ts only as a path)."""
    for name in (*fields_, *constants):
        if name not in REQUIRED_FIELDS:
            raise MappingError(f"{name!r} is not a contract field ({', '.join(REQUIRED_FIELDS)})")
    both = set(fields_) & set(constants)
    if both:
        raise MappingError(f"{sorted(both)} in both [fields] and [constants]")
    missing = [name for name in REQUIRED_FIELDS if name not in fields_ and name not in constants]
    if missing:
        raise MappingError(f"no path or constant for {', '.join(missing)}")
    if "ts" in constants:
        raise MappingError("ts cannot be a constant")


def _table(doc: dict[str, Any], name: str) -> dict[str, str]:
    table = doc.get(name, {})
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise MappingError(f'[{name}] must hold text values (key = "value")')
    return dict(table)


def from_file(path: str) -> InputMapping:
    """The mapping in a TOML file; every problem is a :class:`MappingError` naming it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"{path}: cannot read: {exc}") from None
    try:
        return load_mapping(text)
    except MappingError as exc:
        raise MappingError(f"{path}: {exc}") from None
