"""What the Python API answers: plain, typed dataclasses, never protobuf.

The in-process Engine and the cluster's Client (sync and asyncio) return the same Decision for the
same window and version: the engine builds it with the coordinator's own code (coordinator.decisions)
and converts it here, as the clients convert what the coordinator sends.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import grpc

from market.bars import Bar
from tactical.actions import Action
from tactical.errors import UserError
from tactical.v1 import decision_pb2

__all__ = ["Action", "Bar", "Decision", "DecisionRefused", "Refusal", "Vote"]


@dataclass(frozen=True)
class Vote:
    """One agent's part in a decision."""

    agent: str
    action: Action | None  # None: the agent did not vote (see error)
    probabilities: tuple[float, float, float] | None  # Short, Hold, Long
    value: float | None  # the agent's value estimate, reward units
    latency_ms: float
    error: str  # why the agent did not vote; "" when it did

    @property
    def ok(self) -> bool:
        return self.action is not None


@dataclass(frozen=True)
class Decision:
    """One decision: the action and why, every agent's vote, the model version that made it."""

    action: Action
    confidence: float  # the highest combined probability
    probabilities: tuple[float, float, float]  # combined, Short, Hold, Long
    votes: tuple[Vote, ...]  # in the order fvg, momentum, entry
    version: int | None  # None: no version was active (the decision is Hold)
    instrument: str
    bar_time: dt.datetime | None  # the last bar's time (UTC) when the decision was on bars, else None
    latency_ms: float  # the decision's own latency (the coordinator's, or the in-process engine's)
    degraded: bool  # some agent did not vote
    reason: str  # why degraded, or why Hold was forced; "" otherwise
    request_id: str

    @property
    def position(self) -> int:
        """Units to hold after this decision: -1, 0 or +1."""
        return self.action.position

    @classmethod
    def from_proto(cls, d: decision_pb2.Decision) -> Decision:
        votes = tuple(Vote(v.agent, Action(v.action) if v.ok else None, tuple(v.probabilities) if v.ok else None,
                           v.value if v.ok else None, v.latency_ms, v.error) for v in d.votes)
        bar_time = dt.datetime.fromtimestamp(d.bar_time_ms / 1000, tz=dt.UTC) if d.bar_time_ms else None
        return cls(Action(d.action), d.confidence, tuple(d.probabilities), votes,
                   d.model_version if d.HasField("model_version") else None, d.instrument, bar_time, d.latency_ms,
                   d.degraded, d.reason, d.request_id)


@dataclass(frozen=True)
class Refusal:
    """An item of decide_many that was refused (the others were decided): what and why."""

    instrument: str
    code: str  # the gRPC status name, e.g. INVALID_ARGUMENT
    message: str
    reason: str = ""  # machine-readable cause (Error.reason), e.g. NO_HISTORY; "" when none


class DecisionRefused(UserError):
    """A decision refused: bad input (INVALID_ARGUMENT), or the cluster cannot decide now (UNAVAILABLE...)."""

    def __init__(self, code: str, message: str, reason: str = ""):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.reason = code, message, reason


def decision_or_refusal(d: decision_pb2.Decision, instrument: str) -> Decision | Refusal:
    """A Decision, or the Refusal an error Decision (in a stream or a batch) stands for."""
    if d.HasField("error"):
        return Refusal(instrument, STATUS_NAMES.get(d.error.code, str(d.error.code)), d.error.message, d.error.reason)
    return Decision.from_proto(d)


STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
