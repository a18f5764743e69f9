"""The coordinator's decision path: one request in, one decision out, from the three agents' votes.

Every decision reads the active model version once and sends it with the window to all three
agents, so a rollout can never produce a decision that mixes versions. An agent that is down or
late is left out (the decision says degraded and names it); with fewer than `min_agents` votes
the answer is Hold with the reason. The coordinator never waits past the deadline.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import time
from collections.abc import Sequence

import grpc
import numpy as np

from coordinator.aggregation import Aggregate, AggregationRule
from coordinator.audit import AuditLog, AuditUnavailable
from coordinator.committee import CommitteeWatch
from coordinator.decisions import decide_block
from coordinator.inputs import Decoded, RequestDecoder
from coordinator.links import AgentGroup, AgentLink, ArrivalForecast, Fanout
from coordinator.metrics import CoordinatorMetrics
from coordinator.scoring import LiveScores
from coordinator.state import ActiveVersionState
from tactical.config import Config
from tactical.v1 import common_pb2, decision_pb2
from tactical.wire import MAX_REQUEST_ID, N_FEATURES, WireError

log = logging.getLogger(__name__)
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
        self.metrics = CoordinatorMetrics(tuple(agents))
        self.committee = CommitteeWatch(tuple(agents), cfg.serving.health_window, N_FEATURES)
        self._references: dict[int, dict] = {}  # version -> its training reference for drift
        self.scores = LiveScores(cfg.training.transaction_cost, cfg.serving.max_instruments)
        self._activation_counts = (0, 0)  # (decisions, invalid votes) when the active version became active
        self.guard_last: tuple[int, str] | None = None  # (time ms, what) the guard last did (coordinator.guard)
        self.on_activated(state.version)
        self.started = time.monotonic()
        self.shutting_down = False

    def on_activated(self, version: int | None) -> None:
        """A version became active (activation, rollback, the guard): what is judged since activation restarts."""
        self.scores.activated(version)
        self.pair_shadow()
        self._activation_counts = (self.decisions, self._invalid_votes())

    def pair_shadow(self) -> None:
        """Keep the shadow's record that of the shadow version beside the active one: a new record when either
        changes (a shadow set, promoted or stopped; another version activated, rolled back to, or restored by
        the guard), so that `tactical promote` judges the shadow against the version it would replace."""
        record, shadow, active = self.scores.shadow, self.state.shadow, self.state.version
        wanted = None if shadow is None or shadow == active else (shadow, active)  # the same: nothing to compare
        if wanted == (None if record is None else (record.version, record.active)):
            return
        if wanted is not None and record is not None and record.decisions and shadow == record.version:
            log.info("shadow version %d: its record restarts beside version %s (%d decisions beside version %s "
                     "left behind)", shadow, active, record.decisions, record.active,
                     extra={"shadow_version": shadow, "version": active})
        self.scores.start_shadow(None if wanted is None else shadow, active)

    def since_activation(self) -> tuple[int, int]:
        """(decisions, invalid votes) since the active version became active."""
        decisions, invalid = self._activation_counts
        return self.decisions - decisions, self._invalid_votes() - invalid

    def _invalid_votes(self) -> int:
        return sum(self.metrics.votes_missing[(name, "invalid")] for name in self.agents)

    def scoring(self) -> bool:
        """Whether decisions are scored live: for a shadow, or for the guard's drawdown."""
        return self.state.shadow is not None or self.cfg.serving.guard_max_drawdown > 0

    def serving(self) -> bool:
        version = self.state.version
        if version is None:
            return False
        return sum(group.holds(version) for group in self.agents.values()) >= self.cfg.aggregation.min_agents

    async def answer(self, request: decision_pb2.DecideRequest, traceparent: str = "") -> decision_pb2.Decision:
        """One decision; raises WireError/BarDataError for bad input, AuditUnavailable (fail-closed) while the
        audit log cannot record it. `traceparent`: the client's trace context, for the audit row."""
        start = time.perf_counter()
        self._check_audit()
        self.metrics.in_flight += 1
        try:
            return (await self._decide([self.decoder.decode(request)], start, traceparent))[0]
        finally:
            self.metrics.in_flight -= 1

    async def answer_batch(self, requests: Sequence[decision_pb2.DecideRequest],
                           traceparent: str = "") -> list[decision_pb2.Decision]:
        """One decision per item, in order; a bad item becomes a Decision with `error` set. Raises WireError for
        a batch over serving.max_batch_items, AuditUnavailable (fail-closed) while the audit cannot record."""
        start = time.perf_counter()
        if len(requests) > self.cfg.serving.max_batch_items:
            raise WireError(f"a batch of {len(requests)} items; at most serving.max_batch_items "
                            f"({self.cfg.serving.max_batch_items})")
        self._check_audit()
        items = self.decoder.decode_batch(requests)
        self.metrics.in_flight += len(items)
        try:
            decided = iter(await self._decide([item for item in items if item.error is None], start, traceparent))
        finally:
            self.metrics.in_flight -= len(items)
        return [error_decision(item.request_id, item.instrument, grpc.StatusCode.INVALID_ARGUMENT, item.error)
                if item.error is not None else next(decided) for item in items]

    def _check_audit(self) -> None:
        if self.audit is not None and not self.audit.accepting():
            raise AuditUnavailable(f"not deciding: {self.audit.trouble()} (serving.audit_policy fail-closed)")

    async def _decide(self, items: list[Decoded], start: float, traceparent: str) -> list[decision_pb2.Decision]:
        """Decisions for decoded items: their windows go to every agent as one block, with one version."""
        if not items:
            return []
        n, agents = len(items), len(self.agents)
        version = self.state.current()
        if version != self.scores.active:  # switched by a coordinator sharing this one's state
            self.on_activated(version)
        self.pair_shadow()  # a shadow set or ended by a coordinator sharing this one's state
        probs = np.zeros((n, agents, 3))
        values = np.zeros((n, agents))
        answered = np.zeros(agents, dtype=bool)
        latencies = [0.0] * agents
        shadow = self.state.shadow if version is not None and self.state.shadow != version else None
        shadow_probs = None if shadow is None else np.zeros((n, agents, 3))  # zeros: no vote where it did not run
        if version is None:
            errors = ["no model version is active yet"] * agents
        else:
            loop = asyncio.get_running_loop()
            fanout = Fanout(agents, n, loop)
            windows = items[0].window if n == 1 else b"".join(item.window for item in items)
            for index, group in enumerate(self.agents.values()):
                group.submit(version, windows, fanout, index, shadow)
            if fanout.remaining:
                timer = loop.call_later(self.deadline_s, _expire, fanout.done)
                await fanout.done
                timer.cancel()
            errors = fanout.errors
            for a, answer in enumerate(fanout.answers):
                if answer is None:
                    errors[a] = errors[a] or f"deadline exceeded after {self.cfg.serving.deadline_ms:g} ms"
                elif answer.version != version:
                    errors[a] = f"answered with version {answer.version} instead of {version}"
                else:
                    probs[:, a], values[:, a], answered[a] = answer.probabilities, answer.values, True
                    latencies[a] = (answer.received - start) * 1e3
                    if shadow_probs is not None and answer.shadow is not None:
                        shadow_probs[:, a] = answer.shadow
        decisions, agg, voted, shadow_actions = decide_block(
            items, version, list(self.agents), probs, values, answered, errors, latencies, self.rule,
            self.cfg.aggregation, (time.perf_counter() - start) * 1e3, shadow_probs)
        self._account(decisions, version, answered, voted, errors, latencies)
        self._watch(items, version, voted, probs, agg, windows if version is not None else None)
        if shadow_actions is not None:
            self._count_shadow(items, decisions, shadow_actions)
        if self.scoring():
            self._score(items, decisions, version, shadow_actions)
        if self.audit is not None:
            for k, (item, d) in enumerate(zip(items, decisions, strict=True)):
                self.audit.record(d, item.window, traceparent, item.close, shadow,
                                  0 if shadow_actions is None else shadow_actions[k], item.backtest)
        return decisions

    def _watch(self, items: list[Decoded], version: int | None, voted: np.ndarray, probs: np.ndarray,
               agg: Aggregate, windows: bytes | None) -> None:
        """The block's live decisions to the committee watch: drift and the committee's health (which the guard
        reads) describe live traffic, not what a backtest replayed."""
        combined, hold_reason = agg.combined, agg.hold_reason
        if any(item.backtest for item in items):
            live = np.array([not item.backtest for item in items])
            if not live.any():
                return
            voted, probs, combined, hold_reason = voted[live], probs[live], combined[live], hold_reason[live]
            items, windows = [item for item in items if not item.backtest], None
        self.committee.observe(version, voted, probs, combined, hold_reason,
                               windows if windows is not None else b"".join(item.window for item in items))

    def _count_shadow(self, items: list[Decoded], decisions: list[decision_pb2.Decision],
                      shadow_actions: list[int]) -> None:
        """The shadow record's decisions and agreement: live traffic only, as its scores."""
        s = self.scores.shadow
        if s is not None:
            live = [(d, a) for item, d, a in zip(items, decisions, shadow_actions, strict=True) if not item.backtest]
            s.decisions += len(live)
            s.agreed += sum(d.action == a for d, a in live)

    def _score(self, items: list[Decoded], decisions: list[decision_pb2.Decision], version: int | None,
               shadow_actions: list[int] | None) -> None:
        for k, (item, d) in enumerate(zip(items, decisions, strict=True)):
            if item.close == item.close and d.action and not item.backtest:  # priced, answered, live
                self.scores.observe(item.instrument, item.bar_time, item.close, version, d.action - 2.0,
                                    None if shadow_actions is None else shadow_actions[k] - 2.0)

    def _account(self, decisions: list[decision_pb2.Decision], version: int | None,
                 answered: np.ndarray, voted: np.ndarray, errors: list[str], latencies: list[float]) -> None:
        """Status counters and metrics of a block of decisions."""
        self.decisions += len(decisions)
        for d in decisions:
            self.degraded += d.degraded
            self.latencies_ms.append(d.latency_ms)
        self.metrics.count(decisions, version, answered, voted, errors, latencies)

    def drift(self) -> list[float] | None:
        """PSI per feature of recent windows against the active version's training reference (None: no reference)."""
        version = self.state.version
        if version is None:
            return None
        if version not in self._references:
            for link in self.links():
                if link.info is not None and version in link.info.feature_references:
                    self._references[version] = json.loads(link.info.feature_references[version])
                    break
            else:
                return None
        return self.committee.drift(self._references[version])

    def links(self) -> list[AgentLink]:
        """Every agent process, replicas included."""
        return [link for group in self.agents.values() for link in group.links]

    async def refresh_agents(self) -> None:
        """What each agent holds now; and a switch another coordinator sharing the state made (once a second
        from the monitor, before admin calls and status)."""
        self.state.follow()
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
        common = [v for v in set.intersection(*held) if self.feature_skew(v) is None]
        return max(common) if common else None

    def feature_skew(self, version: int) -> str | None:
        """How the features this coordinator computes differ from those `version` was trained with, or None.

        A model fed features computed with other settings (another momentum period, another scale)
        answers confidently and wrongly; nothing else would notice.
        """
        here = dataclasses.asdict(self.cfg.features)
        for link in self.links():
            if link.info is not None and version in link.info.feature_settings:
                trained = json.loads(link.info.feature_settings[version])
                differ = [f"features.{key} {trained.get(key, '(absent)')} (here {here.get(key, '(absent)')})"
                          for key in sorted(set(trained) | set(here)) if trained.get(key) != here.get(key)]
                if differ:
                    return (f"version {version} was trained with features this coordinator computes "
                            f"differently: {', '.join(differ)}")
                return None
        return None  # no agent recorded its settings (a version published before they were)

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


def error_decision(request_id: str, instrument: str, code: grpc.StatusCode,
                   cause: Exception | str) -> decision_pb2.Decision:
    """The answer to a request refused inside a stream or a batch (the call itself goes on); the error's
    machine-readable reason (NO_HISTORY...) goes with it."""
    return decision_pb2.Decision(request_id=request_id[:MAX_REQUEST_ID], instrument=instrument[:64],
                                 error=common_pb2.Error(code=code.value[0], message=str(cause),
                                                        reason=getattr(cause, "reason", "")))
