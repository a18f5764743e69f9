"""Windows: the last 60 rows for a bar, and every window at once as a view."""

from __future__ import annotations

import numpy as np
import pytest

from market.windows import all_windows, last_window


@pytest.fixture
def features():
    return np.arange(100 * 7, dtype=np.float32).reshape(100, 7)


def test_last_window_is_the_60_rows_ending_at_the_bar(features):
    w = last_window(features, 75)
    assert w.shape == (60, 7)
    np.testing.assert_array_equal(w, features[16:76])
    assert np.shares_memory(w, features)


def test_last_window_needs_history(features):
    with pytest.raises(ValueError, match="only 59 bars of history"):
        last_window(features, 58)
    with pytest.raises(IndexError):
        last_window(features, 100)


def test_all_windows_is_a_read_only_view(features):
    w = all_windows(features)
    assert w.shape == (41, 60, 7)
    assert np.shares_memory(w, features) and not w.flags.writeable
    for i in (0, 17, 40):
        np.testing.assert_array_equal(w[i], last_window(features, i + 59))


def test_all_windows_of_a_short_series_is_empty(features):
    assert all_windows(features[:59]).shape == (0, 60, 7)
