"""Backtest accounting: positions held bar to bar, with transaction costs, and the usual statistics.

A decision at bar t sets the position held from close[t] to close[t + 1]; it earns
position * log(close[t + 1] / close[t]) and pays `cost` per unit of position change (the same
accounting as the training reward, before its scale). Statistics are computed on that log
P&L: equity = exp(cumulative P&L). Annualization uses the bar frequency read off the
timestamps (median spacing), assuming the market trades around the clock at that spacing;
for session markets it overstates the bars per year.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import numpy as np

MS_PER_YEAR = 365.25 * 24 * 3600 * 1000


def position_log_pnl(positions: np.ndarray, previous: np.ndarray, next_log_return: np.ndarray,
                     cost: float) -> np.ndarray:
    """Per-bar log P&L of holding `positions` over the next bar after holding `previous`."""
    return positions * next_log_return - cost * np.abs(positions - previous)


def bars_per_year(time_ms: np.ndarray) -> float:
    """Bars a year at the series' median bar spacing."""
    spacing = float(np.median(np.diff(time_ms))) if len(time_ms) > 1 else 0.0
    if spacing <= 0:
        raise ValueError("cannot infer the bar frequency: timestamps are not increasing")
    return MS_PER_YEAR / spacing


@dataclass(frozen=True)
class BacktestReport:
    name: str
    bars: int
    total_return: float  # fraction, e.g. 0.05 = +5%
    annual_return: float
    sharpe: float  # annualized, on per-bar log P&L, zero risk-free rate
    max_drawdown: float  # fraction of the running peak, >= 0
    trades: int  # runs of one non-flat position
    win_rate: float  # share of trades with positive P&L after costs (NaN without trades)
    exposure: float  # share of bars in a position
    turnover: float  # units of position traded per bar
    equity: np.ndarray = field(repr=False)  # equity after each bar, starting from 1

    def summary(self) -> dict[str, float | int | str]:
        out = asdict(self)
        out.pop("equity")
        return out


def backtest(name: str, positions: np.ndarray, close: np.ndarray, time_ms: np.ndarray, cost: float) -> BacktestReport:
    """Score positions[i] held from close[i] to close[i + 1]; needs len(close) == len(positions) + 1."""
    positions = np.asarray(positions, dtype=np.float64)
    n = positions.shape[0]
    if close.shape[0] != n + 1:
        raise ValueError(f"{n} positions need {n + 1} closes, got {close.shape[0]}")
    previous = np.concatenate(([0.0], positions[:-1]))
    pnl = position_log_pnl(positions, previous, np.diff(np.log(close)), cost)
    log_equity = np.cumsum(pnl)
    equity = np.exp(log_equity)
    per_year = bars_per_year(time_ms)
    total = float(equity[-1] - 1) if n else 0.0
    std = float(pnl.std())
    peak = np.maximum.accumulate(np.concatenate(([0.0], log_equity)))[1:]
    drawdown = float(np.max(1 - np.exp(log_equity - peak))) if n else 0.0

    # Trades: maximal runs of one non-zero position. A run's P&L is its bars' P&L plus its exit
    # cost (charged on the bar after it) minus the previous position's exit cost (charged on
    # its first bar), so a flip's cost is split between the trade closed and the one opened.
    bounds = np.concatenate(([0], np.flatnonzero(np.diff(positions)) + 1, [n]))
    trade_pnl = []
    for start, end in itertools.pairwise(bounds):
        held = positions[start]
        if held != 0:
            entered_from = positions[start - 1] if start > 0 else 0.0
            exit_cost = cost * abs(held) if end < n else 0.0  # still open at the end: marked to market
            trade_pnl.append(pnl[start:end].sum() + cost * abs(entered_from) - exit_cost)
    trades = len(trade_pnl)
    with np.errstate(over="ignore"):  # a short, lucky run annualizes to infinity; say so rather than warn
        annual = float(np.exp(log_equity[-1] * per_year / n) - 1) if n else 0.0
    return BacktestReport(
        name=name, bars=n, total_return=total,
        annual_return=annual,
        sharpe=float(pnl.mean() / std * np.sqrt(per_year)) if std > 0 else 0.0,
        max_drawdown=drawdown, trades=trades,
        win_rate=float(np.mean(np.asarray(trade_pnl) > 0)) if trades else float("nan"),
        exposure=float(np.mean(positions != 0)) if n else 0.0,
        turnover=float(np.abs(positions - previous).sum() / n) if n else 0.0,
        equity=equity)
