"""A training session publishes versions whose agents serve the value in reward units."""

from __future__ import annotations

import numpy as np
import torch

from agents.serving.model_store import CHECKPOINT_FILE, ModelStore
from agents.serving.runtime import ActorRunner
from tactical.config import AGENT_NAMES, default_config
from training.checkpoint import load_checkpoint
from training.session import run_session
from training.value_norm import ValueNormalizer
from training.versions import publish_checkpoint


def test_published_artifacts_serve_the_value_denormalized_with_the_trainers_statistics(tmp_path):
    cfg = default_config().replace(
        training={"num_envs": 4, "episode_length": 16, "minibatch_size": 32, "epochs": 1, "reward_scale": 2000.0},
        synthetic={"bars": 3000},
        paths={"model_store": str(tmp_path / "store"), "metrics": str(tmp_path / "metrics.jsonl")})
    result = run_session(cfg.to_dict(), updates=1, progress=False)
    store = ModelStore(cfg.paths.model_store)
    model, payload = load_checkpoint(store.path(result.versions[-1]) / CHECKPOINT_FILE)
    value_norm = ValueNormalizer()
    value_norm.load_state_dict(payload["extra"]["trainer"]["value_norm"])
    assert value_norm.std > 2.0  # returns far from standardized: serving them as is would be far off

    windows = np.random.default_rng(0).uniform(-1, 1, size=(8, 60, 7)).astype(np.float32)
    for name in AGENT_NAMES:
        served = ActorRunner(*store.read_artifact(result.versions[-1], name)).run(windows).values
        with torch.no_grad():
            _, standardized = model.eval().actors[name](torch.from_numpy(windows))
        np.testing.assert_allclose(served, value_norm.denormalize(standardized).numpy(), rtol=1e-5, atol=1e-5)

    # `tactical rollout --checkpoint` republishes a checkpoint: same served values, still resumable
    again = publish_checkpoint(store, store.path(result.versions[-1]))
    assert again == result.versions[-1] + 1
    for name in AGENT_NAMES:
        first = ActorRunner(*store.read_artifact(result.versions[-1], name)).run(windows).values
        np.testing.assert_array_equal(ActorRunner(*store.read_artifact(again, name)).run(windows).values, first)
    _, republished = load_checkpoint(store.path(again) / CHECKPOINT_FILE)
    assert republished["extra"]["trainer"] == payload["extra"]["trainer"]
    assert str(republished["optimizer_state"]) == str(payload["optimizer_state"])
