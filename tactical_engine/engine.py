"""The coordinator's decision path in process: one version's three ONNX actors and the same rule.

For backtests and tools that need thousands of decisions without a cluster; every decision
equals what the served path answers for the same window and version (tested).
"""

from __future__ import annotations

import numpy as np

from agents.serving.model_store import ModelStore
from agents.serving.runtime import ActorRunner
from coordinator.aggregation import Aggregate, AggregationRule, valid_votes
from tactical.config import AGENT_NAMES, Config


class LocalEngine:
    def __init__(self, store: ModelStore, version: int, cfg: Config):
        self.version = version
        self.runners = [ActorRunner(*store.read_artifact(version, name)) for name in AGENT_NAMES]
        self.rule = AggregationRule.from_config(cfg.aggregation)

    def decide(self, windows: np.ndarray, batch: int = 1024) -> Aggregate:
        """Decisions for windows (N, 60, 7): every agent's probabilities, checked (an invalid vote is left out,
        as the coordinator leaves it out) and aggregated by the rule."""
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        probs = np.empty((len(windows), len(self.runners), 3), dtype=np.float32)
        values = np.empty((len(windows), len(self.runners)), dtype=np.float32)
        for start in range(0, len(windows), batch):
            chunk = windows[start:start + batch]
            for a, runner in enumerate(self.runners):
                probs[start:start + len(chunk), a], values[start:start + len(chunk), a] = runner.infer(chunk)
        return self.rule(probs, valid_votes(probs, values))
