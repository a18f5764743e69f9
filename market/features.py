"""The seven bar features of DESIGN.md: vectorized numpy, causal, finite and bounded.

A fair value gap (FVG) opens at bar t when `high[t-2] < low[t]` (bullish; the gap spans
(high[t-2], low[t])) or `low[t-2] > high[t]` (bearish; it spans (high[t], low[t-2])). It is
open at ages 0..max_age (age = bars since t) until it is mitigated: price trades back into it,
`low[s] <= low[t]` for a bullish gap and `high[s] >= high[t]` for a bearish one, at some
bar s > t. The mitigation signal fires on that bar s; the gap is no longer open there.

Causality: every value at bar s depends on bars <= s only, so features over a prefix of a
series equal the first rows of features over the whole series (tested).

Speed: gaps are sparse, so the age loop works on the indices of still-open gaps only;
the other features are a handful of whole-array operations.
"""

from __future__ import annotations

import numpy as np

from market.bars import Bars
from tactical.config import FeatureConfig, default_config
from tactical.wire import N_FEATURES


def feature_bounds(cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bound of each feature column under `cfg`."""
    low = np.array([0, 0, -cfg.level_clip, 0, 0, -cfg.momentum_clip, 0], dtype=np.float32)
    high = np.array([1, 1, cfg.level_clip, 1, 1, cfg.momentum_clip, 1], dtype=np.float32)
    return low, high


class _Nearest:
    """Per bar: the open gap whose midpoint is nearest to the close (ties: the younger gap)."""

    def __init__(self, n: int):
        self.dist = np.full(n, np.inf)
        self.level = np.zeros(n)
        self.age = np.zeros(n, dtype=np.int64)

    def offer(self, s: np.ndarray, level: np.ndarray, dist: np.ndarray, age: int | np.ndarray) -> None:
        better = dist < self.dist[s]  # s holds no duplicates within one call
        s = s[better]
        self.dist[s] = dist[better]
        self.level[s] = level[better]
        self.age[s] = age if np.isscalar(age) else age[better]


def _track_gaps(high: np.ndarray, low: np.ndarray, close: np.ndarray, max_age: int, bullish: bool,
                nearest: _Nearest) -> tuple[np.ndarray, np.ndarray]:
    """Open-gap flags and mitigation flags per bar for one gap direction; feeds `nearest`."""
    n = close.shape[0]
    active = np.zeros(n, dtype=bool)
    mitigated = np.zeros(n, dtype=bool)
    if n < 3:
        return active, mitigated
    if bullish:
        formed = high[:-2] < low[2:]
        bottom, top = high[:-2][formed], low[2:][formed]
    else:
        formed = low[:-2] > high[2:]
        bottom, top = high[2:][formed], low[:-2][formed]
    born = np.flatnonzero(formed) + 2  # bar at which each gap opens
    mid = 0.5 * (top + bottom)
    edge = top if bullish else bottom  # the side price comes back through
    for age in range(max_age + 1):
        s = born + age
        inside = s < n
        if not inside.all():
            born, mid, edge, s = born[inside], mid[inside], edge[inside], s[inside]
        if born.size == 0:
            break
        if age > 0:
            hit = low[s] <= edge if bullish else high[s] >= edge
            mitigated[s[hit]] = True
            keep = ~hit
            born, mid, edge, s = born[keep], mid[keep], edge[keep], s[keep]
        active[s] = True
        nearest.offer(s, mid, np.abs(mid - close[s]), age)
    return active, mitigated


def compute_features(bars: Bars, cfg: FeatureConfig | None = None) -> np.ndarray:
    """Feature matrix (len(bars), 7) float32 in FEATURE_NAMES order. Bars are assumed validated."""
    cfg = cfg or default_config().features
    h, lo, c, v = bars.high, bars.low, bars.close, bars.volume
    n = c.shape[0]
    out = np.zeros((n, N_FEATURES), dtype=np.float32)
    if n == 0:
        return out

    nearest = _Nearest(n)
    bull, bull_hit = _track_gaps(h, lo, c, cfg.fvg_max_age, True, nearest)
    bear, bear_hit = _track_gaps(h, lo, c, cfg.fvg_max_age, False, nearest)
    any_open = np.isfinite(nearest.dist)
    out[:, 0] = bull
    out[:, 1] = bear
    rel = np.where(any_open, (nearest.level - c) / c, 0.0)
    out[:, 2] = np.clip(rel * cfg.level_scale, -cfg.level_clip, cfg.level_clip)
    out[:, 3] = np.where(any_open, nearest.age / cfg.fvg_max_age, 0.0)
    out[:, 4] = bull_hit | bear_hit

    p = cfg.momentum_period
    if n > p:
        out[p:, 5] = np.clip(np.log(c[p:] / c[:-p]) * cfg.momentum_scale, -cfg.momentum_clip, cfg.momentum_clip)

    # Volume over the mean of the previous `volume_window` bars (fewer at the start of a series).
    w = cfg.volume_window
    csum = np.concatenate(([0.0], np.cumsum(v)))
    idx = np.arange(n)
    count = np.minimum(idx, w)
    prev_sum = csum[idx] - csum[idx - count]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = prev_sum / count
        ratio = np.where(mean > 0, v / mean, np.where(v > 0, cfg.volume_ratio_cap, 1.0))
    ratio[0] = 1.0
    out[:, 6] = np.minimum(ratio, cfg.volume_ratio_cap) / cfg.volume_ratio_cap
    return out
