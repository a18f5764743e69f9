"""Committee health and input drift, over a sliding window of the decisions a coordinator answered.

Per model version, over its last `window` decisions: how often the agents that voted disagree, the
mean entropy of the aggregated vote (nats; ln 3 = 1.10 is a coin with three faces), each agent's
action mix, the share of Holds forced by low confidence. And the newest feature row of every
window served, binned against the active version's training reference (market.drift): the PSI per
feature. The request path only writes rows into ring buffers; the figures are computed when asked
(a scrape, `tactical status`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coordinator.aggregation import LOW_CONFIDENCE
from market.drift import psi

NO_VOTE = 0  # an agent's action in the ring when it did not vote (actions are 1, 2, 3)


@dataclass(frozen=True)
class CommitteeHealth:
    decisions: int  # in the window
    disagreement: float  # share of decisions whose voters did not all pick the same action
    entropy: float  # mean entropy of the aggregated probabilities, nats
    low_confidence_holds: float  # share of Holds forced by min_confidence
    action_mix: dict[str, list[float]]  # agent -> shares of Short, Hold, Long among its votes


class _Ring:
    """The last `size` rows of a block of columns."""

    def __init__(self, size: int, width: int, dtype: type):
        self.rows = np.zeros((size, width), dtype=dtype)
        self.filled = 0
        self.next = 0

    def add(self, block: np.ndarray) -> None:
        size = len(self.rows)
        block = block[-size:]
        end = self.next + len(block)
        if end <= size:
            self.rows[self.next:end] = block
        else:
            split = size - self.next
            self.rows[self.next:] = block[:split]
            self.rows[:end - size] = block[split:]
        self.next = end % size
        self.filled = min(self.filled + len(block), size)

    def view(self) -> np.ndarray:
        return self.rows[:self.filled]


class CommitteeWatch:
    def __init__(self, agents: tuple[str, ...], window: int, n_features: int):
        self.agents = agents
        self.window = window
        self._votes: dict[int, _Ring] = {}  # version -> agent actions, then entropy, then low-confidence hold
        self._rows = _Ring(window, n_features, np.float32)

    def observe(self, version: int | None, actions: np.ndarray, combined: np.ndarray, hold_reason: np.ndarray,
                rows: np.ndarray) -> None:
        """A block of n decisions: each agent's action (n, A) (NO_VOTE where none), the aggregated probabilities
        (n, 3), the rule's hold reasons (n,), the newest feature row of each window (n, F)."""
        self._rows.add(rows)
        if version is None:
            return
        ring = self._votes.get(version)
        if ring is None:
            ring = self._votes[version] = _Ring(self.window, len(self.agents) + 2, np.float32)
        p = np.clip(combined, 1e-12, 1.0)
        entropy = -(combined * np.log(p)).sum(axis=1)
        ring.add(np.column_stack([actions, entropy, hold_reason == LOW_CONFIDENCE]))

    def health(self, version: int) -> CommitteeHealth | None:
        ring = self._votes.get(version)
        if ring is None or not ring.filled:
            return None
        data = ring.view()
        actions = data[:, :len(self.agents)].astype(np.int64)
        voted = actions != NO_VOTE
        first = np.where(voted, actions, 0).max(axis=1)
        disagree = (voted & (actions != first[:, None])).any(axis=1)
        mix = {}
        for a, name in enumerate(self.agents):
            own = actions[voted[:, a], a]
            mix[name] = [float(np.mean(own == action)) if own.size else 0.0 for action in (1, 2, 3)]
        return CommitteeHealth(len(data), float(disagree.mean()), float(data[:, -2].mean()), float(data[:, -1].mean()),
                               mix)

    def versions(self) -> list[int]:
        return sorted(self._votes)

    def drift(self, reference: dict | None) -> list[float] | None:
        """PSI per feature of the served rows against `reference` (None without one, or before any row)."""
        if reference is None or not self._rows.filled:
            return None
        return psi(reference, self._rows.view())
