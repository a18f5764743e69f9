"""The serving artifact: self-contained ONNX, parity with torch, and refusal of anything broken."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from agents.model.export import export_artifact
from agents.serving.artifact import ArtifactError, Manifest
from agents.serving.model_store import ModelStore
from agents.serving.runtime import ActorRunner
from tactical.config import AGENT_NAMES, default_config
from training.system import TacticalMARLSystem
from training.value_norm import ValueNormalizer
from training.versions import ensure_default_version, publish

VALUE_STD, VALUE_MEAN = 1.5, -0.37  # the trainer's value statistics when the version was published


@pytest.fixture(scope="module")
def trained_like():
    """A model whose policies are far from uniform, so parity is tested on non-trivial outputs."""
    torch.manual_seed(3)
    model = TacticalMARLSystem().eval()
    with torch.no_grad():
        for actor in model.actors.values():
            actor.policy_head.weight.normal_(0, 0.5)
            actor.attention_logits.normal_(0, 1)
    return model


@pytest.fixture(scope="module")
def value_norm():
    norm = ValueNormalizer(True)
    norm.load_state_dict({"enabled": True, "mean": VALUE_MEAN, "var": VALUE_STD ** 2, "count": 1000.0})
    return norm


@pytest.fixture(scope="module")
def store(tmp_path_factory, trained_like, value_norm):
    store = ModelStore(tmp_path_factory.mktemp("store"))
    publish(store, trained_like, source="test", version=1, value_norm=value_norm)
    return store


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_onnx_matches_torch_in_eval_mode_and_serves_the_value_in_reward_units(store, trained_like, batch):
    windows = np.random.default_rng(batch).uniform(-1, 1, size=(batch, 60, 7)).astype(np.float32)
    for name in AGENT_NAMES:
        runner = ActorRunner(*store.read_artifact(1, name))
        probs, actions, values = runner.run(windows)
        with torch.no_grad():
            logits, value = trained_like.actors[name](torch.from_numpy(windows))
        assert np.abs(probs - torch.softmax(logits, -1).numpy()).max() < 1e-5
        assert (actions == logits.argmax(-1).numpy()).all()
        assert np.abs(values - (value.numpy() * VALUE_STD + VALUE_MEAN)).max() < 1e-5  # denormalized
        assert probs.max() > 0.5  # the outputs compared are not all near uniform


def test_without_value_statistics_the_value_head_is_served_as_is(trained_like):
    blob, manifest = export_artifact(trained_like.actors["entry"], 2)
    windows = np.random.default_rng(0).uniform(-1, 1, size=(5, 60, 7)).astype(np.float32)
    values = ActorRunner(blob, manifest).run(windows).values
    with torch.no_grad():
        _, value = trained_like.actors["entry"](torch.from_numpy(windows))
    assert np.abs(values - value.numpy()).max() < 1e-5


def test_blob_is_self_contained_with_a_manifest(store):
    blob, manifest = store.read_artifact(1, "momentum")
    model = onnx.load_from_string(blob)
    onnx.checker.check_model(model)
    assert all(init.data_location == onnx.TensorProto.DEFAULT for init in model.graph.initializer)
    assert {p.key: p.value for p in model.metadata_props}["agent"] == "momentum"
    data = json.loads(manifest.to_json())
    assert data["agent"] == "momentum" and data["version"] == 1 and len(data["sha256"]) == 64
    assert data["inputs"] == {"windows": ["batch", 60, 7]}
    assert data["outputs"] == {"probabilities": ["batch", 3], "value": ["batch"]}
    assert len(data["feature_names"]) == 7 and data["size_bytes"] == len(blob)


def test_runner_imports_no_torch():
    code = ("import sys, agents.serving.runtime, agents.serving.model_store, agents.serving.artifact; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_version_zero_is_the_seeded_default(tmp_path):
    cfg = default_config()
    assert ensure_default_version(tmp_path, cfg) == 0
    assert ensure_default_version(tmp_path, cfg) is None  # already there: nothing written
    other = tmp_path / "again"
    ensure_default_version(other, cfg)
    for name in AGENT_NAMES:  # same seed, same weights
        ours, theirs = ModelStore(tmp_path).read_artifact(0, name)[1], ModelStore(other).read_artifact(0, name)[1]
        assert ours.sha256 == theirs.sha256
    assert "embedded default" in ModelStore(tmp_path).info(0)["source"]


def corrupt(blob: bytes, manifest: Manifest, mutate) -> tuple[bytes, Manifest]:
    """Apply `mutate` to the ONNX model and give it a manifest that matches the new bytes."""
    model = onnx.load_from_string(blob)
    mutate(model)
    data = model.SerializeToString()
    return data, Manifest.for_blob(manifest.agent, manifest.version, data)


def test_flipped_and_truncated_bytes_are_refused(store):
    blob, manifest = store.read_artifact(1, "fvg")
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0xFF
    with pytest.raises(ArtifactError, match=r"sha256 .* does not match"):
        ActorRunner(bytes(flipped), manifest)
    with pytest.raises(ArtifactError, match="truncated"):
        ActorRunner(blob[:-100], manifest)
    garbage = blob[:1000]
    with pytest.raises(ArtifactError, match="ONNX Runtime cannot load the model"):
        ActorRunner(garbage, Manifest.for_blob("fvg", 1, garbage))


def test_nan_weights_are_refused(store):
    def poison(model):
        for init in model.graph.initializer:
            if init.data_type == onnx.TensorProto.FLOAT and len(init.raw_data) >= 4:
                arr = onnx.numpy_helper.to_array(init).copy()
                arr.flat[0] = np.nan
                init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    with pytest.raises(ArtifactError, match="non-finite outputs"):
        ActorRunner(*corrupt(*store.read_artifact(1, "fvg"), poison))


def test_wrong_agent_is_refused(store):
    blob, _ = store.read_artifact(1, "fvg")
    lying = Manifest.for_blob("momentum", 1, blob)
    with pytest.raises(ArtifactError, match="exported for agent 'fvg'"):
        ActorRunner(blob, lying)


def test_wrong_shapes_are_refused():
    torch.manual_seed(0)
    short = TacticalMARLSystem(default_config().replace(features={"window": 52}))  # 52 x 7 splits into 4 heads
    blob, _ = export_artifact(short.actors["entry"], 1)
    with pytest.raises(ArtifactError, match="model signature"):
        ActorRunner(blob, Manifest.for_blob("entry", 1, blob, window=60))


def test_manifest_of_another_format_or_feature_set_is_refused(store):
    blob, manifest = store.read_artifact(1, "entry")
    data = json.loads(manifest.to_json())
    with pytest.raises(ArtifactError, match="unknown artifact format"):
        Manifest.from_json(json.dumps({**data, "format": "other/9"}))
    with pytest.raises(ArtifactError, match="unreadable manifest"):
        Manifest.from_json("{not json")
    renamed = Manifest.from_json(json.dumps({**data, "feature_names": ["a"] * 7}))
    with pytest.raises(ArtifactError, match="trained on features"):
        ActorRunner(blob, renamed)


def test_missing_artifact_names_the_file(tmp_path, store):
    with pytest.raises(ArtifactError, match="no artifact for entry"):
        ModelStore(tmp_path).read_artifact(1, "entry")


def test_export_leaves_the_actor_intact(trained_like):
    x = torch.randn(3, 60, 7)
    actor = trained_like.actors["fvg"]
    with torch.no_grad():
        before = actor(x)
        export_artifact(actor, 5, (VALUE_STD, VALUE_MEAN))
        after = actor(x)
    torch.testing.assert_close(before, after, rtol=0, atol=0)
