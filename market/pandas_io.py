"""Bars to and from pandas DataFrames (the `pandas` extra: pip install 'tactical-engine[pandas]').

Imported only by Bars.from_pandas / Bars.to_pandas, so the market layer stays numpy-only for
everything else. Works with pandas 2.2+ and 3: times are converted by their dtype's own unit
(pandas 2 defaults to nanoseconds, pandas 3 to microseconds; `asi8 // 10**6` is 1000x off on
one of them), time zones are converted to UTC and naive times are taken as UTC, as in CSV.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from market.bars import BarDataError, Bars
from market.csv_loader import bars_from_columns, find_columns


def _datetimes(values) -> np.ndarray | None:
    """UTC datetime64 values of a datetime-like index or column (any unit, any zone), else None."""
    if not pd.api.types.is_datetime64_any_dtype(values):
        return None
    index = pd.DatetimeIndex(values)
    return (index.tz_convert(None) if index.tz is not None else index).to_numpy()


def bars_from_pandas(frame: pd.DataFrame) -> Bars:
    """Validated bars from a DataFrame: times from a DatetimeIndex, else from a column (or a named index)
    called time, timestamp, datetime, date or ts, holding datetimes, epoch numbers or text; prices from
    open, high, low, close, volume in any case. A bad row is a BarDataError naming its index label."""
    if not isinstance(frame, pd.DataFrame):
        raise BarDataError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    time_column, prices = find_columns(list(frame.columns), "the DataFrame")
    index = frame.index
    if (times := _datetimes(index)) is None:
        if time_column is not None:
            column = frame[time_column]
            times = _datetimes(column)
            if times is None:
                times = column.to_numpy()
        elif str(index.name).strip().lower() in ("time", "timestamp", "datetime", "date", "ts"):
            times = index.to_numpy()
        else:
            raise BarDataError(f"the DataFrame has no times: give it a DatetimeIndex or a time column (time, "
                               f"timestamp, datetime, date or ts); its index is a {type(index).__name__}")
    try:
        columns = {c: frame[name].to_numpy(dtype=np.float64, na_value=np.nan) for c, name in prices.items()}
    except (TypeError, ValueError) as exc:
        raise BarDataError(f"the DataFrame's price and volume columns must be numeric: {exc}") from None
    return bars_from_columns(times, columns, lambda i: f"row {i} ({index[i]})")


def bars_to_pandas(bars: Bars) -> pd.DataFrame:
    """A DataFrame with a UTC DatetimeIndex named time (millisecond unit) and open, high, low, close, volume."""
    index = pd.DatetimeIndex(bars.time.astype("datetime64[ms]"), name="time").tz_localize("UTC")
    return pd.DataFrame({"open": bars.open, "high": bars.high, "low": bars.low, "close": bars.close,
                         "volume": bars.volume}, index=index)
