"""Checkpoints of the whole system: weights, optimizer state, config, version, feature schema, metrics.

One file, written atomically. Loading checks the feature schema, the architecture settings of
the config's model section and the parameter shapes against the model it is loaded into, and
says exactly what differs. Settings come first: some (critic_heads) change what the network
computes without changing any parameter's shape.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path
from typing import Any

import torch

from tactical.atomic import atomic_write_bytes
from tactical.config import Config, as_config
from tactical.errors import UserError
from tactical.wire import FEATURE_NAMES
from training.system import TacticalMARLSystem

FORMAT = "tactical-checkpoint/1"


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be loaded into this model; the message says what differs."""


def feature_schema(cfg: Config) -> dict[str, Any]:
    """What a model's inputs mean: the feature names and every setting that shapes their values."""
    return {"names": list(FEATURE_NAMES), **dataclasses.asdict(cfg.features)}


# The model-section keys that define the network. The others are not architecture: dropout is
# training-only (off in eval), temperature_init and focus only initialize learnable parameters,
# init_seed only picks the initial weights. features.window is checked with the feature schema.
ARCHITECTURE_KEYS = ("conv_channels", "kernel_size", "pooled_steps", "hidden_dim", "critic_hidden_dims",
                     "critic_heads")


def _architecture_settings(model_section: dict[str, Any]) -> dict[str, Any]:
    """The architecture keys of a config's model section (a dict, as a checkpoint saves it), as model.<key>."""
    return {f"model.{key}": model_section[key] for key in ARCHITECTURE_KEYS if key in model_section}


def _shapes(model: TacticalMARLSystem) -> dict[str, list[int]]:
    return {name: list(t.shape) for name, t in model.state_dict().items()}


def checkpoint_bytes(model: TacticalMARLSystem, *, version: int = 0, optimizer: torch.optim.Optimizer | None = None,
                     metrics: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> bytes:
    """The checkpoint as bytes (what save_checkpoint writes, and what a model store version holds)."""
    payload = {
        "format": FORMAT,
        "version": int(version),
        "config": model.config.shareable_dict(),
        "feature_schema": feature_schema(model.config),
        "architecture": _shapes(model),
        "model_state": model.state_dict(),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "metrics": metrics or {},
        "extra": extra or {},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def save_checkpoint(path: str | Path, model: TacticalMARLSystem, **kwargs: Any) -> Path:
    """Write a checkpoint atomically (see checkpoint_bytes for the keyword arguments)."""
    atomic_write_bytes(path, checkpoint_bytes(model, **kwargs))
    return Path(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint payload (tensors and plain data only: loaded with weights_only)."""
    if Path(path).is_file() and not zipfile.is_zipfile(path):  # what torch.save writes
        raise CheckpointError(f"{path} is not a readable checkpoint: not the zip archive torch.save writes "
                              f"(truncated, or another kind of file)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except Exception as exc:  # torch raises several types for corrupt files
        raise CheckpointError(f"{path} is not a readable checkpoint: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint")
    return payload


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = sorted(set(saved) | set(current))
    return [f"{k}: checkpoint {saved.get(k, '(absent)')} vs model {current.get(k, '(absent)')}"
            for k in keys if saved.get(k) != current.get(k)]


def load_checkpoint(path: str | Path, model: TacticalMARLSystem | None = None,
                    optimizer: torch.optim.Optimizer | None = None) -> tuple[TacticalMARLSystem, dict[str, Any]]:
    """Load weights (and optimizer state) into `model`, or into a new model built from the saved config.

    Returns the model and the payload (version, metrics, config...). Raises CheckpointError
    naming the differences when the feature schema, an architecture setting or a parameter
    shape does not match.
    """
    payload = read_checkpoint(path)
    if model is None:
        model = TacticalMARLSystem(as_config(payload["config"]))  # over the defaults: older checkpoints lack newer keys
    diffs = _differences(payload["feature_schema"], feature_schema(model.config))
    if diffs:
        raise CheckpointError(f"{path} was trained on other features: " + "; ".join(diffs))
    diffs = (_differences(_architecture_settings(payload["config"]["model"]),
                          _architecture_settings(dataclasses.asdict(model.config.model)))
             or _differences(payload["architecture"], _shapes(model)))
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise CheckpointError(f"{path} holds another architecture: {shown}")
    model.load_state_dict(payload["model_state"])
    if optimizer is not None and payload["optimizer_state"] is not None:
        optimizer.load_state_dict(payload["optimizer_state"])
    return model, payload
