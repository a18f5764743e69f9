"""A directory of model versions, v000000/, v000001/, ..., each written atomically. Torch-free.

A version directory holds, per agent, `<agent>.onnx` and `<agent>.manifest.json`, plus a
`version.json` (source, creation time, metrics) and, in the trainer's store, the training
checkpoint `checkpoint.pt`. Each agent process keeps a store of its own with just its files.
Versions are built under a temporary name and renamed into place, so a reader (or a process
restarted after a kill) never sees half a version; leftovers of interrupted writes are swept.

A version `tactical train` scored on its held-out bars keeps the score in version.json
(`validation`: its Sharpe ratio and returns net of costs beside flat and buy-and-hold, the bars
scored; training/evaluation.py writes it). `best_version` reads those records, so the best is
derived, never a pointer that could disagree with the versions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents.serving.artifact import ArtifactError, Manifest
from tactical.atomic import atomic_directory, atomic_write_bytes, discard_tree, sweep_temporaries
from tactical.errors import UserError
from tactical.failpoints import crash_point

_VERSION_DIR = re.compile(r"^v(\d{6,})$")
VERSION_FILE = "version.json"
CHECKPOINT_FILE = "checkpoint.pt"


def artifact_names(agent: str) -> tuple[str, str]:
    """File names of an agent's blob and manifest inside a version directory."""
    return f"{agent}.onnx", f"{agent}.manifest.json"


class StoreError(UserError):
    """The model store cannot be used; the message names its path."""


class ModelStore:
    """Versions under `root`; version 0 is the embedded default, trained versions count from 1."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def versions(self) -> list[int]:
        """Complete versions, ascending."""
        if not self.root.is_dir():
            return []
        found = [int(m.group(1)) for p in self.root.iterdir() if p.is_dir() and (m := _VERSION_DIR.match(p.name))]
        return sorted(found)

    def latest(self) -> int | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def path(self, version: int) -> Path:
        return self.root / f"v{version:06d}"

    def write_version(self, version: int, files: Mapping[str, bytes]) -> Path:
        """Write a whole version at once; FileExistsError if it exists already, StoreError if the store cannot hold
        versions (its path is a file)."""
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"the model store {self.root} is a file, not a directory (paths.model_store, --store)")
        if self.path(version).exists():
            raise FileExistsError(f"version {version} already exists in {self.root}")
        with atomic_directory(self.path(version)) as tmp:
            for name, data in files.items():
                atomic_write_bytes(tmp / name, data)
                crash_point("model_store.write_version")  # fault tests: a kill with the version half-written
        return self.path(version)

    def discard(self, version: int) -> None:
        """Remove a version (a broken copy about to be replaced), atomically for readers."""
        discard_tree(self.path(version))

    def manifest(self, version: int, agent: str) -> Manifest | None:
        """The agent's manifest of a stored version, or None when it is missing or unreadable."""
        try:
            return Manifest.from_json((self.path(version) / artifact_names(agent)[1]).read_bytes())
        except (OSError, ArtifactError):
            return None

    def sweep(self) -> int:
        """Remove leftovers of writes a killed process interrupted; call when the store's owner starts."""
        return sweep_temporaries(self.root)

    def read_artifact(self, version: int, agent: str) -> tuple[bytes, Manifest]:
        """An agent's blob and manifest, checked against each other (size, sha256)."""
        blob_name, manifest_name = artifact_names(agent)
        directory = self.path(version)
        try:
            manifest = Manifest.from_json((directory / manifest_name).read_bytes())
            blob = (directory / blob_name).read_bytes()
        except FileNotFoundError as exc:
            raise ArtifactError(f"version {version} in {self.root} has no artifact for {agent} "
                                f"({Path(exc.filename).name} missing)") from None
        if manifest.agent != agent or manifest.version != version:
            raise ArtifactError(f"{directory / manifest_name} describes {manifest.agent} v{manifest.version}")
        manifest.check_blob(blob)
        return blob, manifest

    def info(self, version: int) -> dict[str, Any]:
        """The version's version.json (empty when absent)."""
        try:
            return json.loads((self.path(version) / VERSION_FILE).read_text())
        except FileNotFoundError:
            return {}


def best_version(store: ModelStore) -> int | None:
    """The version with the highest held-out Sharpe ratio that beat flat, among those scored on the same bars as
    the newest scored version; None when none did.

    Scores on other held-out bars (another data file, a later --until, other costs) do not compare,
    so the newest scored version's bars decide which versions compete; of equal scores, the newer wins.
    """
    scored = [(v, info) for v in store.versions() if (info := store.info(v)).get("validation")]
    if not scored:
        return None
    bars = _validation_bars(scored[-1][1])
    ranked = [(info["validation"]["model"]["sharpe"], v) for v, info in scored
              if _validation_bars(info) == bars and info["validation"]["beats_flat"]]
    return max(ranked)[1] if ranked else None


def _validation_bars(info: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two validation scores comparable: the data, the scored bars' range, the costs."""
    v = info["validation"]
    return (info.get("data", {}).get("source"), v["first_ms"], v["last_ms"], v["transaction_cost"])
