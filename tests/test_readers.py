"""Log readers: every format, ordering, gzip, stdin, rejects with line numbers, real logs."""

from __future__ import annotations

import gzip
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdstream.errors import ConfigError
from kdstream.replay import (
    RETAIL_TYPE_MAP,
    CsvSpec,
    EventColumns,
    ReadReport,
    detect_format,
    iter_events,
    read_log,
)
from kdstream.stream._event import Event

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def _write(path: Path, text: str, *, gz: bool = False) -> Path:
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


ML100K = "3\t30\t4\t200\n1\t10\t5\t100\n2\t20\t2\t100\n"


def test_movielens_100k_sorted_stably_by_time(tmp_path: Path) -> None:
    cols, report = read_log(_write(tmp_path / "u.data", ML100K))
    # ts 100 twice: file order (user 1 then user 2) is kept
    assert cols.user.tolist() == ["1", "2", "3"]
    assert cols.item.tolist() == ["10", "20", "30"]
    assert cols.type.tolist() == ["rating"] * 3
    assert cols.ts.tolist() == [100.0, 100.0, 200.0]
    assert cols.value.tolist() == [5.0, 2.0, 4.0]
    assert (report.n_lines, report.n_events, report.n_rejected, report.format) == (
        3,
        3,
        0,
        "movielens-100k",
    )
    # the rating's sign is decided by Event.signal: 2.0 < 3.5 is a negative
    assert [e.signal() for e in cols.to_events()] == [1.0, -1.0, 1.0]


def test_bad_lines_are_counted_with_line_numbers_and_never_stop_the_read(tmp_path: Path) -> None:
    text = "1\t10\t5\t100\n\nnot a line\n2\t20\tx\t101\n3\t30\t4\tnan\n\t40\t4\t5\n4\t40\t4\t102\n"
    cols, report = read_log(_write(tmp_path / "u.data", text))
    assert cols.user.tolist() == ["1", "4"]
    assert report.n_lines == 6  # the blank line is not a data line
    assert report.n_events == 2
    assert report.n_rejected == 4
    assert report.n_lines == report.n_events + report.n_rejected
    lines = [line for line, _ in report.rejects]
    assert lines == [3, 4, 5, 6]
    reasons = dict(report.rejects)
    assert "4 fields" in reasons[3]
    assert "value" in reasons[4]
    assert "time" in reasons[5]
    assert "empty user" in reasons[6]
    assert "line 3" in report.summary()


def test_only_first_100_rejects_are_kept_but_all_counted(tmp_path: Path) -> None:
    text = "".join(f"bad{k}\n" if k % 2 else f"{k}\t1\t3\t{k}\n" for k in range(400))
    cols, report = read_log(_write(tmp_path / "u.data", text))
    assert report.n_rejected == 200
    assert len(report.rejects) == 100
    assert report.rejects[0][0] == 2
    assert len(cols) == 200


def test_movielens_dat_gzip_by_magic_bytes(tmp_path: Path) -> None:
    text = "1::10::5::978300760\n1::11::3::978300759\n"
    path = _write(tmp_path / "ratings.dat.gz", text, gz=True)
    cols, report = read_log(path)
    assert report.format == "movielens-dat"
    assert cols.item.tolist() == ["11", "10"]
    # a gzip file without the .gz suffix is still recognised by its magic bytes
    other = _write(tmp_path / "log.bin", "1::10::5::978300760\n", gz=True)
    cols2, report2 = read_log(other)
    assert report2.format == "movielens-dat"
    assert len(cols2) == 1


def test_movielens_csv_header_and_crlf(tmp_path: Path) -> None:
    text = "userId,movieId,rating,timestamp\r\n1,31,2.5,1260759144\r\n1,1029,3.0,1260759179\r\n"
    cols, report = read_log(_write(tmp_path / "ratings.csv", text))
    assert report.format == "movielens-csv"
    assert report.n_lines == 2
    assert cols.value.tolist() == [2.5, 3.0]
    assert cols.item.tolist() == ["31", "1029"]


def test_generic_csv_retail_types_ms_and_unknown_types(tmp_path: Path) -> None:
    text = (
        "timestamp,visitorid,event,itemid,transactionid\n"
        "1433221332117,257597,view,355908,\n"
        "1433224214164,992329,addtocart,248676,\n"
        "1433221999827,111016,transaction,318965,99\n"
        "1433221999000,111016,hover,318965,\n"
        "1433221999001,111017,Click,1,\n"
    )
    spec = CsvSpec("visitorid", "itemid", "timestamp", type_col="event", time_unit="ms")
    cols, report = read_log(_write(tmp_path / "events.csv", text), format="csv", spec=spec)
    assert report.n_rejected == 1
    assert report.rejects[0][0] == 5  # the header is line 1
    assert "hover" in report.rejects[0][1]
    assert cols.type.tolist() == ["view", "click", "purchase", "add_to_cart"]
    assert cols.ts[0] == pytest.approx(1433221332.117)
    assert all(math.isnan(v) for v in cols.value)
    assert dict(RETAIL_TYPE_MAP) == {
        "view": "view",
        "addtocart": "add_to_cart",
        "transaction": "purchase",
    }


def test_generic_csv_indices_without_header_us_and_values(tmp_path: Path) -> None:
    text = "a;x;2000000;1.5\nb;y;1000000;\n"
    spec = CsvSpec(0, 1, 2, value_col=3, sep=";", header=False, time_unit="us",
                   default_type="play")
    cols, report = read_log(_write(tmp_path / "plays.txt", text), format="csv", spec=spec)
    assert report.n_rejected == 0
    assert cols.user.tolist() == ["b", "a"]
    assert cols.ts.tolist() == [1.0, 2.0]
    assert math.isnan(cols.value[0])
    assert cols.value[1] == 1.5
    assert cols.type.tolist() == ["play", "play"]


def test_generic_csv_quoted_fields_and_iso_times(tmp_path: Path) -> None:
    text = (
        "user,item,when\n"
        '"u, 1",i1,2023-11-14T22:13:20Z\n'
        "u2,i2,2023-11-14T22:13:19\n"
        "u3,i3,yesterday\n"
        'u4,"i4,broken\n'
    )
    spec = CsvSpec("user", "item", "when", time_unit="iso")
    cols, report = read_log(_write(tmp_path / "log.csv", text), format="csv", spec=spec)
    assert cols.user.tolist() == ["u2", "u, 1"]
    assert cols.ts.tolist() == [1700000000.0 - 1, 1700000000.0]
    assert [line for line, _ in report.rejects] == [4, 5]
    assert "ISO" in report.rejects[0][1]


def test_csv_spec_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="time_unit"):
        CsvSpec("u", "i", "t", time_unit="h")
    with pytest.raises(ConfigError, match="header=False"):
        CsvSpec("u", "i", "t", header=False)
    with pytest.raises(ConfigError, match="default_type"):
        CsvSpec(0, 1, 2, header=False, default_type="hover")
    with pytest.raises(ConfigError, match="type_map"):
        CsvSpec(0, 1, 2, header=False, type_map={"x": "nope"})
    path = _write(tmp_path / "log.csv", "user,item,ts\nu,i,1\n")
    with pytest.raises(ConfigError, match="'when' is not in the header"):
        read_log(path, format="csv", spec=CsvSpec("user", "item", "when"))
    with pytest.raises(ConfigError, match="CsvSpec"):
        read_log(path)  # auto-detected generic CSV without a spec
    with pytest.raises(ConfigError, match="format"):
        read_log(path, format="parquet")
    with pytest.raises(ConfigError, match="cannot read"):
        read_log(tmp_path / "missing.csv", format="csv")


def test_jsonl_decodes_with_the_codec_and_reports_bad_records(tmp_path: Path) -> None:
    lines = [
        json.dumps({"user": "u1", "item": "i1", "type": "click", "ts": 20.0}),
        json.dumps({"user": 7, "item": "i2", "ts": "1970-01-01T00:00:10Z"}),
        "{not json",
        json.dumps({"user": "u1", "item": "i3", "type": "hover", "ts": 30.0}),
        json.dumps({"user": "u2", "item": "i4", "type": "rating", "value": 2, "ts": 40}),
    ]
    cols, report = read_log(_write(tmp_path / "events.jsonl", "\n".join(lines) + "\n"))
    assert report.format == "jsonl"
    assert cols.to_events() == [
        Event("7", "i2", "view", 10.0),
        Event("u1", "i1", "click", 20.0),
        Event("u2", "i4", "rating", 40.0, 2.0),
    ]
    assert [line for line, _ in report.rejects] == [3, 4]
    assert "type" in report.rejects[1][1]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("u.data", "x", "movielens-100k"),
        ("ratings.dat", "x", "movielens-dat"),
        ("ratings.csv.gz", "x", "movielens-csv"),
        ("log.ndjson", "x", "jsonl"),
        ("a.jsonl", "x", "jsonl"),
        ("log.txt", '{"user": "u"}\n', "jsonl"),
        ("log.txt", "1::2::3::4\n", "movielens-dat"),
        ("log.txt", "\n1\t2\t3\t4\n", "movielens-100k"),
        ("log.txt", "userId,movieId,rating,timestamp\n", "movielens-csv"),
        ("log.txt", "visitor,item,time\n", "csv"),
    ],
)
def test_detect_format(tmp_path: Path, name: str, text: str, expected: str) -> None:
    assert detect_format(_write(tmp_path / name, text)) == expected


def test_detect_format_reads_inside_gzip_and_fails_clearly(tmp_path: Path) -> None:
    assert detect_format(_write(tmp_path / "log.gz", "1::2::3::4\n", gz=True)) == "movielens-dat"
    with pytest.raises(ConfigError, match="cannot detect"):
        detect_format(_write(tmp_path / "log.txt", "hello\n"))
    with pytest.raises(ConfigError, match="stdin"):
        detect_format("-")


def test_stdin_text_and_gzip_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("1::10::5::7\n2::20::1::6\n"))
    cols, report = read_log("-")
    assert report.format == "movielens-dat"
    assert cols.user.tolist() == ["2", "1"]

    raw = gzip.compress(b"1\t10\t5\t7\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    cols, report = read_log("-")
    assert report.format == "movielens-100k"
    assert cols.to_events() == [Event("1", "10", "rating", 7.0, 5.0)]


def test_limit_keeps_the_first_events_in_time_order(tmp_path: Path) -> None:
    path = _write(tmp_path / "u.data", ML100K)
    cols, report = read_log(path, limit=2)
    assert cols.ts.tolist() == [100.0, 100.0]
    assert report.n_events == 2
    assert list(iter_events(path, limit=1)) == [Event("1", "10", "rating", 100.0, 5.0)]
    with pytest.raises(ConfigError, match="limit"):
        read_log(path, limit=-1)


def test_empty_file(tmp_path: Path) -> None:
    cols, report = read_log(_write(tmp_path / "u.data", ""))
    assert len(cols) == 0
    assert report == ReadReport(0, 0, 0, [], "movielens-100k")


def test_event_columns_round_trip_and_slice() -> None:
    events = [Event("u1", "i1", "rating", 3.0, 4.5), Event("u2", "i2", "view", 1.0)]
    cols = EventColumns.from_events(events)
    assert cols.to_events() == events
    assert cols.slice(1, 2).to_events() == events[1:]
    assert cols.sorted_by_time().user.tolist() == ["u2", "u1"]
    assert len(EventColumns.concat([cols, cols])) == 4
    assert len(EventColumns.from_events([])) == 0
    with pytest.raises(ConfigError, match="equal lengths"):
        EventColumns(cols.user, cols.item[:1], cols.type, cols.ts, cols.value)


def _dataset(*parts: str) -> Path:
    path = DATASETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared dataset {path} is absent")
    return path


@pytest.mark.datasets
def test_real_ml_100k() -> None:
    cols, report = read_log(_dataset("ml-100k", "u.data"))
    assert report.format == "movielens-100k"
    assert (len(cols), report.n_rejected) == (100_000, 0)
    assert bool(np.all(np.diff(cols.ts) >= 0))
    assert len(set(cols.user.tolist())) == 943
    assert len(set(cols.item.tolist())) == 1682


@pytest.mark.datasets
def test_real_ml_1m_subset() -> None:
    cols, report = read_log(_dataset("ml-1m-subset", "ratings.dat.gz"))
    assert report.format == "movielens-dat"
    assert (len(cols), report.n_rejected) == (487_650, 0)
    assert bool(np.all(np.diff(cols.ts) >= 0))
    assert set(np.unique(cols.value).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


_row = st.tuples(
    st.integers(1, 50), st.integers(1, 50), st.integers(1, 5), st.integers(0, 20)
)
_bad = st.sampled_from(["x", "1\t2\t3", "1\t2\tthree\t4", "1\t2\t3\tinf", "1\t2\t3\t4\t5"])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.one_of(_row, _bad), max_size=40))
def test_any_mix_of_good_and_bad_lines(tmp_path_factory: pytest.TempPathFactory,
                                       lines: list[tuple[int, int, int, int] | str]) -> None:
    text = "".join(
        (line if isinstance(line, str) else "\t".join(map(str, line))) + "\n" for line in lines
    )
    path = tmp_path_factory.mktemp("prop") / "u.data"
    cols, report = read_log(_write(path, text))
    good = [line for line in lines if not isinstance(line, str)]
    expected = sorted(good, key=lambda r: r[3])  # sorted() is stable: ties keep file order
    assert cols.to_events() == [
        Event(str(u), str(i), "rating", float(t), float(r)) for u, i, r, t in expected
    ]
    assert [n for n, _ in report.rejects] == [
        k + 1 for k, line in enumerate(lines) if isinstance(line, str)
    ]
    assert report.n_lines == len(lines) == report.n_events + report.n_rejected
