"""What a version would have done on served traffic, and what it would have earned: replay and the gate.

A decision at an instrument's bar is scored on that instrument's next served bar: the position it
sets, held from this close to the next one, net of the configured cost per unit traded. Only
bars with a close (requests that carried bars) and a later bar of the same instrument count;
a bar decided twice (a history sent again) counts once, with its last decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coordinator.traffic import LoggedTraffic
from market.bootstrap import Interval, mean_interval
from market.performance import position_log_pnl
from tactical.actions import to_positions
from tactical_engine.engine import Engine


@dataclass(frozen=True)
class Scoreable:
    """Which rows of the traffic can be scored, instrument by instrument in bar order."""

    rows: np.ndarray  # (m,) indices into the traffic
    next_log_return: np.ndarray  # (m,) log(next close / close)
    first_of_instrument: np.ndarray  # (m,) bool: no earlier scored bar of the same instrument (starts flat)


def scoreable(traffic: LoggedTraffic) -> Scoreable:
    rows, returns, firsts = [], [], []
    priced = np.flatnonzero(np.isfinite(traffic.close) & (traffic.bar_time_ms > 0))
    for name in dict.fromkeys(traffic.instrument[priced]):
        mine = priced[traffic.instrument[priced] == name]
        last_of_bar: dict[int, int] = {}
        for i in mine:  # in answer order: a bar decided again keeps its last decision
            last_of_bar[int(traffic.bar_time_ms[i])] = int(i)
        ordered = np.array([last_of_bar[t] for t in sorted(last_of_bar)], dtype=np.int64)
        if len(ordered) < 2:
            continue
        closes = traffic.close[ordered]
        rows.append(ordered[:-1])
        returns.append(np.log(closes[1:] / closes[:-1]))
        firsts.append(np.arange(len(ordered) - 1) == 0)
    if not rows:
        return Scoreable(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool))
    return Scoreable(np.concatenate(rows), np.concatenate(returns), np.concatenate(firsts))


def bar_pnl(actions: np.ndarray, scored: Scoreable, cost: float) -> np.ndarray:
    """Per scored bar, the log P&L of the positions `actions` (one per traffic row) set, net of costs."""
    held = to_positions(actions[scored.rows]).astype(np.float64)
    previous = np.where(scored.first_of_instrument, 0.0, np.concatenate(([0.0], held[:-1])))
    return position_log_pnl(held, previous, scored.next_log_return, cost)


def replay_actions(engine: Engine, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(actions, combined probabilities) of the engine's version on every window (N, 60, 7)."""
    if not len(windows):
        return np.zeros(0, np.int64), np.zeros((0, 3))
    aggregate = engine.aggregate(windows)
    return aggregate.actions, aggregate.combined


@dataclass(frozen=True)
class Comparison:
    """Two policies over the same scored bars: their log P&L and the interval of the mean difference."""

    bars: int
    candidate_pnl: float  # summed log P&L
    reference_pnl: float
    difference: Interval | None  # per bar, candidate minus reference; None with fewer than 2 bars
    agreement: float  # share of scored bars where both hold the same position

    def passes(self, policy: str) -> bool:
        return gate_passes(policy, self.difference)


def gate_passes(policy: str, difference: Interval | None) -> bool:
    """The promotion gate's policies on a paired per-bar difference (candidate minus reference): `better`, it
    earned more; `significant`, the interval's lower bound is above zero; `off`, always."""
    if policy == "off":
        return True
    if difference is None:
        return False
    return difference.estimate > 0 if policy == "better" else difference.low > 0


def compare(candidate: np.ndarray, reference: np.ndarray, scored: Scoreable, cost: float, *,
            confidence: float = 0.95, samples: int = 2000, seed: int = 0) -> Comparison:
    """Paired comparison of two policies' actions (one per traffic row) on the scored bars."""
    a, b = bar_pnl(candidate, scored, cost), bar_pnl(reference, scored, cost)
    same = to_positions(candidate[scored.rows]) == to_positions(reference[scored.rows])
    interval = mean_interval(a - b, confidence=confidence, samples=samples, seed=seed) if len(a) >= 2 else None
    return Comparison(len(a), float(a.sum()), float(b.sum()), interval, float(same.mean()) if len(same) else 0.0)
