"""The one aggregation rule, shared by serving (coordinator) and training (environment).

Weighted mean of the voting agents' probability vectors (configured weights, renormalized
over the agents that voted). The decision is the argmax, except Hold when:
- fewer than `min_agents` agents voted (TOO_FEW_AGENTS),
- the winning probability is under `min_confidence` (LOW_CONFIDENCE),
- two actions tie for the top (TIE): balanced evidence means stay flat.
Training applies the same function to one-hot vectors of the agents' sampled actions.
Actions are tactical.actions values (Short 1, Hold 2, Long 3), probability vectors are in
that order. Numpy only, vectorized over a batch of decisions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tactical.actions import N_ACTIONS, Action, actions_from_indices, indices_from_actions, to_positions
from tactical.config import AGENT_NAMES, AggregationConfig

# Why a decision is Hold against its argmax (0: it is not).
DECIDED, TOO_FEW_AGENTS, LOW_CONFIDENCE, TIE = 0, 1, 2, 3
_TIE_TOLERANCE = 1e-9
_HOLD = int(Action.HOLD)  # read once: an enum member's lookup costs more than the rest of a small block's rule
SUM_TOLERANCE = 1e-3  # a vote's probabilities must sum to 1 within this (float32 softmax sums to 1 within 1e-6)


def valid_votes(probabilities: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Which answers are votes, (N, A) bool for probabilities (N, A, 3) and values (N, A): finite probabilities in
    [0, 1] summing to 1, and a finite value. Anything else (an agent fed a window that overflows its network
    answers NaN) is an invalid vote: left out of the decision like a missing one, never aggregated."""
    p = np.asarray(probabilities, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        in_simplex = ((p >= 0) & (p <= 1)).all(axis=-1) & (np.abs(p.sum(axis=-1) - 1) <= SUM_TOLERANCE)
    return np.isfinite(p).all(axis=-1) & np.isfinite(np.asarray(values, dtype=np.float64)) & in_simplex


@dataclass(frozen=True)
class Aggregate:
    actions: np.ndarray  # (N,) int64 Action values
    combined: np.ndarray  # (N, 3) float64, rows sum to 1 (zeros when nobody voted)
    confidence: np.ndarray  # (N,) the highest combined probability
    hold_reason: np.ndarray  # (N,) DECIDED, TOO_FEW_AGENTS, LOW_CONFIDENCE or TIE


@dataclass(frozen=True)
class AggregationRule:
    weights: np.ndarray  # (A,) per agent, in AGENT_NAMES order
    min_confidence: float
    min_agents: int

    @classmethod
    def from_config(cls, cfg: AggregationConfig) -> AggregationRule:
        return cls(np.array([cfg.weights[name] for name in AGENT_NAMES], dtype=np.float64), cfg.min_confidence,
                   cfg.min_agents)

    def __call__(self, probabilities: np.ndarray, voted: np.ndarray | None = None) -> Aggregate:
        """probabilities (N, A, 3); voted (N, A) bool, which agents answered with a valid vote (default: all).
        The probabilities of agents that did not vote are ignored, whatever they hold."""
        n, a, _ = np.shape(probabilities)
        voted = np.ones((n, a), dtype=bool) if voted is None else np.asarray(voted, dtype=bool)
        probs = np.where(voted[..., None], np.asarray(probabilities, dtype=np.float64), 0.0)
        w = self.weights[None, :] * voted
        total = w.sum(axis=1, keepdims=True)
        combined = np.einsum("na,nak->nk", w, probs) / np.where(total > 0, total, 1.0)
        confidence = combined.max(axis=1)
        top = combined >= confidence[:, None] - _TIE_TOLERANCE
        reason = np.full(n, DECIDED, dtype=np.int64)
        reason[top.sum(axis=1) > 1] = TIE
        reason[confidence < self.min_confidence] = LOW_CONFIDENCE
        reason[voted.sum(axis=1) < self.min_agents] = TOO_FEW_AGENTS
        actions = np.where(reason == DECIDED, actions_from_indices(combined.argmax(axis=1)), _HOLD)
        return Aggregate(actions, combined, confidence, reason)

    def vote(self, actions: np.ndarray) -> np.ndarray:
        """The team's action from each agent's action, actions (N, A) Action values -> (N,) Action values."""
        one_hot = np.eye(N_ACTIONS)[indices_from_actions(actions)]
        return self(one_hot).actions

    def random_positions(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """The random baseline: every agent votes uniformly at random, votes aggregated as in training."""
        return to_positions(self.vote(rng.integers(Action.SHORT, Action.LONG + 1, size=(n, len(self.weights)))))
