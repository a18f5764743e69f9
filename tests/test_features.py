"""The seven features on bar sequences whose gaps, mitigations and ages are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_bars
from market.bars import Bars
from market.features import compute_features, feature_bounds
from market.synthetic import SyntheticParams, synthetic_bars
from tactical.config import default_config
from tactical.wire import FEATURE_NAMES, N_FEATURES

BULL, BEAR, LEVEL, AGE, MITIGATION, MOMENTUM, VOLUME = range(7)


def cfg(**changes):
    return default_config().replace(features=changes).features


def flat(price: float = 100.0, volume: float = 1000.0):
    return (price, price, price, price, volume)


def bar(low: float, high: float, volume: float = 1000.0):
    """A bar spanning [low, high], opening at low and closing at high."""
    return (low, high, low, high, volume)


def test_names_and_shape():
    assert len(FEATURE_NAMES) == N_FEATURES == 7
    out = compute_features(make_bars([flat()] * 10))
    assert out.shape == (10, 7) and out.dtype == np.float32


def test_empty_series():
    out = compute_features(make_bars([flat()])[0:0])
    assert out.shape == (0, 7)


def test_flat_bars_have_no_gap_no_momentum_and_neutral_volume():
    c = cfg()
    out = compute_features(make_bars([flat()] * 40), c)
    assert not out[:, [BULL, BEAR, LEVEL, AGE, MITIGATION, MOMENTUM]].any()
    np.testing.assert_allclose(out[:, VOLUME], 1.0 / c.volume_ratio_cap)


def test_bullish_gap_opens_ages_and_is_mitigated():
    c = cfg(fvg_max_age=10)
    # Each bar overlaps the one two before it, so no second gap opens.
    rows = [bar(99, 100), bar(100.5, 103.5), bar(102, 103),  # high[0]=100 < low[2]=102: bullish gap (100, 102)
            bar(102.5, 104), bar(102.8, 104.5),               # stays above the gap's top (102)
            bar(101.5, 103.5),                                # low 101.5 <= 102: trades into the gap
            bar(103, 104)]
    out = compute_features(make_bars(rows), c)
    np.testing.assert_array_equal(out[:, BULL], [0, 0, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(out[:, BEAR], 0)
    np.testing.assert_array_equal(out[:, MITIGATION], [0, 0, 0, 0, 0, 1, 0])
    np.testing.assert_allclose(out[2:5, AGE], np.array([0, 1, 2]) / 10)
    assert out[5, AGE] == 0 and out[5, LEVEL] == 0  # mitigated: no gap open any more
    # Level: signed distance from close to the gap's midpoint (101), scaled and clipped.
    closes = np.array([103, 104, 104.5])
    expected = np.clip((101 - closes) / closes * c.level_scale, -c.level_clip, c.level_clip)
    np.testing.assert_allclose(out[2:5, LEVEL], expected, rtol=1e-6)
    assert (out[2:5, LEVEL] < 0).all()  # the gap is below price


def test_bearish_gap_and_its_mitigation():
    c = cfg(fvg_max_age=10, level_scale=10.0)
    rows = [bar(103, 104), bar(100.2, 104), bar(100, 101),    # low[0]=103 > high[2]=101: bearish gap (101, 103)
            bar(99, 100.5),                                     # stays below the bottom (101)
            bar(100, 101.2)]                                    # high 101.2 >= 101: trades into it
    out = compute_features(make_bars(rows), c)
    np.testing.assert_array_equal(out[:, BEAR], [0, 0, 1, 1, 0])
    np.testing.assert_array_equal(out[:, BULL], 0)
    np.testing.assert_array_equal(out[:, MITIGATION], [0, 0, 0, 0, 1])
    np.testing.assert_allclose(out[2:4, LEVEL], (102 - np.array([101, 100.5])) / np.array([101, 100.5]) * 10,
                               rtol=1e-6)
    assert (out[2:4, LEVEL] > 0).all()  # the gap is above price


def test_unmitigated_gap_expires_after_max_age():
    c = cfg(fvg_max_age=4)
    rows = [bar(99, 100), bar(100.5, 103.5), bar(102, 103)] + [bar(102.5, 103.5)] * 8
    out = compute_features(make_bars(rows), c)
    born = 2
    # Open at ages 0..4, gone from age 5 on (later bars stay above the gap and open no new one).
    assert out[born:born + 5, BULL].all()
    np.testing.assert_allclose(out[born:born + 5, AGE], np.arange(5) / 4)
    assert not out[born + 5:, BULL].any()
    assert not out[:, MITIGATION].any()  # expiry is not mitigation


def test_nearest_of_two_open_gaps_wins():
    c = cfg(fvg_max_age=20, level_scale=10.0)
    rows = [bar(90, 91), bar(90.5, 93.5), bar(93, 94),      # bullish gap A (91, 93), mid 92
            bar(93.2, 95), bar(93.8, 97.8), bar(97, 98),    # bullish gap B (95, 97), mid 96
            bar(97.5, 98.5)]
    out = compute_features(make_bars(rows), c)
    assert out[6, BULL] == 1 and not out[:, MITIGATION].any()
    close = 98.5
    np.testing.assert_allclose(out[6, LEVEL], np.clip((96 - close) / close * c.level_scale, -1, 1), rtol=1e-6)
    np.testing.assert_allclose(out[6, AGE], 1 / 20)  # gap B was born at bar 5


def test_first_bars_of_a_series():
    c = cfg()
    bars = synthetic_bars(12, seed=3)
    out = compute_features(bars, c)
    assert not out[:2, [BULL, BEAR, LEVEL, AGE, MITIGATION]].any()  # a gap needs three bars
    assert not out[:c.momentum_period, MOMENTUM].any()  # not enough history for the 5-bar return
    assert out[c.momentum_period:, MOMENTUM].any()
    assert out[0, VOLUME] == pytest.approx(1.0 / c.volume_ratio_cap)  # no history: neutral ratio


def test_momentum_is_the_scaled_clipped_log_return():
    c = cfg(momentum_scale=10.0)
    closes = [100, 101, 102, 103, 104, 105, 200]
    out = compute_features(make_bars([(p, p, p, p, 1.0) for p in closes]), c)
    assert out[5, MOMENTUM] == pytest.approx(np.log(105 / 100) * 10, rel=1e-6)
    assert out[6, MOMENTUM] == pytest.approx(c.momentum_clip)  # log(200/101) * 10 clipped


def test_zero_volume():
    c = cfg(volume_window=3, volume_ratio_cap=4.0)
    volumes = [0, 0, 0, 0, 10, 10, 10, 40, 0]
    out = compute_features(make_bars([flat(volume=v) for v in volumes]), c)
    assert out[3, VOLUME] == pytest.approx(1 / 4)   # nothing traded, nothing before: neutral
    assert out[4, VOLUME] == pytest.approx(1.0)     # volume after silence: the cap
    assert out[5, VOLUME] == pytest.approx(3 / 4)   # 10 over mean(0, 0, 10): a ratio of 3
    assert out[7, VOLUME] == pytest.approx(1.0)     # 40 / 10 = 4: the cap
    assert out[8, VOLUME] == 0.0                    # zero volume after trading


def test_volume_ratio_uses_the_previous_bars_only():
    c = cfg(volume_window=2, volume_ratio_cap=10.0)
    out = compute_features(make_bars([flat(volume=v) for v in [100, 200, 300, 150]]), c)
    np.testing.assert_allclose(out[1:, VOLUME], np.array([200 / 100, 300 / 150, 150 / 250]) / 10, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_prefix_invariance(seed):
    """Features over any prefix equal the first rows over the whole series: nothing looks ahead."""
    c = cfg(fvg_max_age=7)  # short expiry so that expiry happens often
    bars = synthetic_bars(3000, seed=seed, params=SyntheticParams(burst_vol=5.0))
    full = compute_features(bars, c)
    rng = np.random.default_rng(seed)
    for cut in [1, 2, 3, 4, 7, 60, *rng.integers(5, len(bars), size=10).tolist()]:
        np.testing.assert_array_equal(compute_features(bars[:cut], c), full[:cut], err_msg=f"prefix {cut}")


@pytest.mark.parametrize("seed", [0, 5])
def test_finite_and_bounded(seed):
    c = default_config().features
    bars = synthetic_bars(20_000, seed=seed, params=SyntheticParams(sigma=0.01, burst_vol=8.0))
    out = compute_features(bars, c)
    low, high = feature_bounds(c)
    assert np.isfinite(out).all()
    assert (out >= low).all() and (out <= high).all()
    for col in (BULL, BEAR, MITIGATION):
        assert set(np.unique(out[:, col])) <= {0.0, 1.0}
    assert out[:, BULL].any() and out[:, BEAR].any() and out[:, MITIGATION].any()


def test_features_do_not_modify_the_bars():
    bars = synthetic_bars(500, seed=1)
    before = [a.copy() for a in (bars.open, bars.high, bars.low, bars.close, bars.volume)]
    compute_features(bars)
    for a, b in zip(before, (bars.open, bars.high, bars.low, bars.close, bars.volume), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bars_slicing_is_a_view():
    bars = synthetic_bars(100, seed=1)
    part = bars[10:20]
    assert isinstance(part, Bars) and len(part) == 10
    assert np.shares_memory(part.close, bars.close)
