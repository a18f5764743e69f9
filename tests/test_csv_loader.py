"""CSV loading in the usual layouts, and errors that name the line and the problem."""

from __future__ import annotations

import numpy as np
import pytest

from market.bars import BarDataError
from market.csv_loader import load_bars_csv, parse_time_ms, write_bars_csv
from market.synthetic import synthetic_bars


def write(tmp_path, text, name="bars.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = [(100, 101, 99.5, 100.5, 10), (100.5, 102, 100, 101.5, 0), (101.5, 101.5, 100.5, 101, 7.5)]


@pytest.mark.parametrize("header,times", [
    ("time,open,high,low,close,volume", ["2024-01-02T09:30:00Z", "2024-01-02T09:31:00Z", "2024-01-02T09:32:00Z"]),
    ("Timestamp,Open,High,Low,Close,Volume", ["1704187800", "1704187860", "1704187920"]),
    ("ts,OPEN,HIGH,LOW,CLOSE,VOLUME", ["1704187800000", "1704187860000", "1704187920000"]),
    ("Datetime,Open,High,Low,Close,Volume", ["2024-01-02 09:30:00", "2024-01-02 09:31:00", "2024-01-02 09:32:00"]),
])
def test_layouts(tmp_path, header, times):
    rows = [f"{t},{o},{h},{lo},{c},{v}" for t, (o, h, lo, c, v) in zip(times, GOOD, strict=True)]
    bars = load_bars_csv(write(tmp_path, "\n".join([header, *rows]) + "\n"))
    assert len(bars) == 3
    np.testing.assert_array_equal(bars.time, [1704187800000, 1704187860000, 1704187920000])
    np.testing.assert_array_equal(bars.close, [100.5, 101.5, 101])
    np.testing.assert_array_equal(bars.volume, [10, 0, 7.5])


def test_separate_date_and_time_columns_any_order_extra_columns(tmp_path):
    text = ("Symbol,Volume,Date,Time,Close,Low,High,Open\n"
            "NQ,10,01/02/2024,09:30,100.5,99.5,101,100\n"
            "NQ,5,01/02/2024,09:35,101.5,100,102,100.5\n")
    bars = load_bars_csv(write(tmp_path, text))
    np.testing.assert_array_equal(bars.time, [1704187800000, 1704188100000])
    np.testing.assert_array_equal(bars.open, [100, 100.5])


def test_round_trip(tmp_path):
    bars = synthetic_bars(300, seed=9)
    path = tmp_path / "out.csv"
    write_bars_csv(bars, path)
    back = load_bars_csv(path)
    for field in ("time", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(back, field), getattr(bars, field))


HEADER = "time,open,high,low,close,volume\n"


@pytest.mark.parametrize("bad_row,problem", [
    ("2024-01-02T09:32:00Z,101,100,102,101,5", "high 100.0 is below low 102.0"),
    ("2024-01-02T09:32:00Z,101,102,100,101,-3", "negative volume -3.0"),
    ("2024-01-02T09:30:30Z,101,102,100,101,3",
     "time 2024-01-02T09:30:30Z is not after the previous bar's 2024-01-02T09:31:00Z"),
    ("2024-01-02T09:31:00Z,101,102,100,101,3", "not after the previous bar"),
    ("2024-01-02T09:32:00Z,101,nan,100,101,3", "non-finite value"),
    ("2024-01-02T09:32:00Z,101,102,100,abc,3", "close 'abc' is not a number"),
    ("2024-01-02T09:32:00Z,103,102,100,101,3", "open 103.0 is outside"),
    ("yesterday,101,102,100,101,3", "cannot read time 'yesterday'"),
    ("2024-01-02T09:32:00Z,101,102", "expected 6 fields, got 3"),
])
def test_bad_rows_name_the_line_and_problem(tmp_path, bad_row, problem):
    text = HEADER + "2024-01-02T09:30:00Z,100,101,99,100,1\n2024-01-02T09:31:00Z,100,101,99,100,1\n" + bad_row + "\n"
    with pytest.raises(BarDataError) as err:
        load_bars_csv(write(tmp_path, text))
    assert "line 4" in str(err.value) and problem in str(err.value)


def test_missing_column(tmp_path):
    with pytest.raises(BarDataError, match=r"missing column.*volume"):
        load_bars_csv(write(tmp_path, "time,open,high,low,close\n2024-01-02,1,1,1,1\n"))
    with pytest.raises(BarDataError, match=r"missing column.*time"):
        load_bars_csv(write(tmp_path, "open,high,low,close,volume\n1,1,1,1,1\n"))


def test_a_column_given_twice_is_refused_not_silently_the_last(tmp_path):
    with pytest.raises(BarDataError, match=r"column\(s\) close appear more than once"):
        load_bars_csv(write(tmp_path, "time,open,high,low,close,volume,Close\n2024-01-02,1,2,1,1.5,1,9\n"))


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(BarDataError, match="empty"):
        load_bars_csv(write(tmp_path, ""))
    with pytest.raises(BarDataError, match="no bars"):
        load_bars_csv(write(tmp_path, HEADER))
    with pytest.raises(BarDataError, match="cannot open"):
        load_bars_csv(tmp_path / "nope.csv")


ROWS = HEADER + "".join(f"2024-01-02T09:3{i}:00Z,100,101,99,100.5,{i}\n" for i in range(3))


@pytest.mark.parametrize("data", [
    ROWS.encode("utf-16"),  # a spreadsheet's "Unicode" export: UTF-16-LE with a byte-order mark
    ("\ufeff" + ROWS).encode("utf-16-be"),
    ROWS.encode("utf-8-sig"),
    ROWS.encode("utf-32"),
], ids=["utf-16-le", "utf-16-be", "utf-8-bom", "utf-32"])
def test_a_byte_order_mark_says_the_encoding(tmp_path, data):
    path = tmp_path / "bars.csv"
    path.write_bytes(data)
    bars = load_bars_csv(path)
    np.testing.assert_array_equal(bars.volume, [0, 1, 2])
    assert bars.time[0] == 1704187800000


@pytest.mark.parametrize("data,problem", [
    (ROWS.replace("99,100.5,2", "99,100.5,2 \u00e9").encode("latin-1"), "line 4: not valid UTF-8 (invalid "
                                                                       "continuation byte 0xe9)"),
    (ROWS.encode("utf-16-le"), "line 1: a NUL character (UTF-16 text without a byte-order mark?)"),
    (ROWS.encode("utf-16") + b"\x00", "line 5: not valid UTF-16-LE (truncated data 0x00)"),
], ids=["latin-1", "utf-16-without-bom", "odd-utf-16"])
def test_undecodable_files_name_the_line_and_the_encoding(tmp_path, data, problem):
    path = tmp_path / "bars.csv"
    path.write_bytes(data)
    with pytest.raises(BarDataError) as err:
        load_bars_csv(path)
    assert problem in str(err.value) and "save the file as UTF-8" in str(err.value)


def test_a_field_past_the_csv_limit_is_a_bar_data_error(tmp_path):
    with pytest.raises(BarDataError, match="line 2: field larger than field limit"):
        load_bars_csv(write(tmp_path, HEADER + "x" * 200_000 + ",1,1,1,1,1\n"))


@pytest.mark.parametrize("first", [1704187800, 1704187800_000, 1704187800_000_000, 1704187800_000_000_000],
                         ids=["seconds", "milliseconds", "microseconds", "nanoseconds"])
def test_the_epoch_unit_is_read_from_the_magnitude(tmp_path, first):
    minute = 60 * first // 1704187800
    rows = [f"{first + i * minute},{o},{h},{lo},{c},{v}" for i, (o, h, lo, c, v) in enumerate(GOOD)]
    bars = load_bars_csv(write(tmp_path, HEADER + "\n".join(rows) + "\n"))
    np.testing.assert_array_equal(bars.time, [1704187800000, 1704187860000, 1704187920000])


def test_fractional_epochs_keep_their_milliseconds_and_single_times_read_alike(tmp_path):
    bars = load_bars_csv(write(tmp_path, HEADER + "1704187800.25,100,101,99,100,1\n1704187800.7504,100,101,99,100,1\n"))
    np.testing.assert_array_equal(bars.time, [1704187800250, 1704187800750])
    assert parse_time_ms("1704187800123456") == parse_time_ms("1704187800123") == 1704187800123  # --from, --until


@pytest.mark.parametrize("bad_time,problem", [
    ("1e19", "epoch time 1e19 is out of range"),
    ("10000000000000000000", "epoch time 10000000000000000000 is out of range"),
    ("-99999999999", "time '-99999999999' is out of range (years 1 to 9999)"),
    ("inf", "time 'inf' is not finite"),
    ("1704187860000", "is in milliseconds by its size, but the column's first, 1704187800, is in seconds"),
])
def test_out_of_range_and_mixed_epochs_name_the_line(tmp_path, bad_time, problem):
    text = HEADER + "1704187800,100,101,99,100,1\n" + f"{bad_time},100,101,99,100,1\n"
    with pytest.raises(BarDataError) as err:
        load_bars_csv(write(tmp_path, text))
    assert "line 3" in str(err.value) and problem in str(err.value)
