"""Publish a system as a model-store version: three ONNX artifacts, the checkpoint, version.json."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import torch

from agents.model.export import export_artifact
from agents.serving.model_store import CHECKPOINT_FILE, VERSION_FILE, ModelStore, artifact_names
from tactical.config import Config
from training.checkpoint import checkpoint_bytes, load_checkpoint
from training.system import TacticalMARLSystem
from training.value_norm import ValueNormalizer

log = logging.getLogger(__name__)


def version_files(model: TacticalMARLSystem, version: int, *, source: str,
                  optimizer: torch.optim.Optimizer | None = None, metrics: dict[str, Any] | None = None,
                  extra: dict[str, Any] | None = None, info: dict[str, Any] | None = None,
                  value_norm: ValueNormalizer | None = None,
                  feature_reference: dict[str, Any] | None = None) -> dict[str, bytes]:
    """Every file of a version directory, in memory.

    `extra` goes into the checkpoint (trainer state); `info` into version.json (for example the
    range of bars trained on, which backtests read to tell in-sample from out-of-sample).
    `value_norm`: the trainer's value normalizer, whose statistics the artifacts fold in so
    that agents serve values in reward units; without it (a model never trained) the value
    heads' outputs are served as they are. The manifests record the model's feature settings and
    `feature_reference` (market.drift.reference_bins of the training bars), for the coordinator.
    """
    value_affine = value_norm.affine if value_norm is not None else (1.0, 0.0)
    settings = dataclasses.asdict(model.config.features)
    files: dict[str, bytes] = {}
    manifests = {}
    for name, actor in model.actors.items():
        blob, manifest = export_artifact(actor, version, value_affine, settings, feature_reference)
        blob_name, manifest_name = artifact_names(name)
        files[blob_name] = blob
        files[manifest_name] = manifest.to_json().encode()
        manifests[name] = manifest.sha256
    files[CHECKPOINT_FILE] = checkpoint_bytes(model, version=version, optimizer=optimizer, metrics=metrics,
                                              extra=extra)
    summary = {**(info or {}), "version": version, "source": source, "sha256": manifests, "metrics": metrics or {},
               "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")}
    files[VERSION_FILE] = json.dumps(summary, indent=2, sort_keys=True).encode()
    return files


def publish(store: ModelStore, model: TacticalMARLSystem, *, source: str, version: int | None = None,
            optimizer: torch.optim.Optimizer | None = None, metrics: dict[str, Any] | None = None,
            extra: dict[str, Any] | None = None, info: dict[str, Any] | None = None,
            value_norm: ValueNormalizer | None = None, feature_reference: dict[str, Any] | None = None) -> int:
    """Write `model` as a new version (the next free number unless given); return the version.

    Keyword arguments: see version_files (pass the trainer's value_norm with a trained model).
    """
    while True:
        v = version if version is not None else max((store.latest() or 0) + 1, 1)
        try:
            store.write_version(v, version_files(model, v, source=source, optimizer=optimizer, metrics=metrics,
                                                 extra=extra, info=info, value_norm=value_norm,
                                                 feature_reference=feature_reference))
            return v
        except FileExistsError:
            if version is not None:
                raise
            # another writer took that number: take the next one


def publish_checkpoint(store: ModelStore, path: str | Path) -> int:
    """Publish a training checkpoint (a file, or a version directory holding one) as a new version.

    A trainer's checkpoint carries its value statistics and update count: they go with it, so
    the agents serve values in reward units and the version can be resumed like any other.
    """
    path = Path(path)
    model, payload = load_checkpoint(path / CHECKPOINT_FILE if path.is_dir() else path)
    optimizer = None
    if payload.get("optimizer_state") is not None:  # carried over as saved (its param groups hold lr and eps)
        optimizer = torch.optim.Adam(model.parameters())
        optimizer.load_state_dict(payload["optimizer_state"])
    extra = payload.get("extra") or {}
    value_norm = None
    if extra.get("trainer") is not None:
        value_norm = ValueNormalizer()
        value_norm.load_state_dict(extra["trainer"]["value_norm"])
    return publish(store, model, source=f"checkpoint {path}", optimizer=optimizer, metrics=payload.get("metrics"),
                   extra=extra, value_norm=value_norm)


def default_model(cfg: Config) -> TacticalMARLSystem:
    """The embedded default: a freshly initialized model, seeded by model.init_seed."""
    with torch.random.fork_rng():
        torch.manual_seed(cfg.model.init_seed)
        return TacticalMARLSystem(cfg).eval()


def ensure_default_version(store_root: str | Path, cfg: Config) -> int | None:
    """Give a model store without version 0 the embedded default; return 0 if written, else None.

    Every store holds it (trained versions count from 1), so that the untrained default can be
    served, rolled back to and scored like any other version."""
    store = ModelStore(store_root)
    store.sweep()
    if 0 in store.versions():
        return None
    source = f"embedded default: freshly initialized, seed {cfg.model.init_seed}, untrained"
    try:
        publish(store, default_model(cfg), source=source, version=0)
    except FileExistsError:
        return None  # another process wrote it first
    log.warning("model store %s had no version 0: wrote it (%s)", store.root, source)
    return 0


def main(argv: list[str] | None = None) -> None:
    """`python -m training.versions --ensure-default STORE`: what the launcher runs in a child process."""
    import argparse

    from tactical.config import load_config

    parser = argparse.ArgumentParser(description="Write the embedded default (version 0) into a model store "
                                                 "without it.")
    parser.add_argument("--ensure-default", metavar="STORE", required=True, help="model store directory")
    parser.add_argument("--config", metavar="YAML", default=None, help="configuration file (model section)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    ensure_default_version(args.ensure_default, load_config(args.config))


if __name__ == "__main__":
    main()
