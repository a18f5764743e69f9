"""The coordinator's decision path: one request in, one decision out, from the three agents' votes.

Every decision reads the active model version once and sends it with the window to all three
agents, so a rollout can never produce a decision that mixes versions. An agent that is down or
late is left out (the decision says degraded and names it); with fewer than `min_agents` votes
the answer is Hold with the reason. The coordinator never waits past the deadline.
"""

from __future__ import annotations

import asyncio
import collections
import time

import numpy as np

from coordinator.aggregation import LOW_CONFIDENCE, TIE, TOO_FEW_AGENTS, AggregationRule, valid_votes
from coordinator.audit import AuditLog, AuditUnavailable
from coordinator.inputs import RequestDecoder
from coordinator.links import AgentAnswer, AgentGroup, AgentLink, ArrivalForecast, Fanout
from coordinator.state import ActiveVersionState
from tactical.actions import Action
from tactical.config import Config
from tactical.v1 import decision_pb2

AUTO_ACTIVATE_WAIT_S = 10.0  # a fresh coordinator waits this long for every agent before its first activation


def _expire(done: asyncio.Future) -> None:
    if not done.done():
        done.set_result(None)


class Coordinator:
    """What the coordinator's services share: agent links, active version, rule, counters; decides."""

    def __init__(self, cfg: Config, agents: dict[str, AgentGroup], state: ActiveVersionState,
                 audit: AuditLog | None, forecast: ArrivalForecast):
        self.cfg = cfg
        self.forecast = forecast
        self.agents = agents
        self.state = state
        self.audit = audit
        self.rule = AggregationRule.from_config(cfg.aggregation)
        self.decoder = RequestDecoder(cfg)
        self.deadline_s = cfg.serving.deadline_ms / 1000.0
        self.decisions = 0
        self.degraded = 0
        self.latencies_ms: collections.deque[float] = collections.deque(maxlen=10_000)
        self.started = time.monotonic()
        self.shutting_down = False

    def serving(self) -> bool:
        version = self.state.version
        if version is None:
            return False
        return sum(group.holds(version) for group in self.agents.values()) >= self.cfg.aggregation.min_agents

    async def answer(self, request: decision_pb2.DecideRequest) -> decision_pb2.Decision:
        """One decision; raises WireError/BarDataError for bad input, AuditUnavailable (fail-closed) while the
        audit log cannot record it."""
        start = time.perf_counter()
        if self.audit is not None and not self.audit.accepting():
            raise AuditUnavailable(f"not deciding: {self.audit.trouble()} (serving.audit_policy fail-closed)")
        request_id = self.decoder.request_id(request)
        window, bar_time = self.decoder.window(request)
        version = self.state.version
        if version is None:
            return self._finish(request_id, start, window, bar_time, None, [None] * len(self.agents),
                                ["no model version is active yet"] * len(self.agents), [0.0] * len(self.agents))
        loop = asyncio.get_running_loop()
        fanout = Fanout(len(self.agents), loop)
        for index, group in enumerate(self.agents.values()):
            group.submit(version, window, fanout, index)
        if fanout.remaining:
            timer = loop.call_later(self.deadline_s, _expire, fanout.done)
            await fanout.done
            timer.cancel()
        answers, errors = fanout.answers, fanout.errors
        for i, answer in enumerate(answers):
            if answer is None and not errors[i]:
                errors[i] = f"deadline exceeded after {self.cfg.serving.deadline_ms:g} ms"
            elif answer is not None and answer.version != version:
                answers[i], errors[i] = None, f"answered with version {answer.version} instead of {version}"
        latencies = [(a.received - start) * 1e3 if a else 0.0 for a in answers]
        return self._finish(request_id, start, window, bar_time, version, answers, errors, latencies)

    def _finish(self, request_id: str, start: float, window: bytes, bar_time: int, version: int | None,
                answers: list[AgentAnswer | None], errors: list[str], latencies: list[float]) -> decision_pb2.Decision:
        probs = np.zeros((1, len(answers), 3))
        values = np.zeros((1, len(answers)))
        for i, answer in enumerate(answers):
            if answer is not None:
                probs[0, i], values[0, i] = answer.probabilities, answer.value
        voted = valid_votes(probs, values) & np.array([[answer is not None for answer in answers]])
        votes = []
        for i, (name, answer, latency) in enumerate(zip(self.agents, answers, latencies, strict=True)):
            if answer is not None and not voted[0, i]:
                errors[i] = (f"invalid vote: probabilities {np.round(answer.probabilities, 4).tolist()}, "
                             f"value {answer.value:.4g} (not a finite distribution)")
            if not voted[0, i]:
                votes.append(decision_pb2.AgentVote(agent=name, ok=False, error=errors[i]))
                continue
            votes.append(decision_pb2.AgentVote(agent=name, ok=True,
                                                action=Action.from_index(int(answer.probabilities.argmax())),
                                                probabilities=answer.probabilities.tolist(), value=answer.value,
                                                latency_ms=latency))
        agg = self.rule(probs, voted)
        missing = [name for name, ok in zip(self.agents, voted[0], strict=True) if not ok]
        reasons = []
        if missing:
            reasons.append("no vote from " + ", ".join(f"{n} ({e})" for n, e in zip(self.agents, errors, strict=True)
                                                       if e))
        hold = int(agg.hold_reason[0])
        if hold == TOO_FEW_AGENTS:
            reasons.append(f"Hold: {int(voted.sum())} of {len(answers)} agents voted, "
                           f"min_agents is {self.cfg.aggregation.min_agents}")
        elif hold == LOW_CONFIDENCE:
            reasons.append(f"Hold: confidence {agg.confidence[0]:.3f} is under min_confidence "
                           f"{self.cfg.aggregation.min_confidence:g}")
        elif hold == TIE:
            reasons.append("Hold: the top actions tie")
        decision = decision_pb2.Decision(
            request_id=request_id, action=int(agg.actions[0]), confidence=float(agg.confidence[0]),
            probabilities=agg.combined[0].tolist(), votes=votes, model_version=version, degraded=bool(missing),
            reason="; ".join(reasons), bar_time_ms=bar_time)
        decision.latency_ms = (time.perf_counter() - start) * 1e3
        self.decisions += 1
        self.degraded += bool(missing)
        self.latencies_ms.append(decision.latency_ms)
        if self.audit is not None:
            self.audit.record(decision, window)
        return decision

    def links(self) -> list[AgentLink]:
        """Every agent process, replicas included."""
        return [link for group in self.agents.values() for link in group.links]

    async def refresh_agents(self) -> None:
        await asyncio.gather(*(group.refresh_info() for group in self.agents.values()))

    def newest_common_version(self) -> int | None:
        """The newest version every connected agent process holds, for the first activation.

        For its first AUTO_ACTIVATE_WAIT_S the coordinator waits for every agent process, so that
        an agent that comes up a little late is not left without the chosen version; after that,
        `min_agents` connected agents are enough to start serving.
        """
        links = self.links()
        everyone = all(link.connected and link.info for link in links)
        if not everyone and time.monotonic() - self.started < AUTO_ACTIVATE_WAIT_S:
            return None
        held = [link.servable() for link in links if link.connected and link.info]
        if not held or sum(group.connected for group in self.agents.values()) < self.cfg.aggregation.min_agents:
            return None
        common = set.intersection(*held)
        return max(common) if common else None

    def problem(self, link: AgentLink, version: int | None = None) -> str | None:
        """Why this agent process cannot vote with `version` (default: the active one), or None."""
        version = self.state.version if version is None else version
        if not link.connected:
            return f"unreachable ({link.last_error})"
        if version is None or link.holds(version):
            return None
        if link.info is None:
            return "has not said what it holds yet"
        if version in link.info.broken_versions:
            return f"holds version {version} broken: {link.info.broken_versions[version]}"
        return f"lacks version {version} (has: {sorted(link.servable())})"

    def missing(self, version: int) -> list[str]:
        """Agent processes (replicas included) that cannot vote with `version`, with why."""
        return [f"{link.name} at {link.address} ({problem})" for link in self.links()
                if (problem := self.problem(link, version)) is not None]
