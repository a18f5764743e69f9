"""Actors, critic and the system module: shapes, parameter counts, actions, temperature, attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from agents.model.actor import TacticalActor, adaptive_pool_matrix
from tactical.config import AGENT_NAMES, default_config
from training.system import TacticalMARLSystem


@pytest.fixture(scope="module")
def system():
    torch.manual_seed(0)
    return TacticalMARLSystem().eval()


def test_forward_shapes(system):
    out = system(torch.randn(5, 60, 7), deterministic=True)
    assert set(out["agents"]) == set(AGENT_NAMES)
    for agent in out["agents"].values():
        assert agent["action"].shape == (5,) and agent["action"].dtype == torch.int64
        assert agent["probabilities"].shape == (5, 3)
        torch.testing.assert_close(agent["probabilities"].sum(-1), torch.ones(5))
        assert agent["value"].shape == (5,)
        assert agent["attention"].shape == (7,)
    assert out["critic"].shape == (5,)


def test_wrong_window_shape_is_refused(system):
    with pytest.raises(ValueError, match=r"windows must be \(batch, 60, 7\)"):
        system(torch.randn(5, 59, 7))
    with pytest.raises(ValueError):
        system(torch.randn(60, 7))


def test_parameter_counts_match_the_card(system):
    info = system.get_model_info()
    for name in AGENT_NAMES:
        assert abs(info["actors"][name] - 155_000) < 1_000  # card: about 155k per actor
    assert abs(info["critic"] - 1_090_000) < 5_000  # card: about 1.09M
    assert abs(info["total"] - 1_560_000) < 10_000  # card: 1.56M
    assert info["total"] == sum(info["actors"].values()) + info["critic"] == info["trainable"]


def test_card_constructor_and_its_checks():
    model = TacticalMARLSystem(input_shape=(60, 7), action_dim=3, hidden_dim=128, critic_hidden_dims=[512, 256, 128],
                               dropout_rate=0.2286, temperature_init=1.0136)
    assert model.get_model_info()["total"] == TacticalMARLSystem().get_model_info()["total"]
    assert TacticalMARLSystem(hidden_dim=64).get_model_info()["total"] < model.get_model_info()["total"]
    with pytest.raises(ValueError, match="action_dim must be 3"):
        TacticalMARLSystem(action_dim=5)
    with pytest.raises(ValueError, match="input_shape"):
        TacticalMARLSystem(input_shape=(30, 7))


def test_dropout_comes_from_config():
    model = TacticalMARLSystem(default_config().replace(model={"dropout": 0.1}))
    rates = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates == {0.1}


def test_deterministic_is_the_argmax_and_repeatable(system):
    x = torch.randn(16, 60, 7)
    a = system(x, deterministic=True)
    b = system(x, deterministic=True)
    for name in AGENT_NAMES:
        torch.testing.assert_close(a["agents"][name]["action"], a["agents"][name]["probabilities"].argmax(-1))
        torch.testing.assert_close(a["agents"][name]["action"], b["agents"][name]["action"])


def test_sampled_actions_follow_the_probabilities():
    torch.manual_seed(1)
    actor = TacticalActor("entry", default_config().model.focus["entry"], dropout=0.0).eval()
    with torch.no_grad():
        actor.policy_head.bias.copy_(torch.tensor([2.0, 0.0, 1.0]))
    model = TacticalMARLSystem(default_config().replace(model={"dropout": 0.0})).eval()
    model.actors["entry"] = actor
    x = torch.randn(1, 60, 7).expand(1500, 60, 7)
    with torch.no_grad():
        out = model(x, deterministic=False)["agents"]["entry"]
    counts = torch.bincount(out["action"], minlength=3).float() / 1500
    torch.testing.assert_close(counts, out["probabilities"][0], atol=0.04, rtol=0)  # 3.5 standard errors
    assert len(torch.unique(out["action"])) == 3  # not the argmax every time


def test_temperature_scales_the_logits():
    torch.manual_seed(2)
    actor = TacticalActor("fvg", default_config().model.focus["fvg"], temperature_init=1.0).eval()
    with torch.no_grad():
        actor.policy_head.weight.mul_(100)  # make the policy far from uniform
    x = torch.randn(8, 60, 7)
    with torch.no_grad():
        logits_1, _ = actor(x)
        actor.temperature.fill_(4.0)
        logits_4, _ = actor(x)
    torch.testing.assert_close(logits_4, logits_1 / 4)

    def entropy(logits):
        return torch.distributions.Categorical(logits=logits).entropy().mean()

    assert entropy(logits_4) > entropy(logits_1)
    assert TacticalActor("fvg", [1 / 7] * 7).temperature.item() == pytest.approx(1.0136)


def test_attention_starts_at_each_agents_focus(system):
    focus = default_config().model.focus
    for name, actor in system.actors.items():
        weights = actor.attention_weights()
        torch.testing.assert_close(weights.sum(), torch.tensor(1.0))
        torch.testing.assert_close(weights, torch.tensor(focus[name]), atol=1e-3, rtol=0)
    assert system.actors["momentum"].attention_weights()[5] > 0.79


def test_attention_is_learnable():
    actor = TacticalActor("entry", default_config().model.focus["entry"])
    logits, value = actor(torch.randn(4, 60, 7))
    (logits.sum() + value.sum()).backward()
    assert actor.attention_logits.grad is not None and actor.attention_logits.grad.abs().sum() > 0


def test_pooling_matrix_equals_adaptive_average_pooling():
    x = torch.randn(3, 64, 56)
    torch.testing.assert_close(x @ adaptive_pool_matrix(56, 16), F.adaptive_avg_pool1d(x, 16))
    y = torch.randn(2, 8, 37)
    torch.testing.assert_close(y @ adaptive_pool_matrix(37, 5), F.adaptive_avg_pool1d(y, 5))


def test_critic_sees_the_whole_state(system):
    x = torch.randn(2, 60, 7)
    y = x.clone()
    y[:, 0, 6] += 5.0  # change one number in the oldest bar
    with torch.no_grad():
        assert not torch.allclose(system.critic(x.flatten(1)), system.critic(y.flatten(1)))
