"""The coordinator's Prometheus metrics: what the request path counts, and the families a scrape gets.

Names follow Prometheus conventions (tactical_ prefix, _total counters, _seconds, _ratio). The
request path increments the counters below; `families()` builds every family from them and from
the coordinator's state (active version, audit log, committee health, input drift) at scrape time.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from market.drift import band
from tactical.actions import ACTION_LABELS, ACTIONS
from tactical.metrics import LATENCY_BUCKETS_S, SIZE_BUCKETS, Histogram, histogram_family
from tactical.v1 import decision_pb2
from tactical.wire import FEATURE_NAMES

if TYPE_CHECKING:
    from coordinator.core import Coordinator


def missing_reason(error: str) -> str:
    """Why a vote is missing, as a label: deadline, down, invalid, version, broken, none (no active version), error."""
    if error.startswith("deadline exceeded"):
        return "deadline"
    if error.startswith(("unavailable", "not connected", "link error", "coordinator shutting down")):
        return "down"
    if error.startswith("invalid vote"):
        return "invalid"
    if error.startswith("answered with version"):
        return "version"
    if "is broken on agent" in error:
        return "broken"
    if error.startswith("no model version"):
        return "none"
    return "error"


class CoordinatorMetrics:
    """Counters the request path updates (plain Python: a dictionary increment, a bisect)."""

    def __init__(self, agents: tuple[str, ...]):
        self.decisions: collections.Counter = collections.Counter()  # (action, version, degraded)
        self.decision_latency = Histogram(LATENCY_BUCKETS_S)
        self.vote_latency = {name: Histogram(LATENCY_BUCKETS_S) for name in agents}
        # the usual label values start at 0, so a dashboard's rate() has a series before the first event
        self.votes_missing = collections.Counter({(name, reason): 0 for name in agents  # (agent, reason)
                                                  for reason in ("deadline", "down", "invalid")})
        self.refused = collections.Counter({code: 0 for code in ("INVALID_ARGUMENT", "UNAVAILABLE")})  # status code
        self.batch_size = {name: Histogram(SIZE_BUCKETS) for name in agents}  # windows per message to an agent
        self.in_flight = 0
        self.activations = 0
        self.rollbacks = 0
        self.guard_rollbacks = 0
        self.agents = agents

    def count(self, decisions: Sequence[decision_pb2.Decision], version: int | None, answered: np.ndarray,
              voted: np.ndarray, errors: Sequence[str], latencies_ms: Sequence[float]) -> None:
        """A block of decisions made together: `answered` (A,) which agents answered, `voted` (n, A) whose votes
        counted, `errors` why an agent did not answer, `latencies_ms` when each answer arrived."""
        label = "none" if version is None else str(version)
        latency_s = decisions[0].latency_ms / 1000
        for d in decisions:
            self.decisions[(ACTION_LABELS[d.action], label, "true" if d.degraded else "false")] += 1
        self.decision_latency.observe(latency_s, len(decisions))
        all_voted = np.count_nonzero(voted) == voted.size  # the usual case: no per-agent count of invalid votes
        for a, (name, answered_a) in enumerate(zip(self.agents, answered.tolist(), strict=True)):
            if answered_a:
                self.vote_latency[name].observe(latencies_ms[a] / 1000)
                if not all_voted and (invalid := int(len(decisions) - voted[:, a].sum())):
                    self.votes_missing[(name, "invalid")] += invalid
            else:
                self.votes_missing[(name, missing_reason(errors[a]))] += len(decisions)


def families(c: Coordinator) -> Iterator[Metric]:
    """Every metric family of the coordinator, built now (called by the scrape thread)."""
    m = c.metrics
    # not by instrument: thousands of instruments would make thousands of series (see tactical_instruments_tracked)
    decisions = CounterMetricFamily("tactical_decisions", "Decisions answered, by action, model version and degraded",
                                    labels=["action", "version", "degraded"])
    for (action, version, degraded), n in list(m.decisions.items()):
        decisions.add_metric([action, version, degraded], n)
    yield decisions
    yield histogram_family("tactical_decision_latency_seconds", "The coordinator's latency of a decision",
                           {(): m.decision_latency})
    yield histogram_family("tactical_agent_vote_latency_seconds", "From fan-out until an agent's vote arrived",
                           {(name,): h for name, h in m.vote_latency.items()}, ["agent"])
    missing = CounterMetricFamily("tactical_votes_missing", "Votes left out of decisions, by agent and reason "
                                                            "(deadline, down, invalid, version, broken, none, error)",
                                  labels=["agent", "reason"])
    for (agent, reason), n in list(m.votes_missing.items()):
        missing.add_metric([agent, reason], n)
    yield missing
    refused = CounterMetricFamily("tactical_requests_refused", "Decision requests refused, by gRPC status (those "
                                                               "gRPC refuses itself, such as oversized messages, "
                                                               "are not seen here)", labels=["code"])
    for code, n in list(m.refused.items()):
        refused.add_metric([code], n)
    yield refused
    yield GaugeMetricFamily("tactical_decisions_in_flight", "Decisions being answered now", value=m.in_flight)
    active = GaugeMetricFamily("tactical_active_version", "The model version decisions use (absent: none active)")
    if c.state.version is not None:
        active.add_metric([], c.state.version)
    yield active
    yield histogram_family("tactical_fanout_batch_windows", "Windows per message the coordinator sent to an agent",
                           {(name,): h for name, h in m.batch_size.items()}, ["agent"])
    yield CounterMetricFamily("tactical_activations", "Versions activated", value=m.activations)
    yield CounterMetricFamily("tactical_rollbacks", "Rollbacks to an earlier version", value=m.rollbacks)
    yield CounterMetricFamily("tactical_guard_rollbacks", "Rollbacks the guard made on live evidence",
                              value=m.guard_rollbacks)
    yield GaugeMetricFamily("tactical_instruments_tracked", "Instruments whose recent bars the coordinator keeps",
                            value=len(c.decoder.history))
    yield CounterMetricFamily("tactical_instruments_forgotten", "Instruments forgotten to make room (least recently "
                                                                "used)", value=c.decoder.history.evicted)
    if c.audit is not None:
        audit = c.audit.status()
        yield CounterMetricFamily("tactical_audit_rows_written", "Decisions committed to the audit log",
                                  value=audit.logged)
        yield CounterMetricFamily("tactical_audit_rows_dropped", "Decisions left out of the audit log (fail-open, "
                                                                 "backlog full)", value=audit.dropped)
        yield GaugeMetricFamily("tactical_audit_rows_waiting", "Decisions waiting for the audit writer (memory and "
                                                               "spill file)", value=audit.waiting)
        yield GaugeMetricFamily("tactical_audit_degraded", "1 while the audit log is in trouble (see tactical status)",
                                value=int(audit.trouble is not None))
    yield from committee_families(c)


def committee_families(c: Coordinator) -> Iterator[Metric]:
    disagreement = GaugeMetricFamily("tactical_committee_disagreement_ratio", "Share of recent decisions whose "
                                                                              "voting agents disagreed",
                                     labels=["version"])
    entropy = GaugeMetricFamily("tactical_committee_entropy_nats", "Mean entropy of recent aggregated votes",
                                labels=["version"])
    holds = GaugeMetricFamily("tactical_committee_low_confidence_hold_ratio", "Share of recent decisions forced to "
                                                                              "Hold by min_confidence",
                              labels=["version"])
    mix = GaugeMetricFamily("tactical_committee_action_ratio", "Each agent's recent action mix",
                            labels=["version", "agent", "action"])
    for version in c.committee.versions():
        health = c.committee.health(version)
        if health is None:
            continue
        disagreement.add_metric([str(version)], health.disagreement)
        entropy.add_metric([str(version)], health.entropy)
        holds.add_metric([str(version)], health.low_confidence_holds)
        for agent, shares in health.action_mix.items():
            for action, share in zip(ACTIONS, shares, strict=True):
                mix.add_metric([str(version), agent, action.label], share)
    yield from (disagreement, entropy, holds, mix)
    drift = GaugeMetricFamily("tactical_feature_psi", "Population stability index of each feature served recently "
                                                      "against the active version's training bars (< 0.1 stable, "
                                                      "> 0.25 shifted)", labels=["feature"])
    for feature, value in zip(FEATURE_NAMES, c.drift() or [], strict=False):
        drift.add_metric([feature], value)
    yield drift


def status_json(c: Coordinator) -> str:
    """Committee health and drift for `tactical status` (ClusterStatus.health_json)."""
    out: dict = {"versions": {}}
    for version in c.committee.versions():
        health = c.committee.health(version)
        if health is not None:
            out["versions"][str(version)] = {
                "decisions": health.decisions, "disagreement_ratio": round(health.disagreement, 4),
                "entropy_nats": round(health.entropy, 4),
                "low_confidence_hold_ratio": round(health.low_confidence_holds, 4),
                "action_mix": {agent: dict(zip((a.label for a in ACTIONS), map(lambda x: round(x, 4), shares),
                                               strict=True)) for agent, shares in health.action_mix.items()}}
    drift = c.drift()
    out["drift"] = None if drift is None else {feature: {"psi": round(value, 4), "band": band(value)}
                                               for feature, value in zip(FEATURE_NAMES, drift, strict=True)}
    return json.dumps(out)
