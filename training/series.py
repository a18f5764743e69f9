"""The bar series the trading environment plays on: features, next-bar returns, train/held-out split.

Features are computed once for the whole series (they are causal, so a window never sees a
later bar) and every observation is a view into that one array. A decision at bar t earns the
log return from close[t] to close[t + 1]. The held-out tail is split on those return
intervals: no reward the trainer sees uses a price of the tail, and evaluation walks the tail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from market.bars import BarDataError, Bars
from market.features import compute_features
from market.synthetic import configured
from market.windows import all_windows, decision_range
from tactical.config import Config

TRAIN, HOLDOUT = "train", "holdout"


@dataclass(frozen=True)
class TradingSeries:
    """Precomputed inputs of the environment for one bar series."""

    features: np.ndarray  # (N, 7) float32
    windows: np.ndarray  # (N - window + 1, window, 7) read-only view; windows[t - window + 1] ends at bar t
    next_log_return: np.ndarray  # (N,) float64, log(close[t + 1] / close[t]); NaN at the last bar
    window: int
    min_bars: int  # history a decision needs (features.min_bars)
    split: int  # first bar of the held-out tail
    bars: Bars  # the prices and times the returns come from (validation scores them like a backtest)

    @classmethod
    def from_bars(cls, bars: Bars, cfg: Config) -> TradingSeries:
        """Features and returns of `bars`; the last training.holdout_fraction of the bars is held out."""
        n, window = len(bars), cfg.features.window
        features = compute_features(bars, cfg.features)
        next_log_return = np.full(n, np.nan)
        next_log_return[:-1] = np.diff(np.log(bars.close))
        split = n - round(n * cfg.training.holdout_fraction)
        min_bars = cfg.features.min_bars
        series = cls(features, all_windows(features, window), next_log_return, window, min_bars, split, bars)
        need = min_bars + cfg.training.episode_length
        if split < need:
            raise BarDataError(f"{n} bars are too few to train on: one {cfg.training.episode_length}-step episode "
                               f"after {min_bars} bars of history (a {window}-bar window and its features' warm-up) "
                               f"needs {need} bars before the held-out tail "
                               f"(holdout_fraction {cfg.training.holdout_fraction}), got {split}")
        return series

    @classmethod
    def synthetic(cls, cfg: Config) -> TradingSeries:
        """The series of the config's `synthetic:` section."""
        return cls.from_bars(configured(cfg.synthetic).bars, cfg)

    def decision_bars(self, part: str) -> tuple[int, int]:
        """First and last bar (inclusive) at which a decision is taken in `part` (TRAIN or HOLDOUT).

        The rule of market.windows.decision_range; training returns end at close[split - 1],
        held-out returns start there.
        """
        if part == TRAIN:
            return decision_range(len(self.features), self.min_bars, last=self.split - 2)
        if part == HOLDOUT:
            return decision_range(len(self.features), self.min_bars, first=self.split - 1)
        raise ValueError(f"unknown part {part!r}, expected {TRAIN!r} or {HOLDOUT!r}")

    def window_at(self, bars: np.ndarray | int) -> np.ndarray:
        """The observation window(s) ending at bar(s) `bars`: a view for one bar, a gathered copy for many."""
        if isinstance(bars, (int, np.integer)):
            return self.windows[int(bars) - (self.window - 1)]
        return self.windows[np.asarray(bars) - (self.window - 1)]
