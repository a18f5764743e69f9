"""Decisions answered while a shadow version runs, until the shadow's votes on their windows are in.

The agents answer with the active version at once and run the shadow's pass after their answer is
written; its probabilities ride on their next answer (agents.serving.shadowing). So a client never
waits for a shadow, and what depends on the shadow's decision waits here: its agreement with the
active one, the live scores, the audit row that records both. Blocks are finished in the order they
were answered (live scores go bar after bar per instrument), each once every agent that voted has
sent its shadow part (or its link broke), or after SHADOW_WAIT_S.

Under traffic the next decision takes the finished blocks' rows into its own rule call
(`take_ready`, coordinator.decisions.decide_block); when no decision follows within IDLE_S, the
book judges them itself.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from coordinator.aggregation import AggregationRule
from coordinator.decisions import shadow_decisions
from coordinator.links import Fanout

SHADOW_WAIT_S = 2.0  # an agent's shadow part not in by then: the decision is recorded without its vote
IDLE_S = 0.005  # parts in and no decision has taken them for this long: the book judges them itself


@dataclass
class Answered:
    """A block of decisions as answered, and what finishing it needs."""

    items: Sequence  # the decoded requests (coordinator.inputs.Decoded)
    decisions: list  # their Decision messages
    version: int | None
    shadow: int | None  # the shadow version asked for; None: none ran
    traceparent: str
    fanout: Fanout | None = None  # where the shadow's parts arrive
    voters: tuple[int, ...] = ()  # agents whose shadow part is awaited (those whose live vote came in)
    due: float = 0.0  # loop time after which it is finished without the missing parts

    def complete(self) -> bool:
        return self.fanout is None or all(self.fanout.shadow_in[a] for a in self.voters)

    def rows(self, agents: int) -> np.ndarray:
        """The shadow's probabilities (n, agents, 3); zeros where an agent's part did not come."""
        probs = np.zeros((len(self.decisions), agents, 3))
        if self.fanout is not None:
            for a in self.voters:
                if self.fanout.shadows[a] is not None:
                    probs[:, a] = self.fanout.shadows[a]
        return probs


class ShadowBook:
    def __init__(self, rule: AggregationRule, agents: int, finish: Callable[[Answered, list[int]], None],
                 wait_s: float = SHADOW_WAIT_S):
        self.rule, self.agents, self.finish, self.wait_s = rule, agents, finish, wait_s
        self.pending = 0  # decisions waiting here
        self._entries: collections.deque[Answered] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, entry: Answered) -> None:
        """Hold a block until its shadow parts are in (a block without a fanout waits only for those before it)."""
        loop = asyncio.get_running_loop()
        entry.due = loop.time() + self.wait_s
        self._entries.append(entry)
        self.pending += len(entry.decisions)
        if entry.fanout is not None:
            entry.fanout.on_shadow = self._poke
        self._arm(entry.due if entry.fanout is not None else loop.time() + IDLE_S)

    def take_ready(self, everything: bool = False) -> tuple[list[Answered], np.ndarray | None]:
        """The blocks at the head that are complete or overdue (all: `everything`), and their shadow rows."""
        now = asyncio.get_running_loop().time()
        ready = []
        while self._entries and (everything or self._entries[0].complete() or self._entries[0].due <= now):
            ready.append(self._entries.popleft())
        if not ready:
            return ready, None
        return ready, np.concatenate([entry.rows(self.agents) for entry in ready])

    def done(self, ready: list[Answered], actions: list[int]) -> None:
        """Finish the blocks `take_ready` gave, with the shadow's actions on their rows (0: no shadow vote)."""
        start = 0
        for entry in ready:
            end = start + len(entry.decisions)
            self.pending -= len(entry.decisions)
            self.finish(entry, actions[start:end])
            start = end
        if self._entries:
            self._arm(self._entries[0].due)

    def flush(self) -> None:
        """Finish every block now, with what has arrived (the coordinator is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._judge(everything=True)

    def _poke(self) -> None:
        """A shadow part arrived: unless a decision takes it first, judge within IDLE_S."""
        self._arm(asyncio.get_running_loop().time() + IDLE_S)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._judge()

    def _judge(self, everything: bool = False) -> None:
        ready, rows = self.take_ready(everything)
        if ready:
            self.done(ready, shadow_decisions(rows, self.rule))
        elif self._entries:
            self._arm(self._entries[0].due)
