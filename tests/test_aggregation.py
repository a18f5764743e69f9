"""The aggregation rule shared by serving and training."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.aggregation import DECIDED, LOW_CONFIDENCE, TIE, TOO_FEW_AGENTS, AggregationRule
from tactical.actions import Action, to_positions
from tactical.config import default_config

SHORT, HOLD, LONG = Action.SHORT, Action.HOLD, Action.LONG


@pytest.fixture
def rule():
    return AggregationRule.from_config(default_config().aggregation)  # weights 0.3, 0.4, 0.3; min_conf 0.4


def test_weighted_mean_and_argmax(rule):
    probs = np.array([[[0.1, 0.2, 0.7], [0.2, 0.2, 0.6], [0.6, 0.3, 0.1]]])
    out = rule(probs)
    expected = 0.3 * probs[0, 0] + 0.4 * probs[0, 1] + 0.3 * probs[0, 2]
    np.testing.assert_allclose(out.combined[0], expected)
    assert out.actions[0] == LONG and out.hold_reason[0] == DECIDED
    assert out.confidence[0] == pytest.approx(expected.max())


def test_low_confidence_is_hold(rule):
    probs = np.array([[[0.35, 0.3, 0.35], [0.36, 0.3, 0.34], [0.34, 0.3, 0.36]]])
    out = rule(probs)
    assert out.actions[0] == HOLD and out.hold_reason[0] == LOW_CONFIDENCE


def test_missing_agents_are_left_out_and_weights_renormalized(rule):
    probs = np.array([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    out = rule(probs, voted=np.array([[True, False, True]]))
    np.testing.assert_allclose(out.combined[0], [0, 0, 1])
    assert out.actions[0] == LONG


def test_too_few_agents_is_hold(rule):
    probs = np.array([[[0.0, 0.0, 1.0]] * 3])
    out = rule(probs, voted=np.array([[False, False, True]]))
    assert out.actions[0] == HOLD and out.hold_reason[0] == TOO_FEW_AGENTS
    nobody = rule(probs, voted=np.zeros((1, 3), bool))
    np.testing.assert_array_equal(nobody.combined[0], [0, 0, 0])
    assert nobody.actions[0] == HOLD


def test_ties_are_hold():
    rule = AggregationRule(np.array([1.0, 1.0, 0.0]), 0.0, 1)
    out = rule(np.array([[[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]]]))
    assert out.actions[0] == HOLD and out.hold_reason[0] == TIE


def test_vote_on_discrete_actions(rule):
    actions = np.array([[LONG, LONG, SHORT], [SHORT, SHORT, SHORT], [LONG, SHORT, HOLD], [HOLD, LONG, LONG]])
    np.testing.assert_array_equal(rule.vote(actions), [LONG, SHORT, SHORT, LONG])
    np.testing.assert_array_equal(to_positions(rule.vote(actions)), [1, -1, -1, 1])


def test_a_shadow_judged_in_the_live_blocks_rule_call_gets_what_the_rule_alone_gives(rule):
    """The coordinator stacks the shadow's votes under the live ones (one rule call, not two): the live decisions
    do not change, and the shadow's actions are the rule's on its own votes (an agent that could not run the
    shadow, zeros or NaN, gives no vote; nobody's vote: None)."""
    from coordinator.aggregation import valid_votes
    from coordinator.decisions import Asked, decide_block

    rng = np.random.default_rng(0)
    n, agents = 40, ["fvg", "momentum", "entry"]
    live, shadow = rng.dirichlet(np.ones(3), size=(n, 3)), rng.dirichlet(np.ones(3), size=(n, 3))
    shadow[::7, 1] = np.nan
    shadow[::5, 2] = 0.0
    asked = [Asked(str(k), "X") for k in range(n)]
    args = (asked, 1, agents, live, np.zeros((n, 3)), np.ones(3, dtype=bool), [""] * 3, [0.0] * 3, rule,
            default_config().aggregation, 1.0)
    alone, stacked = decide_block(*args), decide_block(*args, shadow=shadow)
    assert [d.action for d in stacked.decisions] == [d.action for d in alone.decisions]
    np.testing.assert_array_equal(stacked.voted, alone.voted)
    assert stacked.shadow_actions == rule(shadow, valid_votes(shadow, np.zeros((n, 3)))).actions.tolist()
    assert alone.shadow_actions is None and decide_block(*args, shadow=np.zeros((n, 3, 3))).shadow_actions is None
