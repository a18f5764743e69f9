"""Input drift: how far the features a model is served have moved from the ones it was trained on.

A published version records, per feature, quantile bins of its training bars (`reference`); the
coordinator bins the features of the windows it serves the same way and reports the population
stability index per feature, PSI = sum over bins of (served - trained) * ln(served / trained).
Conventional bands: under 0.1 stable, 0.1 to 0.25 moderate, over 0.25 shifted. Numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES = np.linspace(0.1, 0.9, 9)  # deciles: up to 10 bins a feature
EPSILON = 1e-4  # a bin empty on one side still gives a finite PSI
STABLE, SHIFTED = 0.1, 0.25
MIN_ROWS = 2000  # served rows before a PSI is judged: over 1000 rows of an unchanged market it reached 0.3 (README)


def reference_bins(features: np.ndarray) -> dict[str, Any]:
    """Per feature (columns of `features`, one row per bar): bin edges at its deciles (repeated edges merged,
    so a 0/1 feature has two bins) and the share of rows in each bin. JSON-able."""
    edges, fractions = [], []
    for column in np.asarray(features, dtype=np.float64).T:
        inner = np.unique(np.quantile(column, QUANTILES))
        edges.append(inner.tolist())
        fractions.append(_fractions(column, inner).tolist())
    return {"edges": edges, "fractions": fractions, "rows": len(features)}


def _fractions(column: np.ndarray, inner: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(inner, column, side="left"), minlength=len(inner) + 1)
    return counts / max(len(column), 1)


def psi(reference: dict[str, Any], features: np.ndarray) -> list[float]:
    """PSI per feature of `features` (rows served) against a reference_bins() record."""
    out = []
    for k, (inner, trained) in enumerate(zip(reference["edges"], reference["fractions"], strict=True)):
        served = np.clip(_fractions(np.asarray(features)[:, k], np.asarray(inner)), EPSILON, None)
        expected = np.clip(np.asarray(trained), EPSILON, None)
        out.append(float(np.sum((served - expected) * np.log(served / expected))))
    return out


def band(value: float) -> str:
    return "stable" if value < STABLE else "moderate" if value <= SHIFTED else "shifted"
