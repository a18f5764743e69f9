"""Observation windows: the last `bars` feature rows ending at a bar, one or all at once; which bars to decide at."""

from __future__ import annotations

import numpy as np


def last_window(features: np.ndarray, end: int, bars: int = 60) -> np.ndarray:
    """Rows end-bars+1 .. end (inclusive) of `features`, a (bars, F) view; needs end >= bars - 1."""
    if not 0 <= end < features.shape[0]:
        raise IndexError(f"bar {end} is outside a series of {features.shape[0]} bars")
    if end < bars - 1:
        raise ValueError(f"bar {end} has only {end + 1} bars of history, a window needs {bars}")
    return features[end - bars + 1:end + 1]


def all_windows(features: np.ndarray, bars: int = 60) -> np.ndarray:
    """Every window of the series as one read-only strided view of shape (N - bars + 1, bars, F).

    Window i ends at bar i + bars - 1. No data is copied: the view shares memory with
    `features`, which is why it is read-only.
    """
    n, f = features.shape
    if n < bars:
        return np.empty((0, bars, f), dtype=features.dtype)
    s0, s1 = features.strides
    return np.lib.stride_tricks.as_strided(features, shape=(n - bars + 1, bars, f), strides=(s0, s0, s1),
                                           writeable=False)


def decision_range(n_bars: int, min_bars: int, first: int = 0, last: int | None = None) -> tuple[int, int]:
    """First and last bar (inclusive) of [first, last] at which a decision can be taken and scored.

    The one rule for training, evaluation and backtests: a decision at bar t needs `min_bars` bars
    of history (features.min_bars: the window plus the features' warm-up, exactly what the served
    path computes from bars) and the bar after t, whose return it earns. The range is empty
    (last < first) when no bar qualifies.
    """
    return max(first, min_bars - 1), min(n_bars - 2, n_bars - 2 if last is None else last)
