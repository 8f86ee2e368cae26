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
from streams.events import format_ts, parse_event

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
    source = FileSource(path, "snap")
    items = list(source)
    good = [item for item in items if item[3] is None]
    bad = [item for item in items if item[3] is not None]
    events = [parse_event(value, NOW) for value, *_ in good]
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
    source = FileSource(write(tmp_path / "s.txt", SNAP_LINES), "snap")
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
    source = FileSource(path, "snap", time_range=TimeRange((T0 + 20) * 1000, (T0 + 50) * 1000))
    good = [parse_event(v, NOW).event_id for v, _, _, reason in source if reason is None]
    assert good == ["snap-2", "snap-3"]
    assert source.skipped == 2


def test_shift_moves_the_value_ts_and_keeps_the_original_for_filtering(tmp_path: Path) -> None:
    path = write(tmp_path / "s.txt", SNAP_LINES[:1])
    [(value, ts_ms, _, _)] = list(FileSource(path, "snap", shift_ms=1000))
    assert ts_ms == (T0 + 10) * 1000
    assert parse_event(value, NOW).ts_ms == ts_ms + 1000


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
    items = list(FileSource(write(tmp_path / "x.csv", lines), "csv", fmt))
    events = [parse_event(v, NOW) for v, _, _, reason in items if reason is None]
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
    items = list(FileSource(write(tmp_path / "x.txt", [f"u c {T0} share"]), "csv", fmt))
    event = parse_event(items[0][0], NOW)
    assert (event.platform, event.ts_ms, event.type) == ("mastodon", T0 * 1000, "share")


def test_jsonl_lines_go_out_byte_for_byte_and_bad_lines_get_reasons(tmp_path: Path) -> None:
    good = '{"event_id":"e1","ts":"2026-11-25T16:00:00.000Z","platform":"x","community":"c","user_id":"u","type":"like"}'  # noqa: E501
    far = good.replace("e1", "e2").replace("2026-11-25T16", "2099-01-01T00")
    lines = [good, "{not json", '{"event_id":"e3"}', good.replace("like", "poke"), far]
    items = list(FileSource(write(tmp_path / "e.jsonl", lines), "jsonl"))
    assert items[0] == (good.encode(), NOW - 3_600_000, None, None)
    assert [reason for *_, reason in items] == [None, "not_json", "missing_field", "bad_type", None]
    assert items[1][0] == b"{not json"  # the original bytes, for the DLQ
    shifted = list(FileSource(write(tmp_path / "f.jsonl", [good]), "jsonl", shift_ms=60_000))
    assert orjson.loads(shifted[0][0])["ts"] == "2026-11-25T16:01:00.000Z"


def test_max_ts_of_a_file(tmp_path: Path) -> None:
    assert FileSource(write(tmp_path / "s.txt", SNAP_LINES), "snap").max_ts_ms() == (T0 + 50) * 1000


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
