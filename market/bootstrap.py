"""Confidence intervals for Sharpe ratios by a circular moving-block bootstrap of per-bar P&L.

Per-bar P&L of a trading policy is serially dependent (positions persist, volatility clusters),
so resampling single bars understates the uncertainty. Resampling blocks of consecutive bars
keeps the dependence within a block; the circular version (blocks wrap around the end) gives
every bar the same chance to be drawn. The default block length is n^(1/3), the order that
minimizes the error of block-bootstrap distribution estimates (Hall, Horowitz and Jing, 1995),
at least 1; give a longer one when positions are held for longer than that.

Several series (a model and its baselines over the same bars) are resampled with the same
blocks, so the interval of a difference of Sharpe ratios accounts for their correlation.
Intervals are percentile intervals; seeded, so a report is reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from market.performance import sharpe_ratio

# Indices drawn per chunk of resamples (memory: 8 bytes each, then the gathered P&L of every series).
_CHUNK_ELEMENTS = 4_000_000


def default_block(n: int) -> int:
    """n^(1/3) bars, rounded, at least 1."""
    return max(1, round(n ** (1 / 3)))


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class SharpeIntervals:
    sharpe: dict[str, Interval]  # per series
    difference: dict[str, Interval]  # per series: its Sharpe minus the reference's
    reference: str | None
    confidence: float
    block: int
    samples: int
    seed: int


def _block_indices(rng: np.random.Generator, n: int, block: int, samples: int) -> np.ndarray:
    """(samples, n) indices: ceil(n / block) blocks of consecutive bars from uniform starts, wrapping around."""
    blocks = -(-n // block)
    starts = rng.integers(0, n, size=(samples, blocks, 1))
    return ((starts + np.arange(block)) % n).reshape(samples, blocks * block)[:, :n]


def _sharpes(pnl: np.ndarray, periods_per_year: float) -> np.ndarray:
    """Annualized Sharpe ratio of every row (0 where a row has no variance, as market.performance says)."""
    std = pnl.std(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 0, pnl.mean(axis=1) / std * np.sqrt(periods_per_year), 0.0)


def sharpe_intervals(series: Mapping[str, np.ndarray], periods_per_year: float, *, reference: str | None = None,
                     confidence: float = 0.95, samples: int = 2000, block: int | None = None,
                     seed: int = 0) -> SharpeIntervals:
    """Percentile intervals of each series' annualized Sharpe ratio and of its difference to `reference`'s.

    All series hold per-bar log P&L over the same bars; they are resampled with the same blocks.
    """
    names = list(series)
    data = np.stack([np.asarray(series[name], dtype=np.float64) for name in names])
    n = data.shape[1]
    if n < 2:
        raise ValueError(f"a bootstrap needs at least 2 bars, got {n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if reference is not None and reference not in series:
        raise ValueError(f"reference {reference!r} is not one of the series {names}")
    block = default_block(n) if block is None else block
    if not 1 <= block <= n:
        raise ValueError(f"block length must be between 1 and the {n} bars, got {block}")
    rng = np.random.default_rng(seed)
    draws = np.empty((len(names), samples))
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, samples, chunk):
        count = min(chunk, samples - start)
        indices = _block_indices(rng, n, block, count)
        for s in range(len(names)):
            draws[s, start:start + count] = _sharpes(data[s][indices], periods_per_year)
    tail = (1 - confidence) / 2 * 100
    estimates = {name: sharpe_ratio(data[s], periods_per_year) for s, name in enumerate(names)}

    def interval(estimate: float, values: np.ndarray) -> Interval:
        low, high = np.percentile(values, [tail, 100 - tail])
        return Interval(estimate, float(low), float(high))

    sharpe = {name: interval(estimates[name], draws[s]) for s, name in enumerate(names)}
    difference = {}
    if reference is not None:
        r = names.index(reference)
        difference = {name: interval(estimates[name] - estimates[reference], draws[s] - draws[r])
                      for s, name in enumerate(names) if s != r}
    return SharpeIntervals(sharpe, difference, reference, confidence, block, samples, seed)


def mean_interval(series: np.ndarray, *, confidence: float = 0.95, samples: int = 2000, block: int | None = None,
                  seed: int = 0) -> Interval:
    """Percentile interval of the mean of one per-bar series (e.g. the paired P&L differences of two
    policies over the same bars), by the same circular block bootstrap."""
    data = np.asarray(series, dtype=np.float64)
    n = data.shape[0]
    if n < 2:
        raise ValueError(f"a bootstrap needs at least 2 bars, got {n}")
    block = default_block(n) if block is None else min(block, n)
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, samples, chunk):
        count = min(chunk, samples - start)
        means[start:start + count] = data[_block_indices(rng, n, block, count)].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(data.mean()), float(low), float(high))
