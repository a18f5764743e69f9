"""A shadow version's record beside the active one, from the coordinator's raw scores: what `tactical shadow
status` shows and what `tactical promote` decides on.

The coordinator keeps, per scored bar, the log P&L of the active version's position and of the
shadow's on the same bar (coordinator.scoring); the statistics are computed here, off the serving
process: totals, Sharpe ratio per bar (not annualized: the coordinator does not know the bars'
frequency), hit rate, agreement, and the paired block-bootstrap interval of the per-bar difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from market.bootstrap import Interval, mean_interval
from tactical.v1 import cluster_pb2
from tactical_engine.whatif import gate_passes


@dataclass(frozen=True)
class PolicyRecord:
    log_pnl: float  # summed over the scored bars
    sharpe_per_bar: float  # mean / std of the per-bar P&L (0 without variance)
    hit_rate: float | None  # share of the bars it held a position on that earned something (None: never held)

    @classmethod
    def of(cls, pnl: np.ndarray) -> PolicyRecord:
        std = float(pnl.std()) if len(pnl) else 0.0
        held = pnl[pnl != 0]
        return cls(float(pnl.sum()), float(pnl.mean() / std) if std > 0 else 0.0,
                   float((held > 0).mean()) if len(held) else None)


@dataclass(frozen=True)
class ShadowRecord:
    shadow_version: int
    active_version: int | None
    since_ms: int
    decisions: int
    agreement: float | None  # share of decisions where the shadow took the active version's action (None: none)
    bars: int  # scored bars
    active: PolicyRecord
    shadow: PolicyRecord
    difference: Interval | None  # per bar, shadow minus active, 95%; None under 2 bars
    transaction_cost: float

    def passes(self, policy: str) -> bool:
        """The promotion gate's policies on this live evidence."""
        return gate_passes(policy, self.difference)


def shadow_record(report: cluster_pb2.ShadowReport, *, confidence: float = 0.95, seed: int = 0) -> ShadowRecord | None:
    """The record of the report's shadow (None when no shadow runs)."""
    if not report.HasField("shadow_version"):
        return None
    active = np.frombuffer(report.active_pnl, dtype="<f8")
    shadow = np.frombuffer(report.shadow_pnl, dtype="<f8")
    difference = mean_interval(shadow - active, confidence=confidence, seed=seed) if len(active) >= 2 else None
    return ShadowRecord(report.shadow_version,
                        report.active_version if report.HasField("active_version") else None, report.since_ms,
                        report.decisions, report.agreed / report.decisions if report.decisions else None,
                        len(active), PolicyRecord.of(active), PolicyRecord.of(shadow), difference,
                        report.transaction_cost)
