"""The trading game the agents learn: a PettingZoo ParallelEnv, and a vectorized form for the trainer.

Every step each agent (fvg, momentum, entry) sees the same (60, 7) feature window and votes
Short, Hold or Long (tactical.actions values 1, 2, 3: the action spaces are Discrete(3, start=1),
so actions mean here what they mean on the wire). The team's position is the serving aggregation
rule applied to the three votes (imported from the coordinator, so agents learn the game they are
served in), and the team's reward is

    reward = reward_scale * (position * next bar's log return - transaction_cost * |position change|)

shared by all three agents. An episode is `episode_length` steps from a random start bar of the
training part of a series; it ends by truncation (markets do not terminate), starting flat.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from gymnasium.spaces import Box, Discrete
from pettingzoo import ParallelEnv

from coordinator.aggregation import AggregationRule
from market.features import feature_bounds
from market.performance import position_log_pnl
from tactical.actions import N_ACTIONS, Action, to_positions
from tactical.config import AGENT_NAMES, Config, TrainingConfig, as_config
from tactical.wire import N_FEATURES
from training.series import TRAIN, TradingSeries


def step_reward(positions: np.ndarray, previous: np.ndarray, next_log_return: np.ndarray,
                training: TrainingConfig) -> np.ndarray:
    """The team reward of holding `positions` over the next bar after holding `previous`: the
    backtest's log P&L, scaled."""
    return training.reward_scale * position_log_pnl(positions, previous, next_log_return, training.transaction_cost)


def team_positions(rule: AggregationRule, actions: np.ndarray) -> np.ndarray:
    """Positions in {-1, 0, +1} from the agents' actions (n, 3) Action values in AGENT_NAMES order."""
    return to_positions(rule.vote(actions))


def sample_starts(rng: np.random.Generator, first: int, last: int, episode_length: int, n: int) -> np.ndarray:
    """`n` uniform start bars such that a whole episode fits in decision bars [first, last]."""
    return rng.integers(first, last - episode_length + 2, size=n)


def observation_space(cfg: Config) -> Box:
    """Box (window, 7) float32 bounded by the features' ranges."""
    low, high = feature_bounds(cfg.features)
    shape = (cfg.features.window, N_FEATURES)
    return Box(np.broadcast_to(low, shape), np.broadcast_to(high, shape), shape, np.float32)


class TacticalTradingEnv(ParallelEnv):
    """One episode at a time, PettingZoo's parallel API. `state()` is the flattened window (420,)."""

    metadata: ClassVar[dict[str, Any]] = {"name": "tactical_trading_v1", "render_modes": [], "is_parallelizable": True}

    def __init__(self, config: Config | Mapping[str, Any] | str | None = None, *,
                 series: TradingSeries | None = None, part: str = TRAIN):
        cfg = as_config(config)
        self.series = series if series is not None else TradingSeries.synthetic(cfg)
        self.training = cfg.training
        self.rule = AggregationRule.from_config(cfg.aggregation)
        self.possible_agents = list(AGENT_NAMES)
        self.agents: list[str] = []
        self.render_mode = None
        self._first, self._last = self.series.decision_bars(part)
        obs_space = observation_space(cfg)
        self._observation_spaces = {a: obs_space for a in AGENT_NAMES}
        self._action_spaces = {a: Discrete(N_ACTIONS, start=int(Action.SHORT)) for a in AGENT_NAMES}
        self.state_space = Box(obs_space.low.reshape(-1), obs_space.high.reshape(-1), (obs_space.low.size,),
                               np.float32)
        self._rng = np.random.default_rng()
        self._bar = self._first
        self._steps = 0
        self._position = 0

    def observation_space(self, agent: str) -> Box:
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> Discrete:
        return self._action_spaces[agent]

    def state(self) -> np.ndarray:
        return self.series.window_at(self._bar).reshape(-1)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._bar = int(sample_starts(self._rng, self._first, self._last, self.training.episode_length, 1)[0])
        self._steps = 0
        self._position = 0
        self.agents = list(self.possible_agents)
        return self._observations(), self._infos(team_action=None)

    def step(self, actions: Mapping[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise RuntimeError("the episode is over: call reset()")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"no action for agent(s) {missing}")
        votes = np.array([[int(actions[a]) for a in AGENT_NAMES]])
        team_action = int(self.rule.vote(votes)[0])
        new_position = Action(team_action).position
        reward = float(step_reward(np.float64(new_position), np.float64(self._position),
                                   self.series.next_log_return[self._bar], self.training))
        self._position = new_position
        self._bar += 1
        self._steps += 1
        done = self._steps >= self.training.episode_length
        observations, infos = self._observations(), self._infos(team_action)
        rewards = {a: reward for a in self.agents}
        terminations = {a: False for a in self.agents}
        truncations = {a: done for a in self.agents}
        if done:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def _observations(self) -> dict[str, np.ndarray]:
        window = self.series.window_at(self._bar)
        return {a: window for a in self.agents}

    def _infos(self, team_action: int | None) -> dict[str, dict]:
        info = {"bar": self._bar, "position": self._position,
                "team_action": Action(team_action).label if team_action is not None else None}
        return {a: dict(info) for a in self.agents}


@dataclass(frozen=True)
class VectorStep:
    observations: np.ndarray  # (n, window, 7) float32; envs whose episode ended are already restarted
    rewards: np.ndarray  # (n,) float64 team reward
    truncated: np.ndarray  # (n,) bool: the episode ended with this step
    final_observations: np.ndarray  # (k, window, 7) the windows after the step of the k truncated envs
    episode_returns: np.ndarray  # (k,) summed rewards of the episodes that ended


class VectorTradingEnv:
    """`num_envs` episodes stepped as one numpy batch; a finished episode restarts at a new start at once."""

    def __init__(self, cfg: Config, series: TradingSeries, num_envs: int, *, part: str = TRAIN):
        self.series = series
        self.training = cfg.training
        self.num_envs = num_envs
        self.rule = AggregationRule.from_config(cfg.aggregation)
        self._first, self._last = series.decision_bars(part)
        self._rng = np.random.default_rng()
        self._bars = np.zeros(num_envs, dtype=np.int64)
        self._steps = np.zeros(num_envs, dtype=np.int64)
        self._positions = np.zeros(num_envs, dtype=np.int64)
        self._returns = np.zeros(num_envs)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Restart every env; returns observations (n, window, 7)."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._restart(np.arange(self.num_envs))
        return self.series.window_at(self._bars)

    def step(self, actions: np.ndarray) -> VectorStep:
        """actions (n, 3) Action values in AGENT_NAMES order."""
        new_positions = team_positions(self.rule, actions)
        rewards = step_reward(new_positions, self._positions, self.series.next_log_return[self._bars], self.training)
        self._positions = new_positions
        self._bars += 1
        self._steps += 1
        self._returns += rewards
        truncated = self._steps >= self.training.episode_length
        ended = np.flatnonzero(truncated)
        final_observations = self.series.window_at(self._bars[ended])
        episode_returns = self._returns[ended].copy()
        self._restart(ended)
        return VectorStep(self.series.window_at(self._bars), rewards, truncated, final_observations, episode_returns)

    def _restart(self, envs: np.ndarray) -> None:
        self._bars[envs] = sample_starts(self._rng, self._first, self._last, self.training.episode_length, envs.size)
        self._steps[envs] = 0
        self._positions[envs] = 0
        self._returns[envs] = 0.0
