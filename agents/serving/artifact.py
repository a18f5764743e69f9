"""The serving artifact: one self-contained ONNX blob per agent and version, and its manifest.

Torch-free: agent servers import this. A manifest is JSON:
  {"format": "tactical-actor-onnx/1", "agent": "fvg", "version": 3, "sha256": "...",
   "size_bytes": 626725, "inputs": {"windows": ["batch", 60, 7]},
   "outputs": {"probabilities": ["batch", 3], "value": ["batch"]},
   "feature_names": [...], "created": "2026-11-24T00:00:00Z"}
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from tactical.errors import UserError
from tactical.wire import FEATURE_NAMES, N_FEATURES

FORMAT = "tactical-actor-onnx/1"
INPUT_NAME = "windows"
OUTPUT_NAMES = ("probabilities", "value")


class ArtifactError(UserError, ValueError):
    """An artifact that must not be served; the message says what is wrong with it."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Manifest:
    agent: str
    version: int
    sha256: str
    size_bytes: int
    window: int = 60
    feature_names: list[str] = field(default_factory=lambda: list(FEATURE_NAMES))
    format: str = FORMAT
    created: str = ""
    # The feature settings (config `features:`) the version was trained with: a coordinator that computes
    # features otherwise must not serve it. None: not recorded (versions published before they were).
    feature_settings: dict[str, Any] | None = None
    # Per feature, quantile bins of the training bars and their shares (market.drift.reference_bins), for the
    # coordinator's input-drift watch. None: not recorded (the embedded default has no training bars).
    feature_reference: dict[str, Any] | None = None

    @property
    def inputs(self) -> dict[str, list]:
        return {INPUT_NAME: ["batch", self.window, N_FEATURES]}

    @property
    def outputs(self) -> dict[str, list]:
        return {OUTPUT_NAMES[0]: ["batch", 3], OUTPUT_NAMES[1]: ["batch"]}

    @classmethod
    def for_blob(cls, agent: str, version: int, blob: bytes, window: int = 60,
                 feature_settings: dict[str, Any] | None = None,
                 feature_reference: dict[str, Any] | None = None) -> Manifest:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        return cls(agent=agent, version=version, sha256=sha256_hex(blob), size_bytes=len(blob), window=window,
                   created=now, feature_settings=feature_settings, feature_reference=feature_reference)

    def to_json(self) -> str:
        data = asdict(self)
        data.update(inputs=self.inputs, outputs=self.outputs)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ArtifactError(f"unknown artifact format {data.get('format')!r}, expected {FORMAT!r}")
            manifest = cls(agent=str(data["agent"]), version=int(data["version"]), sha256=str(data["sha256"]),
                           size_bytes=int(data["size_bytes"]), window=int(data["window"]),
                           feature_names=list(data["feature_names"]), created=str(data.get("created", "")),
                           feature_settings=data.get("feature_settings"),
                           feature_reference=data.get("feature_reference"))
        except (ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, ArtifactError):
                raise
            raise ArtifactError(f"unreadable manifest: {exc!r}") from None
        if data.get("inputs") != manifest.inputs or data.get("outputs") != manifest.outputs:
            raise ArtifactError(f"manifest signature {data.get('inputs')} -> {data.get('outputs')} differs from "
                                f"{manifest.inputs} -> {manifest.outputs}")
        return manifest

    def check_blob(self, blob: bytes) -> None:
        """Raise ArtifactError unless `blob` is the exact blob this manifest describes."""
        if len(blob) != self.size_bytes:
            raise ArtifactError(f"{self.agent} v{self.version}: blob is {len(blob)} bytes, "
                                f"the manifest says {self.size_bytes} (truncated or padded)")
        digest = sha256_hex(blob)
        if digest != self.sha256:
            raise ArtifactError(f"{self.agent} v{self.version}: sha256 {digest[:12]}... does not match "
                                f"the manifest's {self.sha256[:12]}...")
        if self.feature_names != list(FEATURE_NAMES):
            raise ArtifactError(f"{self.agent} v{self.version}: trained on features {self.feature_names}, "
                                f"this build computes {list(FEATURE_NAMES)}")
