"""A backtest that does not flatter: annualized with the bars a market really has, fills at the next open,
annual returns only over a year or more."""

from __future__ import annotations

import numpy as np
import pytest

from market.performance import FILL_NEXT_OPEN, MS_PER_YEAR, backtest, bars_per_year
from market_series import daily_stock_bars, hourly_fx_bars
from tactical.config import default_config
from tactical_engine.backtest import BUY_AND_HOLD, BacktestResult, score

COST = default_config().training.transaction_cost


def buy_and_hold_by_hand(bars, first: int, last: int) -> tuple[float, float]:
    """(bars a year, annualized Sharpe) of buy-and-hold over decision bars first..last, computed plainly:
    bar count over calendar span of the whole series, log returns, the entry cost on the first bar."""
    per_year = (len(bars) - 1) / ((bars.time[-1] - bars.time[0]) / MS_PER_YEAR)
    pnl = np.diff(np.log(bars.close[first:last + 2]))
    pnl[0] -= COST
    return per_year, pnl.mean() / pnl.std() * np.sqrt(per_year)


@pytest.mark.parametrize(("make", "low", "high"), [(hourly_fx_bars, 6_000, 6_300), (daily_stock_bars, 250, 254)])
def test_buy_and_hold_sharpe_is_the_plain_computation_with_the_series_own_bars_per_year(make, low, high):
    bars = make()
    first, last = 91, len(bars) - 2
    result = BacktestResult({}, first, last, bars, np.zeros(last - first + 1))
    score(result, default_config(), seed=0)
    per_year, sharpe = buy_and_hold_by_hand(bars, first, last)
    assert low < per_year < high  # not 8,766 hours nor 365.25 days a year
    report = result.reports[BUY_AND_HOLD]
    assert report.periods_per_year == pytest.approx(per_year)
    assert report.sharpe == pytest.approx(sharpe, rel=1e-9)
    around_the_clock = sharpe * np.sqrt((8766 if make is hourly_fx_bars else 365.25) / per_year)
    assert abs(report.sharpe) < abs(around_the_clock) / 1.09  # what the old annualization overstated


def test_periods_per_year_can_be_given():
    bars = daily_stock_bars()
    result = BacktestResult({}, 91, len(bars) - 2, bars, np.zeros(len(bars) - 92))
    score(result, default_config(), seed=0, periods_per_year=252)
    per_year, sharpe = buy_and_hold_by_hand(bars, 91, len(bars) - 2)
    assert result.reports[BUY_AND_HOLD].sharpe == pytest.approx(sharpe * np.sqrt(252 / per_year))


def test_bars_per_year_counts_intervals_over_the_calendar_span():
    day = 86_400_000
    weekdays = np.array([d * day for d in range(3650) if d % 7 < 5], dtype=np.int64)
    assert bars_per_year(weekdays) == pytest.approx((len(weekdays) - 1) / ((weekdays[-1] - weekdays[0]) / MS_PER_YEAR))
    assert 260 < bars_per_year(weekdays) < 262  # 5/7 of 365.25
    with pytest.raises(ValueError, match="fewer than two bars"):
        bars_per_year(np.array([5]))


def test_annual_return_only_for_a_year_or_more():
    bars = daily_stock_bars()
    year = int(np.searchsorted(bars.time, bars.time[0] + MS_PER_YEAR))  # the first bar a year after the first
    short = backtest("long", np.ones(year - 1), bars.close[:year], bars.time[:year], cost=0.0)
    assert short.annual_return is None and short.years < 1
    long = backtest("long", np.ones(year), bars.close[:year + 1], bars.time[:year + 1], cost=0.0)
    years = (bars.time[year] - bars.time[0]) / MS_PER_YEAR
    assert long.years == pytest.approx(years) and years >= 1
    assert long.annual_return == pytest.approx((bars.close[year] / bars.close[0]) ** (1 / years) - 1)
    assert "annual_return" in long.summary() and "pnl" not in long.summary()


def test_next_open_fills_hold_the_old_position_over_the_gap():
    # close 100 -> open 110 (gap) -> close 121; then open 121 -> close 121
    close = np.array([100.0, 121, 121])
    open_ = np.array([100.0, 110, 121])
    time = np.arange(3) * 60_000
    at_close = backtest("c", np.array([1.0, 0]), close, time, cost=0.0)
    at_open = backtest("o", np.array([1.0, 0]), close, time, cost=0.0, open_=open_, fill=FILL_NEXT_OPEN)
    assert at_close.total_return == pytest.approx(0.21)  # filled at 100, the gap included
    assert at_open.total_return == pytest.approx(0.10)  # filled at the open of 110: only 110 -> 121
    # exiting at the next open: the long is still held over the next gap
    close, open_ = np.array([100.0, 100, 90]), np.array([100.0, 100, 95])
    exit_late = backtest("o", np.array([1.0, 0]), close, time, cost=0.0, open_=open_, fill=FILL_NEXT_OPEN)
    assert exit_late.total_return == pytest.approx(-0.05) and exit_late.trades == 1 and exit_late.win_rate == 0


def test_next_open_trades_add_up_to_the_pnl():
    bars = hourly_fx_bars(2017, 2017, seed=3)
    n = 2000
    rng = np.random.default_rng(1)
    positions = np.repeat(rng.choice([-1.0, 0.0, 1.0], n // 20), 20)
    r = backtest("p", positions, bars.close[:n + 1], bars.time[:n + 1], cost=COST, open_=bars.open[:n + 1],
                 fill=FILL_NEXT_OPEN)
    # each trade carries its own bars, the gap after its last one, its entry and exit costs: nothing is left over
    assert r.trade_pnl.sum() == pytest.approx(r.pnl.sum(), abs=1e-12)
    assert r.trades == int(np.count_nonzero((positions != 0) & (np.diff(positions, prepend=0) != 0)))


def test_next_open_needs_the_opens():
    with pytest.raises(ValueError, match="needs the opens"):
        backtest("x", np.ones(2), np.ones(3), np.arange(3), cost=0.0, fill=FILL_NEXT_OPEN)
    with pytest.raises(ValueError, match="unknown fill"):
        backtest("x", np.ones(2), np.ones(3), np.arange(3), cost=0.0, fill="vwap")
