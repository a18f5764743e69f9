"""OHLCV bars as columnar numpy arrays, and the one validation every entry point applies."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from tactical.errors import UserError


class BarDataError(UserError, ValueError):
    """Bars that break the OHLCV contract; the message names the bar (or file line) and the problem.

    `bar` is the index of the offending bar when validate_bars found it."""

    bar: int | None = None


class Bar(NamedTuple):
    """One OHLCV bar: what a live stream sends each period. `time_ms` is milliseconds since the Unix epoch (UTC)."""

    time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True)
class Bars:
    """A time-ordered series of bars. `time` is milliseconds since the Unix epoch (UTC)."""

    time: np.ndarray  # int64 ms
    open: np.ndarray  # float64
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @classmethod
    def from_arrays(cls, time, open, high, low, close, volume) -> Bars:
        """Build bars from any array-likes of equal length (copied into int64/float64)."""
        arrays = [np.asarray(time, dtype=np.int64)] + [
            np.asarray(a, dtype=np.float64) for a in (open, high, low, close, volume)
        ]
        lengths = {a.shape for a in arrays}
        if len(lengths) != 1 or arrays[0].ndim != 1:
            raise BarDataError(f"bar columns must be 1-D and of equal length, got shapes {sorted(lengths)}")
        return cls(*arrays)

    @classmethod
    def from_pandas(cls, frame) -> Bars:
        """Bars from a pandas DataFrame: a DatetimeIndex (any unit, any time zone) or a time column, and open,
        high, low, close, volume; validated like a CSV (needs the pandas extra; see market.pandas_io)."""
        from market.pandas_io import bars_from_pandas

        return bars_from_pandas(frame)

    def to_pandas(self):
        """The bars as a pandas DataFrame with a UTC DatetimeIndex named time (needs the pandas extra)."""
        try:
            from market.pandas_io import bars_to_pandas
        except ImportError:
            raise BarDataError("Bars.to_pandas needs pandas: pip install 'tactical-engine[pandas]'") from None
        return bars_to_pandas(self)

    def __len__(self) -> int:
        return int(self.close.shape[0])

    def __getitem__(self, index: slice) -> Bars:
        """A slice of the series (views, no copies)."""
        if not isinstance(index, slice):
            raise TypeError("Bars supports slicing only")
        return Bars(*(getattr(self, f)[index] for f in ("time", "open", "high", "low", "close", "volume")))

    def bar(self, i: int) -> Bar:
        """Bar i, as a live stream would send it."""
        return Bar(int(self.time[i]), float(self.open[i]), float(self.high[i]), float(self.low[i]),
                   float(self.close[i]), float(self.volume[i]))

    def append(self, bar: Bar) -> Bars:
        """A new series with `bar` after these."""
        return Bars(*(np.append(getattr(self, f), value) for f, value in zip(
            ("time", "open", "high", "low", "close", "volume"), bar, strict=True)))


def bar_stamp(time_ms: int) -> str:
    """A bar's time for people and files: ISO 8601 UTC (milliseconds since the epoch when out of range)."""
    try:
        return dt.datetime.fromtimestamp(time_ms / 1000, tz=dt.UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{time_ms} ms"


def validate_bars(bars: Bars, *, min_bars: int = 1, name_of: Callable[[int], str] | None = None) -> None:
    """Raise BarDataError for the first bar that breaks the contract.

    `name_of(i)` says how to refer to bar i in the message (a CSV loader names file lines);
    by default bars are named by their 0-based index.
    """
    n = len(bars)
    if n < min_bars:
        raise BarDataError(f"need at least {min_bars} bars, got {n}")
    o, h, lo, c, v, t = bars.open, bars.high, bars.low, bars.close, bars.volume, bars.time

    def name(i: int) -> str:
        return name_of(i) if name_of is not None else f"bar {i}"

    checks = (
        (~(np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c) & np.isfinite(v)),
         lambda i: f"non-finite value (open={o[i]}, high={h[i]}, low={lo[i]}, close={c[i]}, volume={v[i]})"),
        (~((o > 0) & (h > 0) & (lo > 0) & (c > 0)),
         lambda i: f"prices must be positive (open={o[i]}, high={h[i]}, low={lo[i]}, close={c[i]})"),
        (h < lo, lambda i: f"high {h[i]} is below low {lo[i]}"),
        ((o < lo) | (o > h), lambda i: f"open {o[i]} is outside [low {lo[i]}, high {h[i]}]"),
        ((c < lo) | (c > h), lambda i: f"close {c[i]} is outside [low {lo[i]}, high {h[i]}]"),
        (v < 0, lambda i: f"negative volume {v[i]}"),
    )
    first: tuple[int, str] | None = None
    for bad, describe in checks:
        idx = np.flatnonzero(bad)
        if idx.size and (first is None or idx[0] < first[0]):
            first = (int(idx[0]), describe(int(idx[0])))
    back = np.flatnonzero(t[1:] <= t[:-1])
    if back.size and (first is None or back[0] + 1 < first[0]):
        i = int(back[0]) + 1
        first = (i, f"time {bar_stamp(int(t[i]))} is not after the previous bar's {bar_stamp(int(t[i - 1]))} "
                    f"(bars out of time order)")
    if first is not None:
        error = BarDataError(f"{name(first[0])}: {first[1]}")
        error.bar = first[0]
        raise error
