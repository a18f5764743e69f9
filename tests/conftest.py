"""Shared fixtures: small configs and hand-built bars."""

from __future__ import annotations

import numpy as np
import pytest

from market.bars import Bars
from tactical.config import default_config


def make_bars(rows: list[tuple[float, float, float, float, float]], start_ms: int = 0, step_ms: int = 60_000) -> Bars:
    """Bars from (open, high, low, close, volume) rows, one minute apart."""
    a = np.asarray(rows, dtype=np.float64)
    time = start_ms + np.arange(len(rows), dtype=np.int64) * step_ms
    return Bars.from_arrays(time, a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4])


@pytest.fixture(scope="session")
def config():
    return default_config()
