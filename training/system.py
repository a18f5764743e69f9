"""TacticalMARLSystem: the three actors and the centralized critic in one module.

For training and in-process use; the serving path runs the actors' ONNX artifacts instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from agents.model.actor import TacticalActor
from critic.centralized_critic import CentralizedCritic
from tactical.actions import N_ACTIONS
from tactical.config import AGENT_NAMES, Config, ModelConfig, as_config
from tactical.wire import N_FEATURES


class TacticalMARLSystem(nn.Module):
    """Actors fvg, momentum, entry plus the critic.

    Build from a Config (or parsed YAML mapping); the model card's keyword arguments
    (input_shape, action_dim, hidden_dim, critic_hidden_dims, dropout_rate, temperature_init)
    override the config's model section.
    """

    def __init__(self, config: Config | Mapping[str, Any] | None = None, *, input_shape: Sequence[int] | None = None,
                 action_dim: int = N_ACTIONS, hidden_dim: int | None = None,
                 critic_hidden_dims: Sequence[int] | None = None, dropout_rate: float | None = None,
                 temperature_init: float | None = None):
        super().__init__()
        cfg = as_config(config)
        overrides = {k: v for k, v in {"hidden_dim": hidden_dim, "dropout": dropout_rate,
                                       "temperature_init": temperature_init,
                                       "critic_hidden_dims": list(critic_hidden_dims) if critic_hidden_dims else None,
                                       }.items() if v is not None}
        if overrides:
            cfg = cfg.replace(model=overrides)
        window = cfg.features.window
        if input_shape is not None and tuple(input_shape) != (window, N_FEATURES):
            raise ValueError(f"input_shape {tuple(input_shape)} differs from the config's ({window}, {N_FEATURES})")
        if action_dim != N_ACTIONS:
            raise ValueError(f"action_dim must be {N_ACTIONS} (Short, Hold, Long), got {action_dim}")
        self.config = cfg
        m: ModelConfig = cfg.model
        self.window = window
        self.actors = nn.ModuleDict({
            name: TacticalActor(name, m.focus[name], window=window, n_features=N_FEATURES,
                                conv_channels=m.conv_channels, kernel_size=m.kernel_size,
                                pooled_steps=m.pooled_steps, hidden_dim=m.hidden_dim, dropout=m.dropout,
                                temperature_init=m.temperature_init)
            for name in AGENT_NAMES
        })
        self.critic = CentralizedCritic([m.focus[name] for name in AGENT_NAMES], window=window,
                                        n_features=N_FEATURES, heads=m.critic_heads,
                                        hidden_dims=m.critic_hidden_dims, dropout=m.dropout)

    def forward(self, windows: torch.Tensor, deterministic: bool = False) -> dict[str, Any]:
        """Per agent: action, probabilities, value and attention; plus the critic's value.

        windows: (B, 60, 7). deterministic=True takes each agent's argmax, else samples.
        """
        if windows.dim() != 3 or tuple(windows.shape[1:]) != (self.window, N_FEATURES):
            raise ValueError(f"windows must be (batch, {self.window}, {N_FEATURES}), got {tuple(windows.shape)}")
        agents: dict[str, dict[str, torch.Tensor]] = {}
        for name, actor in self.actors.items():
            logits, value = actor(windows)
            probs = torch.softmax(logits, dim=-1)
            action = probs.argmax(-1) if deterministic else torch.distributions.Categorical(logits=logits).sample()
            agents[name] = {"action": action, "probabilities": probs, "value": value,
                            "attention": actor.attention_weights()}
        return {"agents": agents, "critic": self.critic(windows.flatten(1))}

    def mirrored(self) -> TacticalMARLSystem:
        """This model trading the other way round: every actor's Short and Long logits swapped, in place.

        A deliberately bad candidate wherever this model has an edge: what the promotion gate must
        refuse and the guard must roll back (the demo shows both; the tests use it).
        """
        with torch.no_grad():
            for actor in self.actors.values():
                for p in (actor.policy_head.weight, actor.policy_head.bias):
                    p[[0, 2]] = p[[2, 0]].clone()
        return self

    def get_model_info(self) -> dict[str, Any]:
        """Parameter counts per part, and the architecture's headline numbers."""
        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        actors = {name: count(actor) for name, actor in self.actors.items()}
        return {
            "actors": actors,
            "critic": count(self.critic),
            "total": count(self),
            "trainable": sum(p.numel() for p in self.parameters() if p.requires_grad),
            "input_shape": (self.window, N_FEATURES),
            "action_dim": N_ACTIONS,
        }
