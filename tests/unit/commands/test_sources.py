"""Replay sources without Kafka: time bounds, formats, column mappings, bad lines."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from commands.progress import Progress
from commands.replay import Pacer, column_format, parse_speed
from commands.sources import (
    SNAP_FORMAT,
    ColumnFormat,
    FileSource,
    PartitionSpan,
    TimeRange,
    TsFormatter,
    parse_columns,
    parse_time_bound,
    parse_type_map,
    spans_from_offsets,
)
from streams.events import Limits, format_ts, parse_event

#: the files replayed here are from 2012: any age
ANY_AGE = Limits(max_event_age_ms=None)

NOW = parse_time_bound("2026-11-25T17:00:00Z", 0)
T0 = 1_341_100_800  # 2012-07-01T00:00:00Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("NOW", NOW),
        ("-2h", NOW - 7_200_000),
        ("-30m", NOW - 1_800_000),
        ("+5m", NOW + 300_000),
        ("- 90s", NOW - 90_000),
        ("2012-07-01T00:00:00Z", T0 * 1000),
        ("2012-07-01T02:00:00+02:00", T0 * 1000),
        ("1341100800", T0 * 1000),
        ("1341100800000", T0 * 1000),
        ("1341100800.5", T0 * 1000 + 500),
    ],
)
def test_time_bounds(text: str, expected: int) -> None:
    assert parse_time_bound(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2h", "-2x", "2012-07-01", ""])
def test_bad_time_bounds(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time_bound(text, NOW)


def test_time_range_is_half_open_and_checked() -> None:
    r = TimeRange.parse("-1h", "now", NOW)
    assert r.contains(NOW - 3_600_000)
    assert r.contains(NOW - 1)
    assert not r.contains(NOW)
    assert not r.contains(NOW - 3_600_001)
    assert TimeRange().contains(0)
    with pytest.raises(ValueError, match="empty"):
        TimeRange.parse("now", "-1h", NOW)


def test_ts_formatter_matches_the_contract_formatter() -> None:
    fmt = TsFormatter()
    for ts in (0, 999, T0 * 1000 + 7, T0 * 1000 + 86_399_999, NOW + 123, NOW + 123, NOW + 1000):
        assert fmt(ts) == format_ts(ts)


def write(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


SNAP_LINES = [
    f"223789 213163 {T0 + 10} RE",
    f"376989 50329 {T0 + 20} RT",
    f"26375 168366 {T0 + 30} MT",
    f"1 2 {T0 + 40} XX",  # unknown kind
    "3 4 notatime RT",  # bad timestamp
    "5 6",  # missing columns
    "",  # blank: ignored
    f"7 8 {T0 + 50} RT",
]


@pytest.mark.parametrize("gz", [False, True])
def test_snap_file_maps_columns_and_counts_bad_lines(tmp_path: Path, gz: bool) -> None:
    path = write(tmp_path / ("higgs.txt.gz" if gz else "higgs.txt"), SNAP_LINES, gz)
    source = FileSource(path, "snap", limits=ANY_AGE)
    items = list(source)
    good = [item for item in items if item[3] is None]
    bad = [item for item in items if item[3] is not None]
    events = [parse_event(value, NOW, ANY_AGE) for value, *_ in good]
    assert [(e.user_id, e.community, e.type, e.platform) for e in events] == [
        ("223789", "213163", "reply", "twitter"),
        ("376989", "50329", "share", "twitter"),
        ("26375", "168366", "mention", "twitter"),
        ("7", "8", "share", "twitter"),
    ]
    assert [e.event_id for e in events] == ["snap-1", "snap-2", "snap-3", "snap-8"]
    assert [e.ts_ms for e in events] == [(T0 + s) * 1000 for s in (10, 20, 30, 50)]
    assert [ts for _, ts, _, _ in good] == [e.ts_ms for e in events]
    assert [(value, reason) for value, _, _, reason in bad] == [
        (f"1 2 {T0 + 40} XX".encode(), "bad_type"),
        (b"3 4 notatime RT", "bad_timestamp"),
        (b"5 6", "missing_field"),
    ]
    assert source.position == source.size


def test_line_numbers_follow_the_yielded_lines(tmp_path: Path) -> None:
    source = FileSource(write(tmp_path / "s.txt", SNAP_LINES), "snap", limits=ANY_AGE)
    numbers = [(source.line_no, item[3]) for item in source]
    assert numbers == [
        (1, None),
        (2, None),
        (3, None),
        (4, "bad_type"),
        (5, "bad_timestamp"),
        (6, "missing_field"),
        (8, None),
    ]


def test_time_range_filters_files(tmp_path: Path) -> None:
    path = write(tmp_path / "s.txt", SNAP_LINES)
    source = FileSource(
        path, "snap", time_range=TimeRange((T0 + 20) * 1000, (T0 + 50) * 1000), limits=ANY_AGE
    )
    good = [parse_event(v, NOW, ANY_AGE).event_id for v, _, _, reason in source if reason is None]
    assert good == ["snap-2", "snap-3"]
    assert source.skipped == 2


def test_shift_moves_the_value_ts_and_keeps_the_original_for_filtering(tmp_path: Path) -> None:
    path = write(tmp_path / "s.txt", SNAP_LINES[:1])
    [(value, ts_ms, _, _)] = list(FileSource(path, "snap", shift_ms=1000, limits=ANY_AGE))
    assert ts_ms == (T0 + 10) * 1000
    assert parse_event(value, NOW, ANY_AGE).ts_ms == ts_ms + 1000


def test_generic_csv_with_mapping_header_and_quoting(tmp_path: Path) -> None:
    lines = [
        "when,who,brand,what,net",
        "1341100810000,alice,acme,RT,instagram",
        '1341100820000,"b\\"ob",ac me,MT,twitter',
        "1341100830000,carol,acme,like,twitter",
        "1341100840000,dave,acme,poke,twitter",
    ]
    fmt = ColumnFormat(
        columns=parse_columns("ts=0,user_id=1,community=2,type=3,platform=4"),
        delimiter=",",
        type_map=parse_type_map("RT=share,MT=mention"),
        ts_unit="ms",
        header=True,
    )
    items = list(FileSource(write(tmp_path / "x.csv", lines), "csv", fmt, limits=ANY_AGE))
    events = [parse_event(v, NOW, ANY_AGE) for v, _, _, reason in items if reason is None]
    assert [(e.user_id, e.community, e.type, e.platform, e.event_id) for e in events] == [
        ("alice", "acme", "share", "instagram", "line-2"),
        ('"b\\"ob"', "ac me", "mention", "twitter", "line-3"),
        ("carol", "acme", "like", "twitter", "line-4"),
    ]
    assert [reason for *_, reason in items if reason is not None] == ["bad_type"]


def test_whitespace_csv_with_fixed_platform_and_auto_seconds(tmp_path: Path) -> None:
    fmt = ColumnFormat(
        columns=parse_columns("user_id=0,community=1,ts=2,type=3"),
        delimiter=None,
        platform="mastodon",
    )
    items = list(
        FileSource(write(tmp_path / "x.txt", [f"u c {T0} share"]), "csv", fmt, limits=ANY_AGE)
    )
    event = parse_event(items[0][0], NOW, ANY_AGE)
    assert (event.platform, event.ts_ms, event.type) == ("mastodon", T0 * 1000, "share")


def test_jsonl_lines_go_out_byte_for_byte_and_bad_lines_get_reasons(tmp_path: Path) -> None:
    good = '{"event_id":"e1","ts":"2026-11-25T16:00:00.000Z","platform":"x","community":"c","user_id":"u","type":"like"}'  # noqa: E501
    far = good.replace("e1", "e2").replace("2026-11-25T16", "2099-01-01T00")
    lines = [good, "{not json", '{"event_id":"e3"}', good.replace("like", "poke"), far]
    items = list(
        FileSource(write(tmp_path / "e.jsonl", lines), "jsonl", now_ms=NOW, limits=ANY_AGE)
    )
    assert items[0] == (good.encode(), NOW - 3_600_000, None, None)
    reasons = [None, "not_json", "missing_field", "bad_type", "future_timestamp"]
    assert [reason for *_, reason in items] == reasons
    assert items[1][0] == b"{not json"  # the original bytes, for the DLQ
    assert items[4][0] == far.encode()
    shifted = list(
        FileSource(
            write(tmp_path / "f.jsonl", [good]),
            "jsonl",
            shift_ms=60_000,
            now_ms=NOW,
            limits=ANY_AGE,
        )
    )
    assert orjson.loads(shifted[0][0])["ts"] == "2026-11-25T16:01:00.000Z"


def test_max_ts_of_a_file(tmp_path: Path) -> None:
    assert (
        FileSource(write(tmp_path / "s.txt", SNAP_LINES), "snap", limits=ANY_AGE).max_ts_ms()
        == (T0 + 50) * 1000
    )


def test_mapping_errors() -> None:
    with pytest.raises(ValueError, match="lacks"):
        ColumnFormat(columns={"user_id": 0})
    with pytest.raises(ValueError, match="unknown column"):
        ColumnFormat(columns={**SNAP_FORMAT.columns, "colour": 4})
    with pytest.raises(ValueError, match="not event types"):
        ColumnFormat(columns=SNAP_FORMAT.columns, type_map={"RT": "retweet"})
    with pytest.raises(ValueError):
        parse_columns("user_id:0")
    with pytest.raises(ValueError):
        parse_type_map("RT")


def test_spans_from_offsets() -> None:
    spans = spans_from_offsets(
        [0, 1, 2],
        beginning={0: 0, 1: 5, 2: 0},
        end={0: 100, 1: 50, 2: 10},
        start_at={0: 10, 1: None, 2: 0},
        stop_at={0: 20, 1: None, 2: None},
    )
    assert spans == [PartitionSpan(0, 10, 20), PartitionSpan(1, 50, 50), PartitionSpan(2, 0, 10)]
    assert [s.count for s in spans] == [10, 0, 10]
    unbounded = spans_from_offsets([0], {0: 3}, {0: 9}, {}, {})
    assert unbounded == [PartitionSpan(0, 3, 9)]


def test_speed_and_pacer() -> None:
    assert parse_speed("max") is None
    assert parse_speed("10") == 10.0
    with pytest.raises(ValueError):
        parse_speed("-1")
    pacer = Pacer(10.0)
    assert pacer.delay(1_000_000, now=100.0) == 0.0
    assert pacer.delay(1_010_000, now=100.0) == pytest.approx(1.0)  # 10 s of events / 10
    assert pacer.delay(1_010_000, now=102.0) == 0.0  # late: no wait, never negative
    assert Pacer(None).delay(5, now=0.0) == 0.0


def test_pacer_reanchors_on_an_earlier_event() -> None:
    pacer = Pacer(2.0)
    assert pacer.delay(10_000, now=50.0) == 0.0  # the first event anchors: wall0 = 50
    assert pacer.delay(12_000, now=50.0) == pytest.approx(1.0)
    # An event before t0 goes at once and becomes t0; later events move 2 s / 2 later,
    # so the schedule still spans (newest - earliest) / speed from the start.
    assert pacer.delay(8_000, now=50.5) == 0.0
    assert pacer.delay(12_000, now=50.5) == pytest.approx(1.5)
    assert pacer.delay(9_000, now=50.5) == 0.0  # past its due time: at once
    assert pacer.delay(16_000, now=51.0) == pytest.approx(3.0)


def test_column_format_from_flags() -> None:
    import argparse

    from commands.replay import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    snap = column_format(parser.parse_args(["--file", "f", "--format", "snap"]))
    assert snap is not None and snap.type_map["RT"] == "share" and snap.delimiter is None
    csv = column_format(
        parser.parse_args(
            [
                "--file",
                "f",
                "--format",
                "csv",
                "--columns",
                "user_id=0,community=1,ts=2,type=3",
                "--type-map",
                "RT=share",
                "--delimiter",
                "space",
                "--platform",
                "instagram",
            ]
        )
    )
    assert csv is not None and csv.delimiter is None and csv.platform == "instagram"
    with pytest.raises(ValueError, match="--columns"):
        column_format(parser.parse_args(["--file", "f", "--format", "csv"]))


class _Sink:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_progress_prints_plain_lines_when_not_a_tty() -> None:
    sink = _Sink()
    progress = Progress("replay", total=1000, stream=sink, interval=0.0)  # type: ignore[arg-type]
    progress.update(250, bad=3)
    progress.close()
    lines = sink.text.splitlines()
    assert len(lines) == 2 and "\r" not in sink.text
    assert "25.0%" in lines[0] and "bad 3" in lines[0] and "ETA" in lines[0]
    assert progress.line().startswith("replay: 250 events")


def jsonl_event(event_id: str, ts: str, **extra: str) -> str:
    fields = {"event_id": event_id, "ts": ts, "platform": "x", "community": "c"}
    return orjson.dumps({**fields, "user_id": "u", "type": "like", **extra}).decode()


def test_file_lines_are_judged_by_the_worker_rules_future_tolerance_included(
    tmp_path: Path,
) -> None:
    from streams.events import Limits

    lines = [
        jsonl_event("ok", "2026-11-25T17:04:59.000Z"),  # within the 5m tolerance
        jsonl_event("ahead", "2026-11-25T17:05:00.001Z"),  # just past it
        jsonl_event("big", "2026-11-25T16:00:00.000Z", user_id="u" * 100),
        jsonl_event("star", "2026-11-25T16:00:00.000Z", community="*"),
    ]
    path = write(tmp_path / "e.jsonl", lines)
    limits = Limits(max_message_bytes=150)
    items = list(FileSource(path, "jsonl", now_ms=NOW, limits=limits))
    assert [reason for *_, reason in items] == [None, "future_timestamp", "too_large", "bad_field"]
    # the same lines as csv: the line built from the columns is what is judged
    csv = write(tmp_path / "e.csv", [f"u,c,{NOW + 299_000}", f"u,c,{NOW + 301_000}", "u,*,1000"])
    fmt = ColumnFormat(
        columns=parse_columns("user_id=0,community=1,ts=2"), delimiter=",", type_value="like"
    )
    reasons = [r for *_, r in FileSource(csv, "csv", fmt, now_ms=NOW, limits=ANY_AGE)]
    assert reasons == [None, "future_timestamp", "bad_field"]


def test_future_lines_outside_the_range_are_skipped_not_dead_lettered(tmp_path: Path) -> None:
    lines = [jsonl_event("a", "2026-11-25T16:00:00Z"), jsonl_event("b", "2026-11-30T00:00:00Z")]
    path = write(tmp_path / "e.jsonl", lines)
    source = FileSource(path, "jsonl", time_range=TimeRange(None, NOW), now_ms=NOW, limits=ANY_AGE)
    assert [r for *_, r in source] == [None]
    assert source.skipped == 1


def test_constant_type_and_community_for_files_without_those_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "log.txt", [f"alice bob {T0}", f"carol dave {T0 + 1}", "x y z"])
    fmt = ColumnFormat(
        columns=parse_columns("user_id=0,ts=2"),
        delimiter=None,
        type_value="post",
        community_value="msgs",
    )
    items = list(FileSource(path, "csv", fmt, now_ms=NOW, limits=ANY_AGE))
    events = [parse_event(v, NOW, ANY_AGE) for v, _, _, reason in items if reason is None]
    assert [(e.user_id, e.community, e.type, e.ts_ms) for e in events] == [
        ("alice", "msgs", "post", T0 * 1000),
        ("carol", "msgs", "post", (T0 + 1) * 1000),
    ]
    assert [r for *_, r in items if r] == ["bad_timestamp"]
    spaced = ColumnFormat(columns={"user_id": 0, "ts": 2}, type_value="like", community_value="a b")
    [(value, *_)] = list(
        FileSource(write(tmp_path / "one.txt", [f"u v {T0}"]), "csv", spaced, limits=ANY_AGE)
    )
    assert parse_event(value, NOW, ANY_AGE).community == "a b"  # not alphanumeric: the orjson path
    with pytest.raises(ValueError, match="--type/--community"):
        ColumnFormat(columns={"user_id": 0, "ts": 2})
    with pytest.raises(ValueError, match="both"):
        ColumnFormat(columns={"user_id": 0, "ts": 2, "type": 3}, type_value="like")
    with pytest.raises(ValueError, match="not an event type"):
        ColumnFormat(columns={"user_id": 0, "ts": 2, "community": 1}, type_value="poke")


def test_snap_preset_with_constants_from_flags() -> None:
    import argparse

    from commands.replay import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = ["--file", "f", "--format", "snap", "--community", "higgs", "--type", "share"]
    fmt = column_format(parser.parse_args(args))
    assert fmt is not None and fmt.columns == {"user_id": 0, "ts": 2}
    assert (fmt.type_value, fmt.community_value) == ("share", "higgs")
    with pytest.raises(ValueError, match="apply to --format csv or snap"):
        column_format(parser.parse_args(["--file", "f", "--type", "like"]))


def test_a_delimited_file_read_as_jsonl_is_one_error_naming_the_line(tmp_path: Path) -> None:
    from commands.sources import FileFormatError

    path = write(tmp_path / "log.txt", ["", f"alice bob {T0}", f"carol dave {T0}"])
    with pytest.raises(FileFormatError, match=r"log.txt line 2 is not JSON.*--format csv"):
        list(FileSource(path, "jsonl", limits=ANY_AGE))
    # a JSONL file with a bad line later on: that line goes to the DLQ, the rest goes on
    good = jsonl_event("a", "2026-11-25T16:00:00Z")
    items = list(
        FileSource(write(tmp_path / "e.jsonl", [good, "oops", good]), "jsonl", limits=ANY_AGE)
    )
    assert [r for *_, r in items] == [None, "not_json", None]


def test_stdin_is_a_file_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    data = gzip.compress("\n".join(SNAP_LINES).encode() + b"\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))
    source = FileSource("-", "snap", now_ms=NOW, limits=ANY_AGE)
    items = list(source)
    assert source.name == "<stdin>" and source.size == 0
    assert [r for *_, r in items] == [
        r for *_, r in FileSource(write(tmp_path / "s", SNAP_LINES), "snap", limits=ANY_AGE)
    ]
    with pytest.raises(ValueError, match="needs --to"):
        source.max_ts_ms()


def test_the_column_fast_path_judges_exactly_as_the_worker_function() -> None:
    """Random plain lines near every limit: the fast path's verdict and value equal
    those of the full path, which calls the worker's parse_event."""
    import random

    from commands.sources import ColumnDecoder
    from streams.events import Limits

    rng = random.Random(7)
    for limits in (
        Limits(),
        Limits(max_message_bytes=190, future_tolerance_ms=60_000),
        Limits(max_event_age_ms=61_000),
    ):
        for shift in (0, 3_600_000):
            fmt = ColumnFormat(columns={"user_id": 0, "community": 1, "ts": 2, "type": 3})
            fast = ColumnDecoder(fmt, shift, NOW, limits)
            full = ColumnDecoder(fmt, shift, NOW, limits)
            full._fast = False  # noqa: SLF001 - the reference path
            assert fast._fast  # noqa: SLF001
            for n in range(3000):
                user = "u" * rng.choice([1, 5, 60, 127, 128, 129, 140])
                community = "c" * rng.choice([1, 30, 128, 129])
                ts = (
                    NOW
                    - shift
                    + rng.choice([-1, 0, 1]) * 1000
                    + rng.choice([-1, 1]) * rng.choice([0, 59, 60, 61, 300, 301]) * 1000
                )
                kind = rng.choice(["like", "RT", "view"])
                raw = f"{user} {community} {ts // 1000} {kind}\n".encode()
                assert fast.decode_bytes(raw, n) == full.decode_bytes(raw, n), raw


def test_the_newest_time_of_an_old_file_ignores_the_clock_rules(tmp_path: Path) -> None:
    from streams.events import Limits

    path = write(tmp_path / "s.txt", SNAP_LINES)  # 2012: too old for a 400d limit
    source = FileSource(path, "snap", now_ms=NOW, limits=Limits(max_event_age_ms=400 * 86_400_000))
    assert source.max_ts_ms() == (T0 + 50) * 1000
    assert None not in {r for *_, r in source}  # unshifted, the worker refuses them all
