"""Seeded synthetic OHLCV with regimes, for training, tests and demos.

Regimes follow one another with geometric durations:
- trend up / trend down: a persistent drift, so past momentum predicts the next return
  (the learnable edge the training test relies on);
- mean reversion: negatively autocorrelated returns (an MA(1) with a negative coefficient);
- volatility burst: no drift, several times the usual volatility and volume.
Volume is lognormal around a base with an intraday U shape, and rises with the size of the
move. The same seed and parameters always give the same series.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from market.bars import Bars

if TYPE_CHECKING:
    from tactical.config import SyntheticConfig

TREND_UP, TREND_DOWN, MEAN_REVERSION, VOL_BURST = range(4)
REGIME_NAMES = ("trend_up", "trend_down", "mean_reversion", "volatility_burst")


@dataclass(frozen=True)
class SyntheticParams:
    """Shape of the synthetic market. Volatilities and drifts are per bar, in log return."""

    sigma: float = 0.001  # per-bar volatility in calm regimes (0.1%)
    trend_drift: float = 0.25  # drift in trends, as a multiple of sigma
    mean_reversion: float = 0.5  # MA(1) coefficient magnitude in mean-reversion regimes
    burst_vol: float = 3.0  # volatility multiple in bursts
    mean_duration: float = 120.0  # mean regime length in bars (bursts last a quarter of this)
    regime_probs: tuple[float, float, float, float] = (0.25, 0.25, 0.35, 0.15)
    base_volume: float = 1000.0
    start_price: float = 100.0
    start_ms: int = 1_704_067_200_000  # 2024-01-01T00:00:00Z
    bar_ms: int = 60_000  # one-minute bars


@dataclass(frozen=True)
class SyntheticSeries:
    bars: Bars
    regimes: np.ndarray  # int8 regime id per bar (see REGIME_NAMES)


def generate(n: int, seed: int = 0, params: SyntheticParams = SyntheticParams()) -> SyntheticSeries:
    """`n` bars of synthetic market, reproducible from `seed`."""
    if n < 1:
        raise ValueError(f"need at least one bar, got {n}")
    rng = np.random.default_rng(seed)
    p = params

    # Regime path: draw enough regimes to cover n bars, each with a geometric duration.
    k = max(8, int(2 * n / p.mean_duration) + 8)
    while True:
        kinds = rng.choice(4, size=k, p=np.asarray(p.regime_probs) / sum(p.regime_probs))
        means = np.where(kinds == VOL_BURST, p.mean_duration / 4, p.mean_duration)
        lengths = rng.geometric(1.0 / means)
        if lengths.sum() >= n:
            break
        k *= 2
    regimes = np.repeat(kinds, lengths)[:n].astype(np.int8)

    # Returns.
    sigma = np.where(regimes == VOL_BURST, p.sigma * p.burst_vol, p.sigma)
    eps = rng.standard_normal(n + 1)
    shocks = sigma * eps[1:]
    drift = np.select([regimes == TREND_UP, regimes == TREND_DOWN], [1.0, -1.0], 0.0) * p.trend_drift * p.sigma
    reversion = np.where(regimes == MEAN_REVERSION, -p.mean_reversion * sigma * eps[:-1], 0.0)
    returns = drift + shocks + reversion

    # Prices: each bar opens near the previous close; high and low extend past open and close.
    open_gap = 0.1 * sigma * rng.standard_normal(n)
    log_open = np.log(p.start_price) + np.concatenate(([0.0], np.cumsum(returns[:-1] + open_gap[1:])))
    log_close = log_open + returns
    wick_up = np.abs(rng.standard_normal(n)) * 0.5 * sigma
    wick_down = np.abs(rng.standard_normal(n)) * 0.5 * sigma
    open_ = np.exp(log_open)
    close = np.exp(log_close)
    high = np.maximum(open_, close) * np.exp(wick_up)
    low = np.minimum(open_, close) * np.exp(-wick_down)

    # Volume: lognormal noise, intraday U shape, more volume on bigger moves and in bursts.
    minute_of_day = ((p.start_ms // p.bar_ms + np.arange(n)) * (p.bar_ms / 60_000)) % 1440
    u_shape = 1.0 + 0.6 * np.cos(2 * np.pi * minute_of_day / 1440) ** 2
    move = np.abs(returns) / p.sigma
    volume = p.base_volume * u_shape * np.exp(0.35 * rng.standard_normal(n)) * (0.6 + 0.4 * move)
    volume = np.round(volume)

    time = p.start_ms + np.arange(n, dtype=np.int64) * p.bar_ms
    return SyntheticSeries(Bars.from_arrays(time, open_, high, low, close, volume), regimes)


def synthetic_bars(n: int, seed: int = 0, params: SyntheticParams = SyntheticParams()) -> Bars:
    """Just the bars of `generate`."""
    return generate(n, seed, params).bars


def configured(cfg: SyntheticConfig) -> SyntheticSeries:
    """The series a config's `synthetic:` section describes (what train, tune and backtest use)."""
    params = SyntheticParams(sigma=cfg.sigma, trend_drift=cfg.trend_drift, mean_reversion=cfg.mean_reversion,
                             burst_vol=cfg.burst_vol, mean_duration=cfg.mean_duration)
    return generate(cfg.bars, cfg.seed, params)


def series_source(data: str | Path | None, cfg: SyntheticConfig) -> str:
    """Which bars a run used: the CSV's absolute path, or the configured synthetic series' identity.

    A version records it when trained; a backtest compares it with its own to say whether it
    runs on the same bars (then in or out of sample by time) or on other ones.
    """
    if data:
        return str(Path(data).resolve())
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode()).hexdigest()[:12]
    return f"synthetic (seed {cfg.seed}, {cfg.bars:,} bars, parameters {digest})"
