"""Block-bootstrap intervals of Sharpe ratios: they cover the true value about as often as they say, narrow
with more data, and pair the series they compare."""

from __future__ import annotations

import numpy as np
import pytest

from market.bootstrap import default_block, sharpe_intervals
from market.performance import sharpe_ratio

PHI, MU, SIGMA = 0.3, 0.05, 1.0  # AR(1) per-bar P&L: serially dependent, as a held position's is
TRUE_SHARPE = MU / (SIGMA / np.sqrt(1 - PHI ** 2))  # per bar: mean over the stationary standard deviation


def ar1_series(reps: int, n: int, seed: int) -> np.ndarray:
    """`reps` independent AR(1) series of n bars (after a burn-in), mean MU."""
    rng = np.random.default_rng(seed)
    shocks = rng.normal(0, SIGMA, (reps, n + 100))
    x = np.empty_like(shocks)
    x[:, 0] = shocks[:, 0] / np.sqrt(1 - PHI ** 2)
    for t in range(1, shocks.shape[1]):
        x[:, t] = PHI * x[:, t - 1] + shocks[:, t]
    return MU + x[:, 100:]


def coverage_and_width(n: int, block: int | None, reps: int = 150) -> tuple[float, float]:
    series = ar1_series(reps, n, seed=n)
    hits, widths = 0, []
    for k, pnl in enumerate(series):
        interval = sharpe_intervals({"x": pnl}, 1.0, samples=300, block=block, seed=k).sharpe["x"]
        hits += interval.contains(TRUE_SHARPE)
        widths.append(interval.high - interval.low)
    return hits / reps, float(np.mean(widths))


def test_the_interval_covers_the_true_sharpe_at_about_its_nominal_rate_and_narrows_with_more_data():
    coverage, width = coverage_and_width(500, None)
    assert 0.88 <= coverage <= 0.99, coverage  # nominal 0.95 (here 0.94); 150 replications: +-0.035 is noise
    coverage_long, width_long = coverage_and_width(2000, None)
    assert 0.88 <= coverage_long <= 0.99, coverage_long  # here 0.97
    assert width_long < 0.6 * width  # four times the data: about half the width (1/sqrt(4))
    # Resampling single bars ignores the dependence: narrower, and it misses the true value more often.
    iid_coverage, iid_width = coverage_and_width(500, 1)  # here 0.84
    assert iid_width < width and iid_coverage < coverage


def test_differences_are_paired_and_everything_is_seeded():
    rng = np.random.default_rng(0)
    a = rng.normal(0.01, 1, 1000)
    b = a + rng.normal(0, 0.05, 1000)  # almost the same P&L
    ci = sharpe_intervals({"a": a, "b": b, "flat": np.zeros(1000)}, 252.0, reference="a", seed=3)
    d = ci.difference["b"]
    assert d.high - d.low < 0.2 * (ci.sharpe["b"].high - ci.sharpe["b"].low)  # the shared noise cancels
    assert d.estimate == pytest.approx(sharpe_ratio(b, 252) - sharpe_ratio(a, 252))
    assert ci.sharpe["flat"].low == ci.sharpe["flat"].high == 0.0
    assert ci.sharpe["a"].estimate == pytest.approx(sharpe_ratio(a, 252)) and ci.block == default_block(1000) == 10
    again = sharpe_intervals({"a": a, "b": b, "flat": np.zeros(1000)}, 252.0, reference="a", seed=3)
    assert again == ci
    assert sharpe_intervals({"a": a}, 252.0, seed=4).sharpe["a"] != ci.sharpe["a"]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="at least 2 bars"):
        sharpe_intervals({"a": np.ones(1)}, 1.0)
    with pytest.raises(ValueError, match="block length"):
        sharpe_intervals({"a": np.ones(10)}, 1.0, block=11)
    with pytest.raises(ValueError, match="reference 'b'"):
        sharpe_intervals({"a": np.ones(10)}, 1.0, reference="b")
