"""Backtest accounting on hand-built prices whose results are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from market.performance import backtest, bars_per_year

MINUTE = 60_000


def times(n):
    return np.arange(n, dtype=np.int64) * MINUTE


def test_long_through_a_rise_without_costs():
    close = np.array([100.0, 101, 102, 103])
    r = backtest("long", np.ones(3), close, times(4), cost=0.0)
    assert r.total_return == pytest.approx(0.03)
    assert r.trades == 1 and r.win_rate == 1.0 and r.exposure == 1.0
    assert r.max_drawdown == pytest.approx(0.0)
    assert r.turnover == pytest.approx(1 / 3)
    np.testing.assert_allclose(r.equity, close[1:] / 100)


def test_costs_are_charged_per_unit_of_position_change():
    close = np.full(5, 100.0)
    r = backtest("flip", np.array([1.0, 1, -1, -1]), close, times(5), cost=0.001)
    assert r.total_return == pytest.approx(np.exp(-0.003) - 1)  # enter 1 unit, flip 2 units
    assert r.trades == 2 and r.win_rate == 0.0
    assert r.turnover == pytest.approx(3 / 4)


def test_flat_earns_nothing_and_has_no_trades():
    close = np.array([100.0, 90, 120, 80])
    r = backtest("flat", np.zeros(3), close, times(4), cost=0.01)
    assert r.total_return == 0 and r.trades == 0 and np.isnan(r.win_rate) and r.exposure == 0
    assert r.sharpe == 0 and r.max_drawdown == 0


def test_drawdown_win_rate_and_trade_accounting():
    close = np.array([100.0, 110, 99, 99, 108.9])
    positions = np.array([1.0, 1, 0, 1])  # +10%, -10% (trade 1 loses overall), flat, +10% (trade 2 wins)
    r = backtest("mixed", positions, close, times(5), cost=0.0)
    assert r.trades == 2 and r.win_rate == 0.5
    assert r.max_drawdown == pytest.approx(0.1)
    assert r.equity[-1] == pytest.approx(1.1 * 0.9 * 1.1)


def test_annualization_from_the_bar_count_over_the_calendar_span():
    assert bars_per_year(times(10)) == pytest.approx(365.25 * 24 * 60)
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0001, 0.001, 2001)))
    r = backtest("long", np.ones(2000), close, times(2001), cost=0.0)
    pnl = np.diff(np.log(close))
    assert r.sharpe == pytest.approx(pnl.mean() / pnl.std() * np.sqrt(365.25 * 24 * 60))
    assert r.annual_return is None  # 2,000 minutes: no extrapolation to a year


def test_length_mismatch_is_refused():
    with pytest.raises(ValueError, match="3 positions need 4 closes"):
        backtest("x", np.ones(3), np.ones(3), times(3), cost=0.0)
