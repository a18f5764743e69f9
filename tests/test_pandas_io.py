"""pandas both ways: DataFrames in and out, pandas-exported CSV and Parquet files.

Every datetime64 unit is tested explicitly (pandas 2 defaults to nanoseconds, pandas 3 to
microseconds), so the suite means the same under either.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from market.bars import BarDataError, Bars
from market.csv_loader import load_bars, load_bars_csv, parse_time_ms

pd = pytest.importorskip("pandas")

UNITS = ("s", "ms", "us", "ns")
START_MS = int(dt.datetime(2017, 1, 2, tzinfo=dt.UTC).timestamp() * 1000)


def frame(n: int = 200, tz: str | None = "UTC", unit: str = "ns", capitalized: bool = True) -> pd.DataFrame:
    """Hourly bars as pandas holds them (yfinance-style capitalized columns by default)."""
    rng = np.random.default_rng(0)
    close = 1.1 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    index = pd.date_range("2017-01-02", periods=n, freq="h", tz=tz).as_unit(unit)
    columns = {"open": close * (1 + rng.normal(0, 1e-4, n)), "close": close, "volume": rng.integers(1, 1000, n)}
    columns["high"] = np.maximum(columns["open"], close) * 1.0005
    columns["low"] = np.minimum(columns["open"], close) * 0.9995
    df = pd.DataFrame(columns, index=index)[["open", "high", "low", "close", "volume"]]
    return df.rename(columns=str.capitalize) if capitalized else df


def assert_same_bars(a: Bars, b: Bars) -> None:
    for column in ("time", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(a, column), getattr(b, column), err_msg=column)


@pytest.mark.parametrize("unit", UNITS)
def test_every_datetime64_unit_gives_the_same_milliseconds(unit):
    bars = Bars.from_pandas(frame(unit=unit))
    assert bars.time[0] == START_MS and np.all(np.diff(bars.time) == 3_600_000)
    assert bars.time.dtype == np.int64


@pytest.mark.parametrize("unit", UNITS)
def test_time_zones_are_converted_to_utc_and_naive_times_are_utc(unit):
    new_york = Bars.from_pandas(frame(tz="America/New_York", unit=unit))
    assert new_york.time[0] == START_MS + 5 * 3_600_000  # midnight in New York in January is 05:00 UTC
    naive = Bars.from_pandas(frame(tz=None, unit=unit))
    assert naive.time[0] == START_MS


@pytest.mark.parametrize("unit", UNITS)
def test_a_time_column_works_like_the_index(unit):
    df = frame(unit=unit).reset_index(names="Date")
    assert_same_bars(Bars.from_pandas(df), Bars.from_pandas(frame()))
    as_text = df.assign(Date=df["Date"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert_same_bars(Bars.from_pandas(as_text), Bars.from_pandas(frame()))
    per_ms = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
    as_epoch = df.assign(Date=(np.arange(len(df)) * 3600 + START_MS // 1000) * per_ms)
    assert_same_bars(Bars.from_pandas(as_epoch), Bars.from_pandas(frame()))


def test_sub_millisecond_times_round_as_the_csv_loader_rounds_them():
    stamps = ["2017-01-02T00:00:00.0015", "2017-01-02T00:00:00.0045", "2017-01-02T00:00:00.0056"]  # half to even
    df = frame(3, tz=None).set_axis(pd.DatetimeIndex(stamps).as_unit("us"))
    expected = [START_MS + 2, START_MS + 4, START_MS + 6]
    assert Bars.from_pandas(df).time.tolist() == [parse_time_ms(s) for s in stamps] == expected


def test_to_pandas_and_back():
    bars = Bars.from_pandas(frame())
    df = bars.to_pandas()
    assert list(df.columns) == ["open", "high", "low", "close", "volume"] and df.index.name == "time"
    assert str(df.index.tz) == "UTC" and df.index[0] == pd.Timestamp("2017-01-02", tz="UTC")
    assert_same_bars(Bars.from_pandas(df), bars)


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", None])
def test_a_csv_written_by_to_csv_loads_with_its_unnamed_time_column(tmp_path, tz):
    df = frame(tz=tz)
    path = tmp_path / "bars.csv"
    df.to_csv(path)
    assert path.read_text().startswith(",Open,High,Low,Close,Volume")
    assert_same_bars(load_bars_csv(path), Bars.from_pandas(df))
    df.reset_index(names="time").to_csv(path)  # a RangeIndex first, unnamed, and a named time column: that one
    assert_same_bars(load_bars_csv(path), Bars.from_pandas(df))


def test_an_unnamed_first_column_of_numbers_is_not_taken_for_times(tmp_path):
    path = tmp_path / "bars.csv"
    frame().reset_index(drop=True).to_csv(path)  # the times were dropped: 0, 1, 2... remain
    with pytest.raises(BarDataError, match=r"line 2: the unnamed first column holds '0', not a time"):
        load_bars_csv(path)


@pytest.mark.parametrize("unit", ["ms", "us", "ns"])
def test_parquet_files_from_pandas_load(tmp_path, unit):
    pytest.importorskip("pyarrow")
    df = frame(tz="America/New_York", unit=unit)
    expected = Bars.from_pandas(df)
    df.to_parquet(tmp_path / "index.parquet")  # the DatetimeIndex, stored by pandas
    assert_same_bars(load_bars(tmp_path / "index.parquet"), expected)
    df.reset_index(names="Timestamp").to_parquet(tmp_path / "column.parquet", index=False)
    assert_same_bars(load_bars(tmp_path / "column.parquet"), expected)
    (tmp_path / "bars.dat").write_bytes((tmp_path / "index.parquet").read_bytes())  # told by its magic bytes
    assert_same_bars(load_bars(tmp_path / "bars.dat"), expected)


def test_bad_frames_and_files_are_one_clear_error(tmp_path):
    with pytest.raises(BarDataError, match="the DataFrame has no times: give it a DatetimeIndex or a time column"):
        Bars.from_pandas(frame().reset_index(drop=True))
    with pytest.raises(BarDataError, match="missing column"):
        Bars.from_pandas(frame().drop(columns="Volume"))
    df = frame(5, tz=None)
    df.index = df.index.where(np.arange(5) != 3, pd.NaT)
    with pytest.raises(BarDataError, match=r"row 3 \(NaT\): the time is missing"):
        Bars.from_pandas(df)
    bad = frame(5)
    bad.loc[bad.index[2], "High"] = 0.5
    with pytest.raises(BarDataError, match=r"row 2 \(2017-01-02 02:00:00\+00:00\): high 0.5 is below low"):
        Bars.from_pandas(bad)
    with pytest.raises(BarDataError, match="must be numeric"):
        Bars.from_pandas(frame(5).assign(Close="x"))
    with pytest.raises(BarDataError, match="expected a pandas DataFrame, got ndarray"):
        Bars.from_pandas(np.zeros((3, 5)))
    (tmp_path / "x.parquet").write_bytes(b"PAR1 not really")
    pytest.importorskip("pyarrow")
    with pytest.raises(BarDataError, match=r"x\.parquet: not a readable Parquet file"):
        load_bars(tmp_path / "x.parquet")
