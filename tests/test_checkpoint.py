"""Checkpoints: identical outputs after a round trip, and mismatches that say what differs."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from tactical.config import ModelConfig, default_config
from training.checkpoint import ARCHITECTURE_KEYS, CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from training.system import TacticalMARLSystem


def model(seed=0, cfg=None):
    torch.manual_seed(seed)
    return TacticalMARLSystem(cfg).eval()


def test_round_trip_gives_identical_outputs_and_restores_the_optimizer(tmp_path):
    original = model(seed=1)
    optimizer = torch.optim.Adam(original.parameters(), lr=1e-3)
    original.train()
    loss = sum(o["value"].sum() for o in original(torch.randn(4, 60, 7))["agents"].values())
    loss.backward()
    optimizer.step()
    original.eval()
    path = save_checkpoint(tmp_path / "c.pt", original, version=7, optimizer=optimizer, metrics={"reward": 1.5})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary left behind

    other = model(seed=2)
    other_opt = torch.optim.Adam(other.parameters(), lr=1e-3)
    loaded, payload = load_checkpoint(path, other, other_opt)
    x = torch.randn(6, 60, 7)
    with torch.no_grad():
        a, b = original(x, deterministic=True), loaded(x, deterministic=True)
    for name in a["agents"]:
        torch.testing.assert_close(a["agents"][name]["probabilities"], b["agents"][name]["probabilities"],
                                   rtol=0, atol=0)
    torch.testing.assert_close(a["critic"], b["critic"], rtol=0, atol=0)
    assert payload["version"] == 7 and payload["metrics"] == {"reward": 1.5}
    s1, s2 = optimizer.state_dict()["state"], other_opt.state_dict()["state"]
    assert s1.keys() == s2.keys()
    torch.testing.assert_close(s1[0]["exp_avg"], s2[0]["exp_avg"])


def test_load_without_a_model_builds_one_from_the_saved_config(tmp_path):
    cfg = default_config().replace(model={"hidden_dim": 64})
    save_checkpoint(tmp_path / "c.pt", model(cfg=cfg))
    loaded, _ = load_checkpoint(tmp_path / "c.pt")
    assert loaded.config.model.hidden_dim == 64


def test_a_checkpoint_saved_before_a_config_key_existed_still_loads(tmp_path):
    save_checkpoint(tmp_path / "c.pt", model())
    payload = read_checkpoint(tmp_path / "c.pt")
    for key in ("publish", "early_stop"):  # training keys added after checkpoints were already in model stores
        del payload["config"]["training"][key]
    torch.save(payload, tmp_path / "old.pt")
    loaded, _ = load_checkpoint(tmp_path / "old.pt")
    assert loaded.config.training.publish == default_config().training.publish


def test_feature_schema_mismatch_names_the_setting(tmp_path):
    save_checkpoint(tmp_path / "c.pt", model())
    other = TacticalMARLSystem(default_config().replace(features={"momentum_scale": 50.0}))
    expected = re.escape("other features: momentum_scale: checkpoint 100.0 vs model 50.0")
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(tmp_path / "c.pt", other)


def test_architecture_mismatch_names_the_setting(tmp_path):
    save_checkpoint(tmp_path / "c.pt", model())
    other = TacticalMARLSystem(hidden_dim=64)
    expected = re.escape("another architecture: model.hidden_dim: checkpoint 128 vs model 64") + "$"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(tmp_path / "c.pt", other)


def test_critic_heads_mismatch_is_refused_although_every_shape_matches(tmp_path):
    """4 and 2 attention heads have the same parameter shapes but compute different values."""
    four = model(cfg=default_config().replace(model={"critic_heads": 4}))
    save_checkpoint(tmp_path / "c.pt", four)
    two = TacticalMARLSystem(default_config().replace(model={"critic_heads": 2})).eval()
    assert {k: v.shape for k, v in two.state_dict().items()} == {k: v.shape for k, v in four.state_dict().items()}
    expected = re.escape("another architecture: model.critic_heads: checkpoint 4 vs model 2") + "$"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(tmp_path / "c.pt", two)
    x = torch.randn(3, 420)
    two.load_state_dict(four.state_dict())  # what loading used to do: the same weights, other values
    with torch.no_grad():
        assert not torch.allclose(two.critic(x), four.critic(x))
    loaded, _ = load_checkpoint(tmp_path / "c.pt")  # built from the saved config: 4 heads, the same values
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval().critic(x), four.critic(x), rtol=0, atol=0)


def test_training_only_settings_may_differ(tmp_path):
    save_checkpoint(tmp_path / "c.pt", model())
    other = TacticalMARLSystem(default_config().replace(model={"dropout": 0.1, "temperature_init": 2.0,
                                                                "init_seed": 5}))
    load_checkpoint(tmp_path / "c.pt", other)


def test_every_model_setting_is_classified():
    """A new model setting must be added to ARCHITECTURE_KEYS unless it leaves the network's function alone."""
    not_architecture = {"dropout", "temperature_init", "init_seed", "focus"}  # training-only or initial values
    assert {f.name for f in dataclasses.fields(ModelConfig)} == set(ARCHITECTURE_KEYS) | not_architecture


def test_corrupt_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, model())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"not a readable checkpoint: not the zip archive torch\.save writes"):
        read_checkpoint(path)
    (tmp_path / "bars.csv").write_text("time,open,high,low,close\n")
    with pytest.raises(CheckpointError, match=r"bars\.csv is not a readable checkpoint: not the zip archive"):
        read_checkpoint(tmp_path / "bars.csv")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="is not a tactical-checkpoint/1 checkpoint"):
        read_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        read_checkpoint(tmp_path / "missing.pt")


def test_a_checkpoint_never_carries_the_admin_token(tmp_path):
    cfg = default_config().replace(serving={"admin_token": "s3cret"})
    save_checkpoint(tmp_path / "c.pt", model(cfg=cfg))
    assert b"s3cret" not in (tmp_path / "c.pt").read_bytes()
    assert read_checkpoint(tmp_path / "c.pt")["config"]["serving"]["admin_token"] == ""


def test_publishing_into_a_store_whose_path_is_a_file_is_one_error_not_an_endless_retry(tmp_path):
    from agents.serving.model_store import ModelStore, StoreError
    from training.versions import publish

    (tmp_path / "store").write_text("not a directory")
    with pytest.raises(StoreError, match=r"the model store .*store is a file, not a directory"):
        publish(ModelStore(tmp_path / "store"), model(), source="test")
