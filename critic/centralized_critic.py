"""The centralized critic of MAPPO: one value for the team, from the whole 420-dim state.

Shape (the card's): state -> self-attention -> LayerNorm -> MLP [512, 256, 128] with LayerNorm
and dropout -> value; ~1.09M parameters. The attention needs a sequence to be more than a
linear map, so the state enters as three tokens, one per agent's view of it: the 60 x 7
window with its feature columns gated by learnable weights initialized from that agent's
focus. The tokens attend to each other (residual, then LayerNorm) and are averaged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class CentralizedCritic(nn.Module):
    """V(state) for the team. forward(state (B, window * n_features)) -> (B,)."""

    def __init__(self, focus: Sequence[Sequence[float]], *, window: int = 60, n_features: int = 7, heads: int = 4,
                 hidden_dims: Sequence[int] = (512, 256, 128), dropout: float = 0.2286):
        super().__init__()
        self.window, self.n_features = window, n_features
        state_dim = window * n_features
        if state_dim % heads:
            raise ValueError(f"state of {state_dim} values does not split into {heads} attention heads")
        # One gate row per agent view; scaled so that a uniform focus gates by 1.
        self.view_gates = nn.Parameter(torch.as_tensor(focus, dtype=torch.float32) * n_features)
        self.attention = nn.MultiheadAttention(state_dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(state_dim)
        layers: list[nn.Module] = []
        width = state_dim
        for hidden in hidden_dims:
            layers += [_orthogonal(nn.Linear(width, hidden), math.sqrt(2)), nn.LayerNorm(hidden), nn.ReLU(),
                       nn.Dropout(dropout)]
            width = hidden
        self.mlp = nn.Sequential(*layers)
        self.value_head = _orthogonal(nn.Linear(width, 1), 1.0)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        b = state.shape[0]
        x = state.reshape(b, 1, self.window, self.n_features)
        tokens = (x * self.view_gates[None, :, None, :]).reshape(b, self.view_gates.shape[0], -1)
        attended, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        pooled = self.norm(tokens + attended).mean(dim=1)
        return self.value_head(self.mlp(pooled)).squeeze(-1)


def _orthogonal(linear: nn.Linear, gain: float) -> nn.Linear:
    """Orthogonal weights and zero bias, the initialization PPO networks train best from (as the actors use)."""
    nn.init.orthogonal_(linear.weight, gain)
    nn.init.zeros_(linear.bias)
    return linear
