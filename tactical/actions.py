"""The one action encoding: Short, Hold, Long as the wire's enum values 1, 2, 3.

Everything that speaks of a decision uses these numbers: the aggregation rule's output, the
wire, the backtest, the training environment's action spaces. Two derived views, never
encodings of their own:
- `index` (0, 1, 2): where an action sits in a probability vector or a network's outputs;
- `position` (-1, 0, +1): the units held after the decision.
"""

from __future__ import annotations

import enum

import numpy as np

from tactical.v1 import common_pb2


class Action(enum.IntEnum):
    SHORT = common_pb2.ACTION_SHORT
    HOLD = common_pb2.ACTION_HOLD
    LONG = common_pb2.ACTION_LONG

    @property
    def index(self) -> int:
        """Position in probability vectors and network outputs (Short, Hold, Long)."""
        return int(self) - 1

    @property
    def position(self) -> int:
        """Units held after this decision: -1, 0 or +1."""
        return int(self) - 2

    @property
    def label(self) -> str:
        return self.name.capitalize()

    @classmethod
    def from_index(cls, index: int) -> Action:
        return cls(int(index) + 1)


N_ACTIONS = len(Action)
ACTIONS = tuple(Action)  # in probability-vector order


def actions_from_indices(indices: np.ndarray) -> np.ndarray:
    """Action values for an array of probability-vector indices (e.g. an argmax or a sampled action)."""
    return np.asarray(indices, dtype=np.int64) + 1


def indices_from_actions(actions: np.ndarray) -> np.ndarray:
    """Probability-vector indices for an array of action values."""
    return np.asarray(actions, dtype=np.int64) - 1


def to_positions(actions: np.ndarray) -> np.ndarray:
    """Positions in {-1, 0, +1} for an array of action values."""
    return np.asarray(actions, dtype=np.int64) - 2


ACTION_LABELS = {0: "-", **{int(action): action.label for action in Action}}  # the wire's 0: an error answer


def action_label(action: int) -> str:
    """'Short', 'Hold', 'Long', or '-' for the wire's unspecified 0 (an error answer)."""
    return ACTION_LABELS.get(action, "-")
