"""CSV loading in the usual layouts, and errors that name the line and the problem."""

from __future__ import annotations

import numpy as np
import pytest

from market.bars import BarDataError
from market.csv_loader import load_bars_csv, write_bars_csv
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
    rows = [f"{t},{o},{h},{l},{c},{v}" for t, (o, h, l, c, v) in zip(times, GOOD)]
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
    ("2024-01-02T09:30:30Z,101,102,100,101,3", "not after the previous bar"),
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
    with pytest.raises(BarDataError, match="missing column.*volume"):
        load_bars_csv(write(tmp_path, "time,open,high,low,close\n2024-01-02,1,1,1,1\n"))
    with pytest.raises(BarDataError, match="missing column.*time"):
        load_bars_csv(write(tmp_path, "open,high,low,close,volume\n1,1,1,1,1\n"))


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(BarDataError, match="empty"):
        load_bars_csv(write(tmp_path, ""))
    with pytest.raises(BarDataError, match="no bars"):
        load_bars_csv(write(tmp_path, HEADER))
    with pytest.raises(BarDataError, match="cannot open"):
        load_bars_csv(tmp_path / "nope.csv")
