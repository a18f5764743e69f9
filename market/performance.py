"""Backtest accounting: positions held bar to bar, with transaction costs, and the usual statistics.

A decision at bar t sets the position held to bar t + 1. With fills at the close the decision
saw (FILL_CLOSE), it earns position * log(close[t + 1] / close[t]); with fills at the next bar's
open (FILL_NEXT_OPEN: the decision needs time to reach the market), the previous position is still
held over the gap from close[t] to open[t + 1] and the new one earns log(close[t + 1] / open[t + 1]).
Either way `cost` is paid per unit of position change (the same accounting as the training
reward, before its scale), and equity is marked at every close: equity = exp(cumulative log P&L).

Annualization uses the bars the series actually has per year: bar intervals over calendar time,
so a market that trades 24x5 (about 6,200 hourly bars a year) or on sessions (about 252 daily
bars) is not annualized as if it traded around the clock. An annual (compound) return is given
only for spans of a year or more; extrapolating a few weeks to a year says nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from market.bars import Bars

MS_PER_YEAR = 365.25 * 24 * 3600 * 1000
FILL_CLOSE, FILL_NEXT_OPEN = "close", "next-open"
FILLS = (FILL_CLOSE, FILL_NEXT_OPEN)


def position_log_pnl(positions: np.ndarray, previous: np.ndarray, next_log_return: np.ndarray, cost: float,
                     gap_log_return: np.ndarray | None = None) -> np.ndarray:
    """Per-bar log P&L of holding `positions` over the next bar after holding `previous`.

    Fills at the close: `next_log_return` is close to next close. Fills at the next open: pass
    `gap_log_return` (close to next open, still earned by `previous`) and, as `next_log_return`,
    the next bar's open to close.
    """
    pnl = positions * next_log_return - cost * np.abs(positions - previous)
    return pnl if gap_log_return is None else pnl + previous * gap_log_return


def bars_per_year(time_ms: np.ndarray) -> float:
    """Bar intervals a year over the series' calendar span: what the market actually trades, sessions,
    weekends and holidays included (hourly FX about 6,200, daily stocks about 252)."""
    span = float(time_ms[-1] - time_ms[0]) if len(time_ms) > 1 else 0.0
    if span <= 0:
        raise ValueError("cannot infer the bars per year: fewer than two bars, or timestamps not increasing")
    return (len(time_ms) - 1) / (span / MS_PER_YEAR)


def sharpe_ratio(pnl: np.ndarray, periods_per_year: float) -> float:
    """Annualized Sharpe ratio of per-bar log P&L: mean / std (population) * sqrt(bars a year); 0 without risk."""
    std = float(pnl.std()) if pnl.size else 0.0
    return float(pnl.mean() / std * np.sqrt(periods_per_year)) if std > 0 else 0.0


@dataclass(frozen=True)
class BacktestReport:
    name: str
    bars: int
    total_return: float  # fraction, e.g. 0.05 = +5%
    annual_return: float | None  # compound, over the calendar span; None for spans under a year
    sharpe: float  # annualized, on per-bar log P&L, zero risk-free rate
    max_drawdown: float  # fraction of the running peak, >= 0
    trades: int  # runs of one non-flat position
    win_rate: float  # share of trades with positive P&L after costs (NaN without trades)
    exposure: float  # share of bars in a position
    turnover: float  # units of position traded per bar
    periods_per_year: float  # the bars a year the Sharpe ratio was annualized with
    years: float  # calendar span of the scored bars
    equity: np.ndarray = field(repr=False)  # equity after each bar, starting from 1
    pnl: np.ndarray = field(repr=False)  # log P&L of each bar, after costs
    trade_pnl: np.ndarray = field(repr=False)  # log P&L of each trade, after costs

    def summary(self) -> dict[str, float | int | str | None]:
        out = asdict(self)
        for series in ("equity", "pnl", "trade_pnl"):
            out.pop(series)
        return out


def _report(name: str, pnl: np.ndarray, trade_pnl: np.ndarray, exposed: int, traded: float, span_ms: float,
            periods_per_year: float) -> BacktestReport:
    """The statistics of per-bar log P&L and per-trade log P&L (exposed: bars in a position; traded: units)."""
    n = pnl.shape[0]
    log_equity = np.cumsum(pnl)
    peak = np.maximum.accumulate(np.concatenate(([0.0], log_equity)))[1:]
    years = span_ms / MS_PER_YEAR
    annual = None
    if n and years >= 1:
        with np.errstate(over="ignore"):
            annual = float(np.exp(log_equity[-1] / years) - 1)
    trades = int(trade_pnl.size)
    return BacktestReport(
        name=name, bars=n, total_return=float(np.exp(log_equity[-1]) - 1) if n else 0.0, annual_return=annual,
        sharpe=sharpe_ratio(pnl, periods_per_year),
        max_drawdown=float(np.max(1 - np.exp(log_equity - peak))) if n else 0.0, trades=trades,
        win_rate=float(np.mean(trade_pnl > 0)) if trades else float("nan"),
        exposure=exposed / n if n else 0.0, turnover=traded / n if n else 0.0,
        periods_per_year=periods_per_year, years=years,
        equity=np.exp(log_equity), pnl=pnl, trade_pnl=trade_pnl)


def backtest(name: str, positions: np.ndarray, close: np.ndarray, time_ms: np.ndarray, cost: float, *,
             open_: np.ndarray | None = None, fill: str = FILL_CLOSE,
             periods_per_year: float | None = None) -> BacktestReport:
    """Score positions[i] held from bar i to bar i + 1 (starting flat); needs len(close) == len(positions) + 1.

    `open_` (aligned with `close`) is needed for FILL_NEXT_OPEN. `periods_per_year`: the bars a year
    to annualize with, best read off the whole series (bars_per_year(all its times)); by default
    from `time_ms` alone.
    """
    positions = np.asarray(positions, dtype=np.float64)
    n = positions.shape[0]
    if close.shape[0] != n + 1:
        raise ValueError(f"{n} positions need {n + 1} closes, got {close.shape[0]}")
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}, expected one of {', '.join(FILLS)}")
    previous = np.concatenate(([0.0], positions[:-1]))
    log_close = np.log(close)
    if fill == FILL_CLOSE:
        earned = np.diff(log_close)
        pnl = position_log_pnl(positions, previous, earned, cost)
        own = positions * earned  # the price P&L of the position decided at each bar
    else:
        if open_ is None or open_.shape != close.shape:
            raise ValueError(f"fill {FILL_NEXT_OPEN} needs the opens, aligned with the closes")
        log_open = np.log(open_[1:])
        gap, intrabar = log_open - log_close[:-1], log_close[1:] - log_open
        pnl = position_log_pnl(positions, previous, intrabar, cost, gap)
        own = positions * intrabar + positions * np.append(gap[1:], 0.0)  # held over the next gap too

    # Trades: maximal runs of one non-zero position, each paying its entry and its exit (a flip's cost
    # split between the trade closed and the one opened); one still open at the end is marked to market.
    bounds = np.concatenate(([0], np.flatnonzero(np.diff(positions)) + 1, [n]))
    trade_pnl = [own[start:end].sum() - cost * abs(positions[start]) * (1 + (end < n))
                 for start, end in itertools.pairwise(bounds) if positions[start] != 0]
    per_year = bars_per_year(time_ms) if periods_per_year is None else periods_per_year
    return _report(name, pnl, np.asarray(trade_pnl, dtype=np.float64), int(np.count_nonzero(positions)),
                   float(np.abs(positions - previous).sum()), float(time_ms[-1] - time_ms[0]), per_year)


def score_range(bars: Bars, first: int, last: int, candidates: dict[str, np.ndarray], cost: float, fill: str,
                periods_per_year: float) -> dict[str, BacktestReport]:
    """Reports of each candidate's positions at decision bars first..last, on the same bars, fill and costs."""
    close, open_ = bars.close[first:last + 2], bars.open[first:last + 2]
    time = bars.time[first:last + 2]
    return {name: backtest(name, p, close, time, cost, open_=open_, fill=fill, periods_per_year=periods_per_year)
            for name, p in candidates.items()}


def stitch(name: str, segments: Sequence[BacktestReport], periods_per_year: float) -> BacktestReport:
    """One report over consecutive segments scored separately (walk-forward): their bars and trades in
    order, as one equity curve; the calendar span is the segments' spans added up."""
    return _report(name, np.concatenate([s.pnl for s in segments]), np.concatenate([s.trade_pnl for s in segments]),
                   round(sum(s.exposure * s.bars for s in segments)), sum(s.turnover * s.bars for s in segments),
                   sum(s.years for s in segments) * MS_PER_YEAR, periods_per_year)
