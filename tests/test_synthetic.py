"""The synthetic market: reproducible, valid, with the regimes it promises."""

from __future__ import annotations

import numpy as np

from market.bars import validate_bars
from market.synthetic import MEAN_REVERSION, TREND_DOWN, TREND_UP, VOL_BURST, generate


def test_same_seed_same_series_other_seed_other_series():
    a, b, c = generate(5000, seed=4), generate(5000, seed=4), generate(5000, seed=5)
    for field in ("time", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(a.bars, field), getattr(b.bars, field))
    np.testing.assert_array_equal(a.regimes, b.regimes)
    assert not np.array_equal(a.bars.close, c.bars.close)


def test_bars_are_valid_and_time_ordered():
    s = generate(20_000, seed=1)
    validate_bars(s.bars)  # raises on any broken bar
    assert (np.diff(s.bars.time) == 60_000).all()
    assert (s.bars.volume > 0).mean() > 0.99


def test_regimes_behave_as_named():
    s = generate(200_000, seed=2)
    r = np.diff(np.log(s.bars.close), prepend=np.log(s.bars.open[0]))
    reg = s.regimes
    assert set(np.unique(reg)) == {TREND_UP, TREND_DOWN, MEAN_REVERSION, VOL_BURST}
    assert r[reg == TREND_UP].mean() > 0 > r[reg == TREND_DOWN].mean()
    calm = reg != VOL_BURST
    assert r[reg == VOL_BURST].std() > 2 * r[calm].std()
    assert s.bars.volume[reg == VOL_BURST].mean() > 1.3 * s.bars.volume[calm].mean()
    mr = np.flatnonzero(reg[1:] == MEAN_REVERSION) + 1
    mr = mr[reg[mr - 1] == MEAN_REVERSION]
    assert np.corrcoef(r[mr], r[mr - 1])[0, 1] < -0.2  # mean reversion: negative autocorrelation


def test_momentum_predicts_the_next_return_in_trends():
    """The planted edge training relies on: the sign of the last 5 bars' move persists in trends."""
    s = generate(200_000, seed=3)
    logc = np.log(s.bars.close)
    past = logc[5:-1] - logc[:-6]
    nxt = logc[6:] - logc[5:-1]
    trend = np.isin(s.regimes[6:], (TREND_UP, TREND_DOWN))
    assert np.mean(np.sign(past[trend]) * nxt[trend]) > 0


def test_the_config_section_describes_the_default_market():
    """configs/ and SyntheticParams agree, so library and CLI users get the same series."""
    from market.synthetic import SyntheticParams, configured
    from tactical.config import default_config

    section = default_config().synthetic
    defaults = SyntheticParams()
    for name in ("sigma", "trend_drift", "mean_reversion", "burst_vol", "mean_duration"):
        assert getattr(section, name) == getattr(defaults, name), name
    series = configured(default_config().replace(synthetic={"bars": 500}).synthetic)
    np.testing.assert_array_equal(series.bars.close, generate(500, seed=section.seed).bars.close)
