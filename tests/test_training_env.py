"""The trading environment: PettingZoo API, bounded observations, reproducible episodes, the reward,
the shared aggregation rule, the vectorized form and the held-out split."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

import coordinator.aggregation as aggregation
import training.env as env_module
from market.bars import BarDataError
from market.synthetic import synthetic_bars
from tactical.actions import Action, to_positions
from tactical.config import AGENT_NAMES, default_config
from training.env import TacticalTradingEnv, VectorTradingEnv
from training.series import HOLDOUT, TRAIN, TradingSeries

LONG, HOLD, SHORT = Action.LONG, Action.HOLD, Action.SHORT


@pytest.fixture(scope="module")
def cfg():
    return default_config().replace(synthetic={"bars": 4000})


@pytest.fixture(scope="module")
def series(cfg):
    return TradingSeries.synthetic(cfg)


def make_env(cfg, series, **kw):
    return TacticalTradingEnv(cfg, series=series, **kw)


def play(env, seed, action_seed, episodes=1):
    """Whole episodes with seeded random actions: every observation, reward, flag and info."""
    rng = np.random.default_rng(action_seed)
    trace = []
    for episode in range(episodes):
        obs, infos = env.reset(seed=seed if episode == 0 else None)
        trace.append((obs, infos, env.state().copy()))
        while env.agents:
            actions = {a: int(rng.integers(3)) for a in env.agents}
            step = env.step(actions)
            trace.append((actions, *step, env.state().copy()))
    return trace


def test_pettingzoo_parallel_api_and_seed_tests_pass_without_warnings(cfg, series):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parallel_api_test(make_env(cfg, series), num_cycles=200)
        parallel_seed_test(lambda: make_env(cfg, series), num_cycles=200)


def test_spaces(cfg, series):
    env = make_env(cfg, series)
    assert env.possible_agents == ["fvg", "momentum", "entry"]
    for agent in env.possible_agents:
        space = env.observation_space(agent)
        assert space.shape == (60, 7) and space.dtype == np.float32
        assert space.is_bounded()
        assert env.action_space(agent).n == 3
    assert env.state_space.shape == (420,) and env.state_space.dtype == np.float32
    low, high = env.observation_space("fvg").low, env.observation_space("fvg").high
    np.testing.assert_array_equal(low[0], [0, 0, -1, 0, 0, -1, 0])
    np.testing.assert_array_equal(high[0], [1, 1, 1, 1, 1, 1, 1])


def test_every_observation_and_state_lies_inside_its_space(cfg, series):
    env = make_env(cfg, series)
    for seed in range(5):
        for item in play(env, seed=seed, action_seed=seed, episodes=3):
            obs, state = item[0] if len(item) == 3 else item[1], item[-1]
            for agent, window in obs.items():
                assert env.observation_space(agent).contains(window), (seed, agent)
            assert env.state_space.contains(state)


def test_observations_are_views_into_the_precomputed_features(cfg, series):
    env = make_env(cfg, series)
    obs, _ = env.reset(seed=3)
    window = obs["momentum"]
    assert np.shares_memory(window, series.features) and not window.flags.writeable
    np.testing.assert_array_equal(env.state(), window.reshape(-1))


def test_same_seed_gives_identical_whole_episodes_and_another_seed_does_not(cfg, series):
    a = play(make_env(cfg, series), seed=7, action_seed=1, episodes=2)
    b = play(make_env(cfg, series), seed=7, action_seed=1, episodes=2)
    assert len(a) == len(b) == 2 * (cfg.training.episode_length + 1)
    for step_a, step_b in zip(a, b, strict=True):
        for part_a, part_b in zip(step_a, step_b, strict=True):
            if isinstance(part_a, dict):
                assert part_a.keys() == part_b.keys()
                for key in part_a:
                    np.testing.assert_array_equal(part_a[key], part_b[key])
            else:
                np.testing.assert_array_equal(part_a, part_b)
    c = play(make_env(cfg, series), seed=8, action_seed=1)
    assert c[0][1]["fvg"]["bar"] != a[0][1]["fvg"]["bar"]


def test_episodes_are_64_steps_then_truncated_never_terminated(cfg, series):
    trace = play(make_env(cfg, series), seed=0, action_seed=0)
    steps = trace[1:]
    assert len(steps) == 64
    for _, _, _, terminations, truncations, _, _ in steps[:-1]:
        assert not any(terminations.values()) and not any(truncations.values())
    _, _, _, terminations, truncations, _, _ = steps[-1]
    assert all(truncations.values()) and not any(terminations.values())


def test_reward_is_scaled_position_times_next_log_return_minus_costs(cfg, series):
    env = make_env(cfg, series)
    _, infos = env.reset(seed=11)
    bar = infos["fvg"]["bar"]
    scale, cost = cfg.training.reward_scale, cfg.training.transaction_cost
    r = series.next_log_return
    plan = [(LONG, 1), (LONG, 1), (SHORT, -1), (HOLD, 0)]
    previous = 0
    for k, (action, pos) in enumerate(plan):
        _, rewards, _, _, infos = env.step({a: action for a in AGENT_NAMES})
        expected = scale * (pos * r[bar + k] - cost * abs(pos - previous))
        assert rewards == {a: pytest.approx(expected, rel=1e-12, abs=1e-15) for a in AGENT_NAMES}
        assert infos["entry"]["position"] == pos and infos["entry"]["bar"] == bar + k + 1
        previous = pos
    closes = np.exp(np.cumsum(np.concatenate(([0.0], r[:-1]))))  # returns are log(close[t+1] / close[t])
    assert np.log(closes[bar + 1] / closes[bar]) == pytest.approx(r[bar])


def test_team_position_is_the_coordinators_rule_imported_not_copied(cfg, series):
    assert env_module.AggregationRule is aggregation.AggregationRule
    rule = aggregation.AggregationRule.from_config(cfg.aggregation)
    env = make_env(cfg, series)
    for votes in itertools.product(list(Action), repeat=3):
        env.reset(seed=0)
        _, _, _, _, infos = env.step(dict(zip(AGENT_NAMES, votes, strict=True)))
        expected = int(to_positions(rule.vote(np.array([votes])))[0])
        assert infos["fvg"]["position"] == expected, votes
    # the env follows the configured weights: with only momentum weighted, momentum alone decides
    solo = cfg.replace(aggregation={"weights": {"fvg": 0.0, "momentum": 1.0, "entry": 0.0}})
    env = TacticalTradingEnv(solo, series=series)
    env.reset(seed=0)
    _, _, _, _, infos = env.step({"fvg": SHORT, "momentum": LONG, "entry": SHORT})
    assert infos["fvg"]["position"] == 1


def test_vector_env_with_one_env_replays_the_parallel_env(cfg, series):
    env = make_env(cfg, series)
    vec = VectorTradingEnv(cfg, series, num_envs=1)
    rng = np.random.default_rng(5)
    obs, _ = env.reset(seed=21)
    vobs = vec.reset(seed=21)
    for _ in range(3 * cfg.training.episode_length):
        np.testing.assert_array_equal(vobs[0], obs["fvg"])
        votes = rng.integers(Action.SHORT, Action.LONG + 1, size=3)
        step_obs, rewards, _, truncations, _ = env.step(dict(zip(AGENT_NAMES, votes.tolist(), strict=True)))
        result = vec.step(votes[None, :])
        assert result.rewards[0] == pytest.approx(rewards["fvg"], rel=1e-12, abs=1e-15)
        assert bool(result.truncated[0]) == truncations["fvg"]
        if truncations["fvg"]:
            np.testing.assert_array_equal(result.final_observations[0], step_obs["fvg"])
            obs, _ = env.reset()
        else:
            obs = step_obs
        vobs = result.observations


def test_vector_env_batches_and_restarts_finished_episodes(cfg, series):
    vec = VectorTradingEnv(cfg, series, num_envs=6)
    obs = vec.reset(seed=0)
    assert obs.shape == (6, 60, 7) and obs.dtype == np.float32
    returns = np.zeros(6)
    for _ in range(cfg.training.episode_length):
        result = vec.step(np.full((6, 3), LONG))
        returns += result.rewards
    assert result.truncated.all() and result.final_observations.shape == (6, 60, 7)
    np.testing.assert_allclose(result.episode_returns, returns)
    assert not np.array_equal(result.observations, result.final_observations)  # restarted elsewhere


def test_training_never_sees_a_held_out_return(cfg, series):
    first, last = series.decision_bars(TRAIN)
    hold_first, hold_last = series.decision_bars(HOLDOUT)
    assert series.split == 4000 - 800
    assert last + 1 == series.split - 1 == hold_first  # training returns end at close[split - 1]
    assert hold_last == 4000 - 2
    vec = VectorTradingEnv(cfg, series, num_envs=64)
    vec.reset(seed=1)
    seen = []
    for _ in range(cfg.training.episode_length * 20):
        seen.append(vec._bars.copy())  # the bars whose next return is earned this step
        vec.step(np.full((64, 3), LONG))
    seen = np.concatenate(seen)
    assert seen.min() >= first and seen.max() <= last
    assert seen.max() > last - 30  # starts reach the end of the training part


def test_too_short_series_is_a_clear_error(cfg):
    with pytest.raises(BarDataError, match="too few to train on"):
        TradingSeries.from_bars(synthetic_bars(120, seed=0), cfg)
