"""Bars on real markets' calendars, for tests that must not assume a market trading around the clock."""

from __future__ import annotations

import datetime as dt

import numpy as np

from market.bars import Bars

HOUR_MS = 3_600_000
# NYSE full-day closures of 2016-2018 (New Year, MLK, Presidents, Good Friday, Memorial, Independence,
# Labor, Thanksgiving, Christmas; the 2018 day of mourning).
NYSE_HOLIDAYS = {dt.date(*d) for d in (
    (2016, 1, 1), (2016, 1, 18), (2016, 2, 15), (2016, 3, 25), (2016, 5, 30), (2016, 7, 4), (2016, 9, 5),
    (2016, 11, 24), (2016, 12, 26), (2017, 1, 2), (2017, 1, 16), (2017, 2, 20), (2017, 4, 14), (2017, 5, 29),
    (2017, 7, 4), (2017, 9, 4), (2017, 11, 23), (2017, 12, 25), (2018, 1, 1), (2018, 1, 15), (2018, 2, 19),
    (2018, 3, 30), (2018, 5, 28), (2018, 7, 4), (2018, 9, 3), (2018, 11, 22), (2018, 12, 5), (2018, 12, 25))}


def _bars(time_ms: np.ndarray, seed: int, sigma: float, gap_sigma: np.ndarray) -> Bars:
    """A random walk on the given times: each open gaps from the previous close, each close moves from its open."""
    rng = np.random.default_rng(seed)
    n = len(time_ms)
    gaps = rng.normal(0, 1, n) * gap_sigma
    moves = rng.normal(0.00002, sigma, n)
    log_close = np.log(1.1) + np.cumsum(gaps + moves)
    close = np.exp(log_close)
    open_ = np.exp(log_close - moves)
    spread = np.abs(rng.normal(0, sigma, n))
    return Bars.from_arrays(time_ms, open_, np.maximum(open_, close) * (1 + spread),
                            np.minimum(open_, close) * (1 - spread), close, rng.integers(100, 10_000, n))


def hourly_fx_bars(first_year: int = 2017, last_year: int = 2018, seed: int = 0) -> Bars:
    """Hourly bars of a 24x5 market: Sunday 22:00 to Friday 21:59 UTC, closed on Christmas and New Year's day;
    weekend gaps in the opens."""
    start = dt.datetime(first_year, 1, 1, tzinfo=dt.UTC)
    hours = int((dt.datetime(last_year + 1, 1, 1, tzinfo=dt.UTC) - start).total_seconds() // 3600)
    stamps = [start + dt.timedelta(hours=h) for h in range(hours)]
    keep = [s for s in stamps
            if not (s.weekday() == 5 or (s.weekday() == 4 and s.hour >= 22) or (s.weekday() == 6 and s.hour < 22))
            and (s.month, s.day) not in ((12, 25), (1, 1))]
    time_ms = np.array([int(s.timestamp() * 1000) for s in keep], dtype=np.int64)
    gap_sigma = np.where(np.diff(time_ms, prepend=time_ms[0] - HOUR_MS) > HOUR_MS, 0.004, 0.0)
    return _bars(time_ms, seed, 0.0012, gap_sigma)


def daily_stock_bars(first_year: int = 2016, last_year: int = 2018, seed: int = 0) -> Bars:
    """Daily bars of a US stock: one per NYSE trading day (weekdays but holidays), stamped at the 21:00 UTC close,
    the overnight gap in every open."""
    day, days = dt.date(first_year, 1, 1), []
    while day.year <= last_year:
        if day.weekday() < 5 and day not in NYSE_HOLIDAYS:
            days.append(day)
        day += dt.timedelta(days=1)
    time_ms = np.array([int(dt.datetime(d.year, d.month, d.day, 21, tzinfo=dt.UTC).timestamp() * 1000) for d in days],
                       dtype=np.int64)
    return _bars(time_ms, seed, 0.012, np.full(len(days), 0.004))
