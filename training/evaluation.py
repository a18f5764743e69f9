"""Held-out evaluation: policies walk the held-out tail bar by bar and are scored like in training.

One contiguous walk from the first to the last held-out decision bar, starting flat, with the
environment's own reward function (same scale, same transaction cost), so the trained model
and the baselines are compared on the same bars at the same costs:
- model: the decision the coordinator would serve, the aggregation rule applied to the three
  agents' probability vectors (Hold below min_confidence);
- hold: always flat; earns exactly 0;
- random: every agent votes uniformly at random, votes aggregated like in training.

`validate` scores the same walk like a backtest instead (market.performance: returns net of
costs, Sharpe ratio, trades) beside flat and buy-and-hold: the score checkpoint selection
(training/selection.py) compares candidates by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from coordinator.aggregation import AggregationRule
from market.performance import FILL_CLOSE, BacktestReport, bars_per_year, score_range
from market.synthetic import TREND_DOWN, TREND_UP
from tactical.actions import to_positions
from tactical.config import AGENT_NAMES, Config
from training.env import step_reward
from training.series import HOLDOUT, TradingSeries
from training.system import TacticalMARLSystem


@dataclass(frozen=True)
class PolicyScore:
    total_reward: float  # summed rewards over the walk (reward units: reward_scale * log return)
    reward_per_bar: float
    trades: int  # position changes
    long_share: float  # share of bars long
    short_share: float
    bars: int


def score_positions(positions: np.ndarray, series: TradingSeries, cfg: Config, part: str = HOLDOUT) -> PolicyScore:
    """Score one position per decision bar of `part`, in order, starting flat."""
    first, last = series.decision_bars(part)
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != (last - first + 1,):
        raise ValueError(f"expected {last - first + 1} positions, got {positions.shape}")
    previous = np.concatenate(([0.0], positions[:-1]))
    rewards = step_reward(positions, previous, series.next_log_return[first:last + 1], cfg.training)
    return PolicyScore(float(rewards.sum()), float(rewards.mean()), int(np.count_nonzero(positions != previous)),
                       float(np.mean(positions > 0)), float(np.mean(positions < 0)), int(positions.size))


@torch.no_grad()
def model_positions(model: TacticalMARLSystem, series: TradingSeries, rule: AggregationRule, part: str = HOLDOUT,
                    batch: int = 4096) -> np.ndarray:
    """The served decision at every decision bar of `part`: rule(probabilities), in eval mode."""
    first, last = series.decision_bars(part)
    was_training = model.training
    model.eval()
    out = []
    for start in range(first, last + 1, batch):
        windows = torch.from_numpy(series.window_at(np.arange(start, min(start + batch, last + 1))))
        # the actors alone, as agents serve them: the critic (a third or more of the compute) decides nothing
        probs = torch.stack([torch.softmax(model.actors[name](windows)[0], dim=-1) for name in AGENT_NAMES], dim=1)
        out.append(to_positions(rule(probs.numpy()).actions))
    model.train(was_training)
    return np.concatenate(out)


def oracle_positions(regimes: np.ndarray, series: TradingSeries, part: str = HOLDOUT) -> np.ndarray:
    """The yardstick on synthetic data: long in up-trends, short in down-trends, flat otherwise.

    It knows the regime of the return each decision earns (the bar after the decision), which
    no policy can; its score is what the planted edge is worth at these costs.
    """
    first, last = series.decision_bars(part)
    earned = np.asarray(regimes)[first + 1:last + 2]
    return np.where(earned == TREND_UP, 1, np.where(earned == TREND_DOWN, -1, 0))


def evaluate_holdout(model: TacticalMARLSystem, series: TradingSeries, cfg: Config, *, seed: int = 0,
                     part: str = HOLDOUT) -> dict[str, PolicyScore]:
    """Scores of the model, always-Hold and a seeded random policy on the same bars at the same costs."""
    first, last = series.decision_bars(part)
    if last < first:
        raise ValueError("no held-out bars: set training.holdout_fraction above 0")
    rule = AggregationRule.from_config(cfg.aggregation)
    bars = last - first + 1
    return {
        "model": score_positions(model_positions(model, series, rule, part), series, cfg, part),
        "hold": score_positions(np.zeros(bars), series, cfg, part),
        "random": score_positions(rule.random_positions(np.random.default_rng(seed), bars), series, cfg, part),
    }


@dataclass(frozen=True)
class Validation:
    """A model's held-out score net of costs, beside flat (always Hold) and buy-and-hold on the same bars.

    Compared by annualized Sharpe ratio: flat's is 0, so beating flat means a positive mean P&L
    after costs, and a model that always holds ties flat instead of beating it.
    """

    model: BacktestReport
    flat: BacktestReport
    buy_and_hold: BacktestReport
    first_ms: int  # times of the first and last decision bar scored
    last_ms: int
    transaction_cost: float

    @property
    def sharpe(self) -> float:
        return self.model.sharpe

    @property
    def beats_flat(self) -> bool:
        return self.model.sharpe > self.flat.sharpe

    @property
    def beats_buy_and_hold(self) -> bool:
        return self.model.sharpe > self.buy_and_hold.sharpe

    def record(self) -> dict[str, Any]:
        """The JSON form a version keeps (version.json `validation`; agents.serving.model_store reads it)."""
        def policy(r: BacktestReport) -> dict[str, Any]:
            return {"sharpe": r.sharpe, "log_return": float(r.pnl.sum()), "total_return": r.total_return,
                    "trades": r.trades, "max_drawdown": r.max_drawdown, "exposure": r.exposure}

        return {"bars": self.model.bars, "first_ms": self.first_ms, "last_ms": self.last_ms,
                "transaction_cost": self.transaction_cost, "periods_per_year": self.model.periods_per_year,
                "model": policy(self.model), "flat": policy(self.flat), "buy_and_hold": policy(self.buy_and_hold),
                "beats_flat": self.beats_flat, "beats_buy_and_hold": self.beats_buy_and_hold}


def validate(model: TacticalMARLSystem, series: TradingSeries, cfg: Config) -> Validation:
    """Score the model's served decision over the held-out tail like `tactical backtest` does."""
    rule = AggregationRule.from_config(cfg.aggregation)
    return validate_positions(model_positions(model, series, rule), series, cfg)


def validate_positions(positions: np.ndarray, series: TradingSeries, cfg: Config) -> Validation:
    """Score one position per held-out decision bar, beside flat and buy-and-hold on the same bars.

    Fills at the close the decision saw, as training assumes; training.transaction_cost per unit
    traded; Sharpe annualized with the bars the whole series has per year.
    """
    first, last = series.decision_bars(HOLDOUT)
    if last < first:
        raise ValueError("no held-out bars: set training.holdout_fraction above 0")
    bars = last - first + 1
    cost = cfg.training.transaction_cost
    reports = score_range(series.bars, first, last, {"model": positions, "flat": np.zeros(bars),
                                                     "buy_and_hold": np.ones(bars)},
                          cost, FILL_CLOSE, bars_per_year(series.bars.time))
    return Validation(reports["model"], reports["flat"], reports["buy_and_hold"], int(series.bars.time[first]),
                      int(series.bars.time[last]), cost)
