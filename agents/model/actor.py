"""The tactical actor: one agent's policy over a (60, 7) feature window.

Shape (the original model card's): per-feature attention (7 softmax weights, initialized to
the agent's focus, learnable) -> Conv1D 7->32 and 32->64 (kernel 3, weight normalization,
ReLU) -> average pooling to 16 steps -> MLP 1024->128->128 (Tanh, dropout) -> policy logits
over Short/Hold/Long divided by a learnable temperature, and a value head. ~155k parameters.
The value head outputs standardized returns (the trainer's value normalization); the exported
artifact serves it in reward units (agents/model/export.py).

The pooling is a fixed (56, 16) averaging matrix that equals AdaptiveAvgPool1d(16) exactly;
unlike the adaptive op it exports to ONNX for any input length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from tactical.actions import N_ACTIONS

ATTENTION_FLOOR = 1e-4  # focus weights of 0 start at this share (a log of 0 has no gradient)
MIN_TEMPERATURE = 0.05


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights and constant bias, as CleanRL initializes PPO networks."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def adaptive_pool_matrix(length: int, out_steps: int) -> torch.Tensor:
    """(length, out_steps) matrix M with x @ M == adaptive_avg_pool1d(x, out_steps) for x of that length."""
    m = torch.zeros(length, out_steps)
    for i in range(out_steps):
        start = (i * length) // out_steps
        end = -((-(i + 1) * length) // out_steps)  # ceil
        m[start:end, i] = 1.0 / (end - start)
    return m


class TacticalActor(nn.Module):
    """Policy and value for one agent. forward(windows) -> (logits / temperature, value)."""

    def __init__(self, agent: str, focus: Sequence[float], *, window: int = 60, n_features: int = 7,
                 conv_channels: Sequence[int] = (32, 64), kernel_size: int = 3, pooled_steps: int = 16,
                 hidden_dim: int = 128, dropout: float = 0.2286, temperature_init: float = 1.0136):
        super().__init__()
        if len(focus) != n_features:
            raise ValueError(f"{agent}: focus has {len(focus)} weights, the window has {n_features} features")
        self.agent = agent
        self.window = window
        self.n_features = n_features
        focus_t = torch.as_tensor(focus, dtype=torch.float32)
        self.attention_logits = nn.Parameter(torch.log(focus_t.clamp_min(ATTENTION_FLOOR)))

        c1, c2 = conv_channels
        self.conv1 = weight_norm(layer_init(nn.Conv1d(n_features, c1, kernel_size)))
        self.conv2 = weight_norm(layer_init(nn.Conv1d(c1, c2, kernel_size)))
        conv_len = window - 2 * (kernel_size - 1)
        if conv_len < pooled_steps:
            raise ValueError(f"a window of {window} bars is too short for {pooled_steps} pooled steps")
        self.register_buffer("pool", adaptive_pool_matrix(conv_len, pooled_steps), persistent=False)

        self.mlp = nn.Sequential(
            layer_init(nn.Linear(c2 * pooled_steps, hidden_dim)), nn.Tanh(), nn.Dropout(dropout),
            layer_init(nn.Linear(hidden_dim, hidden_dim)), nn.Tanh(), nn.Dropout(dropout),
        )
        self.policy_head = layer_init(nn.Linear(hidden_dim, N_ACTIONS), std=0.01)
        self.value_head = layer_init(nn.Linear(hidden_dim, 1), std=1.0)
        self.temperature = nn.Parameter(torch.tensor(float(temperature_init)))

    def attention_weights(self) -> torch.Tensor:
        """The 7 feature-attention weights (softmax), summing to 1."""
        return torch.softmax(self.attention_logits, dim=0)

    def features(self, windows: torch.Tensor) -> torch.Tensor:
        """Hidden representation (B, hidden_dim) of windows (B, window, n_features)."""
        x = windows * self.attention_weights()  # weigh each feature column
        x = torch.relu(self.conv1(x.transpose(1, 2)))
        x = torch.relu(self.conv2(x))
        x = torch.matmul(x, self.pool)  # (B, c2, pooled_steps)
        return self.mlp(x.flatten(1))

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(windows)
        logits = self.policy_head(h) / self.temperature.clamp_min(MIN_TEMPERATURE)
        return logits, self.value_head(h).squeeze(-1)


class ProbabilityHead(nn.Module):
    """The serving graph: windows -> (probabilities, value), what the ONNX artifact computes."""

    def __init__(self, actor: TacticalActor):
        super().__init__()
        self.actor = actor

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, value = self.actor(windows)
        return torch.softmax(logits, dim=-1), value
