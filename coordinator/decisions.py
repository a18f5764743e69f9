"""From the agents' answers for a block of windows to the Decision messages: votes checked, the rule
applied, every vote and every reason for a Hold or a missing vote written down.

One function for the coordinator and the in-process engine, so that both answer with the same
decision, votes and reasons for the same window and version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from coordinator.aggregation import LOW_CONFIDENCE, TIE, TOO_FEW_AGENTS, Aggregate, AggregationRule, valid_votes
from tactical.actions import ACTIONS
from tactical.config import AggregationConfig
from tactical.v1 import decision_pb2


@dataclass(frozen=True)
class Asked:
    """What a decision answers: the request's id, its instrument, its last bar's time (0 for a window)."""

    request_id: str
    instrument: str
    bar_time: int = 0


class Block(NamedTuple):
    """A block's decisions; the rule's output and which votes counted (n, A), for the committee's health; and the
    shadow version's actions on the same windows (None when no agent ran it)."""

    decisions: list[decision_pb2.Decision]
    aggregate: Aggregate
    voted: np.ndarray
    shadow_actions: list[int] | None


def decide_block(asked: Sequence[Asked], version: int | None, agents: Sequence[str], probabilities: np.ndarray,
                 values: np.ndarray, answered: np.ndarray, errors: Sequence[str], latencies_ms: Sequence[float],
                 rule: AggregationRule, aggregation: AggregationConfig, latency_ms: float,
                 shadow: np.ndarray | None = None) -> Block:
    """Decisions for a block of n windows: probabilities (n, A, 3) and values (n, A) as the A agents answered,
    `answered` (A,) whether each agent answered at all (else `errors` says why), `latencies_ms` (A,) when.
    `shadow` (n, A, 3): the shadow version's probabilities on the same windows (zeros where an agent did not
    run it), aggregated by the same rule in the same call: a small block's rule costs its numpy calls, not its
    rows, so the shadow adds rows rather than a second pass."""
    n = len(asked)
    rows, row_values = (probabilities, values) if shadow is None else (
        np.concatenate([probabilities, shadow]), np.concatenate([values, np.zeros_like(values)]))
    voted = valid_votes(rows, row_values) & np.asarray(answered, dtype=bool)
    agg = rule(rows, voted)
    shadow_actions = None
    if shadow is not None:
        shadow_actions = agg.actions[n:].tolist() if voted[n:].any() else None
        agg = Aggregate(agg.actions[:n], agg.combined[:n], agg.confidence[:n], agg.hold_reason[:n])
        voted = voted[:n]
    action_of = [int(action) for action in ACTIONS]  # probability index -> action value
    actions, confidences, holds = agg.actions.tolist(), agg.confidence.tolist(), agg.hold_reason.tolist()
    # the hot path of a batch: every array turned into plain ints and floats once, no numpy scalar per vote
    probs_of, values_of, voted_of = probabilities.tolist(), values.tolist(), voted.tolist()
    top_of, combined_of = probabilities.argmax(axis=2).tolist(), agg.combined.tolist()
    out = []
    for k, item in enumerate(asked):
        votes, missing = [], []
        for a, name in enumerate(agents):
            if voted_of[k][a]:
                votes.append(decision_pb2.AgentVote(agent=name, ok=True, action=action_of[top_of[k][a]],
                                                    probabilities=probs_of[k][a], value=values_of[k][a],
                                                    latency_ms=latencies_ms[a]))
                continue
            error = errors[a] or (f"invalid vote: probabilities {np.round(probabilities[k, a], 4).tolist()}, value "
                                  f"{values[k, a]:.4g} (not a finite distribution)")
            votes.append(decision_pb2.AgentVote(agent=name, ok=False, error=error))
            missing.append(f"{name} ({error})")
        reasons = ["no vote from " + ", ".join(missing)] if missing else []
        hold, confidence = holds[k], confidences[k]
        if hold == TOO_FEW_AGENTS:
            reasons.append(f"Hold: {int(voted[k].sum())} of {len(agents)} agents voted, "
                           f"min_agents is {aggregation.min_agents}")
        elif hold == LOW_CONFIDENCE:
            reasons.append(f"Hold: confidence {confidence:.3f} is under min_confidence {aggregation.min_confidence:g}")
        elif hold == TIE:
            reasons.append("Hold: the top actions tie")
        out.append(decision_pb2.Decision(
            request_id=item.request_id, instrument=item.instrument, action=actions[k], confidence=confidence,
            probabilities=combined_of[k], votes=votes, model_version=version, degraded=bool(missing),
            reason="; ".join(reasons), bar_time_ms=item.bar_time, latency_ms=latency_ms))
    return Block(out, agg, voted, shadow_actions)
