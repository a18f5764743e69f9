"""Value normalization: the critic learns returns scaled by a running mean and standard deviation.

As the MAPPO paper recommends: returns drift in scale while the policy improves, and a critic
regressing onto standardized targets keeps a steady loss scale. The critic outputs normalized
values; GAE works on denormalized ones. Statistics are merged with the parallel-variance
formula, over all ranks at once when training is distributed, so every rank normalizes alike.
"""

from __future__ import annotations

from typing import Any

import torch

from training.distributed import DistContext


class ValueNormalizer:
    """Running mean/std of returns; the identity when disabled (training.value_normalization false)."""

    def __init__(self, enabled: bool = True, epsilon: float = 1e-4):
        self.enabled = enabled
        self.mean = 0.0
        self.var = 1.0
        self.count = epsilon  # a tiny prior count keeps the first update well defined

    @property
    def std(self) -> float:
        return max(self.var, 1e-8) ** 0.5

    def update(self, returns: torch.Tensor, dist: DistContext) -> None:
        """Merge a batch of returns (from every rank) into the running statistics."""
        if not self.enabled:
            return
        x = returns.detach().double().reshape(-1)
        count, total, total_sq = dist.sum([float(x.numel()), float(x.sum()), float((x * x).sum())])
        batch_mean = total / count
        batch_var = max(total_sq / count - batch_mean ** 2, 0.0)
        delta = batch_mean - self.mean
        new_count = self.count + count
        self.mean += delta * count / new_count
        self.var = (self.var * self.count + batch_var * count + delta ** 2 * self.count * count / new_count) / new_count
        self.count = new_count

    def normalize(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.mean) / self.std if self.enabled else values

    @property
    def affine(self) -> tuple[float, float]:
        """(scale, shift) with denormalize(v) == v * scale + shift: what an export folds into a value head."""
        return (self.std, self.mean) if self.enabled else (1.0, 0.0)

    def denormalize(self, values: torch.Tensor) -> torch.Tensor:
        scale, shift = self.affine
        return values * scale + shift

    def state_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.enabled = bool(state["enabled"])
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])
