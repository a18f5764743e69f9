"""The promotion gate: a candidate version goes live only if it beats the active one where it will trade.

Both versions decide, in process, on an evaluation set: the most recent bars the cluster served
live (from the audit log: serving.promotion_bars decisions; what backtests replayed through it is
left out) or bars from a file. Each decision is
scored on the next bar, net of training.transaction_cost, and the per-bar P&L differences are
paired, so the block-bootstrap interval of their mean accounts for both having traded the same
bars. Policies (serving.promotion_gate): `off`; `better`, the candidate earned more;
`significant`, the interval's lower bound is above zero.

With no active version there is nothing to beat; with no scored bars (no bars served yet, no
file) there is nothing to compare on: both pass, and the verdict says it was not checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.serving.model_store import ModelStore
from coordinator.traffic import read_traffic
from market.bars import Bars
from market.csv_loader import load_bars
from market.features import compute_features
from market.windows import all_windows, decision_range
from tactical.config import PROMOTION_GATES, Config
from tactical_engine.engine import Engine
from tactical_engine.whatif import Comparison, Scoreable, compare, replay_actions, scoreable


@dataclass(frozen=True)
class Verdict:
    policy: str
    candidate: int
    reference: int | None  # the active version, None when none was active
    source: str  # what the versions were compared on
    comparison: Comparison | None  # None: nothing to compare (no active version, or no scored bars)
    passed: bool

    def describe(self) -> str:
        if self.policy == "off":
            return "promotion gate off"
        if self.reference is None:
            return "promotion gate: no active version to beat"
        if self.reference == self.candidate:
            return f"promotion gate: version {self.candidate} is already active, nothing to compare"
        c = self.comparison
        if c is None or c.difference is None:
            return f"promotion gate NOT CHECKED: no scored bars to compare on ({self.source})"
        d = c.difference
        verdict = "passed" if self.passed else "REFUSED"
        return (f"promotion gate ({self.policy}) {verdict}: version {self.candidate} against active version "
                f"{self.reference} over {c.bars:,} bars of {self.source}: log P&L {c.candidate_pnl:+.4f} against "
                f"{c.reference_pnl:+.4f}, per bar {d.estimate:+.2e} [{d.low:+.2e}, {d.high:+.2e}] (95%, paired "
                f"block bootstrap), same position on {c.agreement:.0%} of bars")


def evaluate(store: ModelStore, candidate: int, reference: int | None, cfg: Config, policy: str, *,
             eval_data: str | Path | None = None, audit_log: str | Path | None = None) -> Verdict:
    """The gate's verdict on `candidate` against `reference` (see the module docstring)."""
    if policy not in PROMOTION_GATES:
        raise ValueError(f"promotion gate policy must be one of {', '.join(PROMOTION_GATES)}, got {policy!r}")
    if policy == "off" or reference is None or reference == candidate:
        return Verdict(policy, candidate, reference, "", None, True)
    windows, scored, source = evaluation_set(cfg, eval_data, audit_log)
    if len(scored.rows) < 2:
        return Verdict(policy, candidate, reference, source, None, True)
    actions = {v: replay_actions(Engine(store, v, cfg), windows)[0] for v in (candidate, reference)}
    comparison = compare(actions[candidate], actions[reference], scored, cfg.training.transaction_cost)
    return Verdict(policy, candidate, reference, source, comparison, comparison.passes(policy))


def evaluation_set(cfg: Config, eval_data: str | Path | None,
                   audit_log: str | Path | None) -> tuple[np.ndarray, Scoreable, str]:
    """(windows, which of them are scored and on what return, a description) from a file or the audit log."""
    nothing = np.zeros((0, cfg.features.window, 7), np.float32), scoreable_bars(None, 0, -1)
    if eval_data is not None:
        bars = load_bars(eval_data)
        first, last = decision_range(len(bars), cfg.features.min_bars)
        if last < first:
            return (*nothing, f"{eval_data} (too few bars)")
        offset = cfg.features.window - 1
        windows = all_windows(compute_features(bars, cfg.features), cfg.features.window)
        return (np.ascontiguousarray(windows[first - offset:last - offset + 1]), scoreable_bars(bars, first, last),
                str(eval_data))
    path = Path(audit_log or cfg.paths.audit_log)
    source = f"the last {cfg.serving.promotion_bars:,} live decisions of {path}"
    if not path.exists():
        return (*nothing, source)
    traffic = read_traffic(path, last=cfg.serving.promotion_bars, shape=(cfg.features.window, 7), live_only=True)
    return traffic.windows, scoreable(traffic), source


def scoreable_bars(bars: Bars | None, first: int, last: int) -> Scoreable:
    """Decisions at bars first..last of one series, each scored on the bar after it."""
    if bars is None or last < first:
        return Scoreable(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool))
    close = bars.close[first:last + 2]
    n = last - first + 1
    return Scoreable(np.arange(n), np.log(close[1:] / close[:-1]), np.arange(n) == 0)
