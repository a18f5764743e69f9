"""Configuration: the packaged defaults carry the card's numbers; bad keys and types are named."""

from __future__ import annotations

import pytest
import yaml

from tactical.config import AGENT_NAMES, ConfigError, as_config, default_config, load_config


def test_defaults_hold_the_model_card_values():
    cfg = default_config()
    t = cfg.training
    assert (t.learning_rate, t.gamma, t.gae_lambda, t.clip_epsilon, t.value_loss_coef) == (
        0.000185, 0.9728, 0.9047, 0.2328, 0.7181)
    assert (t.entropy_coef_start, t.entropy_coef_end) == (0.01, 0.001)
    assert (t.priority_alpha, t.priority_beta) == (0.4866, 0.3922)
    assert t.clip_value_loss and t.episode_length == 64
    assert (cfg.model.dropout, cfg.model.temperature_init) == (0.2286, 1.0136)
    assert cfg.model.focus["fvg"] == [0.40, 0.40, 0.10, 0.05, 0.05, 0.0, 0.0]
    assert cfg.model.focus["momentum"][5:] == [0.8, 0.2]
    assert cfg.features.window == 60
    assert set(cfg.serving.agents) == set(AGENT_NAMES)
    assert set(cfg.aggregation.weights) == set(AGENT_NAMES)


def test_a_user_file_changes_only_its_keys(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("training:\n  updates: 3\nserving:\n  agents:\n    fvg: {port: 6001}\n")
    cfg = load_config(path)
    assert cfg.training.updates == 3
    assert cfg.serving.agents["fvg"].port == 6001 and cfg.serving.agents["fvg"].core == -1
    assert cfg.training.gamma == default_config().training.gamma


@pytest.mark.parametrize("text,message", [
    ("training:\n  gamam: 0.9\n", "unknown config key 'training.gamam'"),
    ("trainin:\n  gamma: 0.9\n", "unknown config key 'trainin'"),
    ("training:\n  gamma: high\n", "training.gamma: expected a number, got str 'high'"),
    ("training:\n  num_envs: 2.5\n", "training.num_envs: expected an integer"),
    ("training:\n  clip_value_loss: 1\n", "training.clip_value_loss: expected true or false"),
    ("model:\n  conv_channels: 32\n", "model.conv_channels: expected a list"),
    ("training:\n  gamma: 1.5\n", "training.gamma: must be in (0, 1]"),
    ("aggregation:\n  weights: {fvg: 1, momentum: 1, entry: 1, extra: 1}\n", "aggregation.weights: expected exactly"),
    ("model:\n  focus: {fvg: [1, 0, 0, 0, 0, 0, 0], momentum: [0.5, 0.5], entry: [1, 0, 0, 0, 0, 0, 0]}\n",
     "model.focus.momentum"),
    ("serving:\n  coordinator_port: 70000\n", "serving.coordinator_port: not a TCP port"),
    ("- just\n- a list\n", "expected a mapping"),
    ("serving:\n  deadline_ms: .inf\n", "serving.deadline_ms: must be a finite number, got inf"),
    ("serving:\n  batch_linger_ms: .nan\n", "serving.batch_linger_ms: must be a finite number, got nan"),
    ("training:\n  transaction_cost: -.inf\n", "training.transaction_cost: must be a finite number, got -inf"),
    ("training:\n  learning_rate: .nan\n", "training.learning_rate: must be a finite number"),
    ("aggregation:\n  weights: {fvg: .nan, momentum: 1, entry: 1}\n", "aggregation.weights.fvg: must be a finite"),
    ("synthetic:\n  sigma: 1" + "0" * 400 + "\n", "synthetic.sigma: must be a finite number"),
    ("synthetic:\n  seed: -1\n", "synthetic.seed: must be >= 0, got -1"),
    ("training:\n  seed: -3\n", "training.seed: must be >= 0, got -3"),
    ("model:\n  init_seed: -1\n", "model.init_seed: must be >= 0"),
])
def test_bad_config_is_named(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value)


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    path = tmp_path / "broken.yaml"
    path.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_as_config_accepts_a_parsed_yaml_mapping_and_replace_validates():
    from configs import DEFAULT_CONFIG_PATH

    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    assert as_config(raw) == default_config()
    assert as_config({"training": {"seed": 9}}).training.seed == 9
    with pytest.raises(ConfigError, match=r"training\.epochs: must be > 0"):
        default_config().replace(training={"epochs": 0})
