"""Committee health and input drift, over a sliding window of the decisions a coordinator answered.

Per model version, over its last `window` decisions: how often the agents that voted disagree, the
mean entropy of the aggregated vote (nats; ln 3 = 1.10 is a coin with three faces), each agent's
action mix, the share of Holds forced by low confidence. And the newest feature row of every
window served, binned against the active version's training reference (market.drift): the PSI per
feature. The request path only queues what it decided; the figures are computed when asked (a
scrape, `tactical status`).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass

import numpy as np

from coordinator.aggregation import LOW_CONFIDENCE
from market.drift import MIN_ROWS, psi

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
    """Committee health per version and the served features, over the last `window` decisions.

    The request path only appends what a block of decisions produced to a queue (a deque append,
    and the newest feature row of each window: no numpy on a single decision's path); the queue is
    folded into the ring buffers when a reader asks (a scrape, `tactical status`) or when FOLD_AT
    decisions wait. Reads and folds hold a lock.
    """

    FOLD_AT = 4096  # decisions waiting before the request path folds them itself (a few hundred kB at most)

    def __init__(self, agents: tuple[str, ...], window: int, n_features: int):
        self.agents = agents
        self.window = window
        self.n_features = n_features
        self._votes: dict[int, _Ring] = {}  # version -> agent actions, then entropy, then low-confidence hold
        self._rows = _Ring(window, n_features, np.float32)
        self._waiting: collections.deque = collections.deque()
        self._waiting_decisions = 0
        self._row_bytes = n_features * 4
        self._lock = threading.Lock()

    def observe(self, version: int | None, voted: np.ndarray, probabilities: np.ndarray, combined: np.ndarray,
                hold_reason: np.ndarray, windows: bytes) -> None:
        """A block of n decisions: which votes counted (n, A), each agent's probabilities (n, A, 3), the
        aggregated probabilities (n, 3), the rule's hold reasons (n,), the n windows as sent (float32 bytes);
        only each window's newest row is kept (a batch's windows would hold megabytes until the fold)."""
        n = len(voted)
        rows = windows[-self._row_bytes:] if n == 1 else \
            np.frombuffer(windows, dtype="<f4").reshape(n, -1, self.n_features)[:, -1].tobytes()
        self._waiting.append((version, voted, probabilities, combined, hold_reason, rows))
        self._waiting_decisions += n
        if self._waiting_decisions >= self.FOLD_AT:
            self._fold()

    def _fold(self) -> None:
        """Fold the waiting blocks into the rings, all at once (numpy per fold, not per decision)."""
        with self._lock:
            blocks = [self._waiting.popleft() for _ in range(len(self._waiting))]
            self._waiting_decisions = 0
            if not blocks:
                return
            self._rows.add(np.frombuffer(b"".join(block[5] for block in blocks), dtype="<f4").reshape(
                -1, self.n_features))
            for version in dict.fromkeys(block[0] for block in blocks):
                if version is None:
                    continue
                mine = [block for block in blocks if block[0] == version]
                voted, probabilities, combined, hold_reason = (np.concatenate([block[k] for block in mine])
                                                               for k in (1, 2, 3, 4))
                ring = self._votes.get(version)
                if ring is None:
                    ring = self._votes[version] = _Ring(self.window, len(self.agents) + 2, np.float32)
                actions = np.where(voted, probabilities.argmax(axis=2) + 1, NO_VOTE)
                entropy = -(combined * np.log(np.clip(combined, 1e-12, 1.0))).sum(axis=1)
                ring.add(np.column_stack([actions, entropy, hold_reason == LOW_CONFIDENCE]))

    def health(self, version: int) -> CommitteeHealth | None:
        self._fold()
        with self._lock:
            ring = self._votes.get(version)
            if ring is None or not ring.filled:
                return None
            data = ring.view().copy()
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
        self._fold()
        with self._lock:
            return sorted(self._votes)

    def drift(self, reference: dict | None) -> list[float] | None:
        """PSI per feature of the served rows against `reference` (None without one, or before MIN_ROWS rows)."""
        if reference is None:
            return None
        self._fold()
        with self._lock:
            if self._rows.filled < MIN_ROWS:
                return None
            rows = self._rows.view().copy()
        return psi(reference, rows)
