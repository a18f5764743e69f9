"""The coordinator: a grpc.aio server that validates, fans out to the three agents, aggregates, answers.

Every decision reads the active model version once and sends it with the window to all three
agents, so a rollout can never produce a decision that mixes versions. An agent that is down or
late is left out (the decision says degraded and names it); with fewer than `min_agents` votes
the answer is Hold with the reason. The coordinator never waits past the deadline.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from coordinator.aggregation import TIE, LOW_CONFIDENCE, TOO_FEW_AGENTS, AggregationRule
from coordinator.audit import AuditLog
from coordinator.inputs import RequestDecoder
from coordinator.links import AgentAnswer, AgentGroup, AgentLink, ArrivalForecast, Fanout
from coordinator.state import ActiveVersionState
from market.bars import BarDataError
from market.features import N_FEATURES
from tactical.config import AGENT_NAMES, Config
from tactical.rpc import SHUTDOWN_GRACE_S, bind, percentile, require_admin, serve_until_signal, server_options
from tactical.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2, decision_pb2, decision_pb2_grpc
from tactical.wire import ACTIONS, WireError

log = logging.getLogger(__name__)
MONITOR_INTERVAL_S = 1.0
AUTO_ACTIVATE_WAIT_S = 10.0  # a fresh coordinator waits this long for every agent before its first activation
DECISION_SERVICE = decision_pb2.DESCRIPTOR.services_by_name["DecisionService"].full_name


def _expire(done: asyncio.Future) -> None:
    if not done.done():
        done.set_result(None)


class Engine:
    """Shared state of the coordinator's services: links, active version, rule, counters."""

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

    async def decide(self, request: decision_pb2.DecideRequest) -> decision_pb2.Decision:
        """One decision; raises WireError/BarDataError for bad input."""
        start = time.perf_counter()
        request_id = self.decoder.request_id(request)
        window, bar_time = self.decoder.window(request)
        version = self.state.version
        if version is None:
            return self._finish(request_id, start, window, bar_time, 0, [None] * len(self.agents),
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

    def _finish(self, request_id: str, start: float, window: bytes, bar_time: int, version: int,
                answers: list[AgentAnswer | None], errors: list[str], latencies: list[float]) -> decision_pb2.Decision:
        probs = np.zeros((1, len(answers), 3))
        voted = np.zeros((1, len(answers)), dtype=bool)
        votes = []
        for i, (name, answer, error, latency) in enumerate(zip(self.agents, answers, errors, latencies)):
            if answer is None:
                votes.append(decision_pb2.AgentVote(agent=name, ok=False, error=error))
                continue
            probs[0, i] = answer.probabilities
            voted[0, i] = True
            votes.append(decision_pb2.AgentVote(agent=name, ok=True, action=ACTIONS[int(answer.probabilities.argmax())],
                                                probabilities=answer.probabilities.tolist(), value=answer.value,
                                                latency_ms=latency))
        agg = self.rule(probs, voted)
        missing = [name for name, answer in zip(self.agents, answers) if answer is None]
        reasons = []
        if missing:
            reasons.append("no vote from " + ", ".join(f"{n} ({e})" for n, e in zip(self.agents, errors) if e))
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
            request_id=request_id, action=ACTIONS[int(agg.actions[0])], confidence=float(agg.confidence[0]),
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
        held = [set(link.info.loaded_versions) | set(link.info.stored_versions)
                for link in links if link.connected and link.info]
        if not held or sum(group.connected for group in self.agents.values()) < self.cfg.aggregation.min_agents:
            return None
        common = set.intersection(*held)
        return max(common) if common else None

    def missing(self, version: int) -> list[str]:
        """Agent processes (replicas included) that do not have `version`, with why."""
        out = []
        for link in self.links():
            if not link.connected:
                out.append(f"{link.name} at {link.address} ({link.last_error})")
            elif not link.holds(version):
                held = sorted(set(link.info.loaded_versions) | set(link.info.stored_versions)) if link.info else "unknown"
                out.append(f"{link.name} at {link.address} (has: {held})")
        return out


class DecisionServicer(decision_pb2_grpc.DecisionServiceServicer):
    def __init__(self, engine: Engine):
        self.engine = engine

    async def Decide(self, request, context):
        try:
            return await self.engine.decide(request)
        except (WireError, BarDataError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def DecideStream(self, request_iterator, context):
        # context.read()/write() rather than iterating and yielding: no async generators per message
        stream = id(context)
        forecast = self.engine.forecast
        try:
            while (request := await context.read()) is not grpc.aio.EOF:
                forecast.arrived(stream)
                try:
                    decision = await self.engine.decide(request)
                except (WireError, BarDataError) as exc:
                    decision = decision_pb2.Decision(request_id=request.request_id[:64], error=common_pb2.Error(
                        code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=str(exc)))
                forecast.answered(stream)
                await context.write(decision)
        finally:
            forecast.arrived(stream)


class ClusterServicer(cluster_pb2_grpc.ClusterServiceServicer):
    def __init__(self, engine: Engine):
        self.engine = engine

    async def GetStatus(self, request, context):
        e = self.engine
        await e.refresh_agents()
        agents = [cluster_pb2.AgentStatus(agent=link.name, address=link.address, connected=link.connected,
                                          info=link.info, error="" if link.connected else link.last_error)
                  for link in e.links()]
        return cluster_pb2.ClusterStatus(
            active_version=e.state.version, serving=e.serving(), agents=agents, decisions=e.decisions,
            degraded_decisions=e.degraded, p50_ms=percentile(e.latencies_ms, 50),
            p99_ms=percentile(e.latencies_ms, 99), pid=os.getpid(), uptime_s=time.monotonic() - e.started,
            audit_dropped=e.audit.dropped if e.audit is not None else 0)


class ModelAdminServicer(cluster_pb2_grpc.ModelAdminServiceServicer):
    """Activate, Rollback, ListVersions. Token required."""

    def __init__(self, engine: Engine, token: str, on_change):
        self.engine, self.token, self.on_change = engine, token, on_change
        self._lock = asyncio.Lock()

    async def _switch(self, context, version: int, rollback: bool) -> cluster_pb2.ActivationResult:
        e = self.engine
        await e.refresh_agents()
        missing = e.missing(version)
        if missing:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"version {version} is not staged on every agent: missing on {'; '.join(missing)}")
        previous = e.state.rollback() if rollback else e.state.activate(version)
        log.info("%s version %d (was %s)", "rolled back to" if rollback else "activated", version, previous)
        await self.on_change()
        return cluster_pb2.ActivationResult(active_version=version,
                                            previous_version=previous)

    async def Activate(self, request, context):
        await require_admin(context, self.token)
        async with self._lock:
            return await self._switch(context, request.version, rollback=False)

    async def Rollback(self, request, context):
        await require_admin(context, self.token)
        async with self._lock:
            target = self.engine.state.rollback_target()
            if target is None:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no earlier version to roll back to")
            return await self._switch(context, target, rollback=True)

    async def ListVersions(self, request, context):
        await require_admin(context, self.token)
        e = self.engine
        await e.refresh_agents()
        agents = [cluster_pb2.AgentVersions(agent=link.name, loaded_versions=link.info.loaded_versions if link.info else [],
                                            stored_versions=link.info.stored_versions if link.info else [],
                                            error="" if link.info else link.last_error)
                  for link in e.links()]
        return cluster_pb2.VersionList(active_version=e.state.version, history=e.state.history, agents=agents)


@dataclass
class CoordinatorServer:
    server: grpc.aio.Server
    port: int
    engine: Engine
    health: health_aio.HealthServicer
    monitor: asyncio.Task

    async def stop(self, grace: float = SHUTDOWN_GRACE_S) -> None:
        """NOT_SERVING first, drain in-flight calls, close the agent links, flush the audit log."""
        self.engine.shutting_down = True
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        self.monitor.cancel()
        await asyncio.gather(self.monitor, return_exceptions=True)
        await asyncio.gather(*(group.close() for group in self.engine.agents.values()))
        if self.engine.audit is not None:
            await self.engine.audit.aclose()


async def start_coordinator(cfg: Config, *, host: str, port: int, agents: dict[str, list[str]],
                            state_dir: str | Path, admin_token: str, audit_path: str | Path | None) -> CoordinatorServer:
    """Connect to the agents, bind, serve. `agents` maps each agent name to its replicas' host:port."""
    unknown = set(agents) ^ set(AGENT_NAMES)
    if unknown or not all(agents.values()):
        raise ValueError(f"the coordinator needs every agent of {list(AGENT_NAMES)}, got {agents}")
    forecast = ArrivalForecast(cfg.serving.batch_linger_ms / 1000)
    groups = {name: AgentGroup(name, [AgentLink(name, address, cfg.serving, cfg.features.window, N_FEATURES,
                                                forecast) for address in agents[name]])
              for name in AGENT_NAMES}
    state = ActiveVersionState(state_dir)
    audit = AuditLog(audit_path, cfg.serving.audit_flush_ms) if audit_path else None
    engine = Engine(cfg, groups, state, audit, forecast)
    server = grpc.aio.server(options=server_options(cfg.serving))
    health = health_aio.HealthServicer()

    async def update_health() -> None:
        if engine.shutting_down:
            return
        if engine.state.version is None:
            version = engine.newest_common_version()
            if version is not None:
                engine.state.activate(version)
                log.info("activated version %d at startup (newest version every connected agent holds)", version)
        status = health_pb2.HealthCheckResponse.SERVING if engine.serving() else \
            health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", DECISION_SERVICE):
            await health.set(service, status)

    async def monitor() -> None:
        """Health and the first activation follow the agents; a failed round is logged, never fatal."""
        while True:
            try:
                await engine.refresh_agents()
                await update_health()
            except Exception:
                log.exception("monitoring the agents failed; retrying in %g s", MONITOR_INTERVAL_S)
            await asyncio.sleep(MONITOR_INTERVAL_S)

    for group in groups.values():
        for link in group.links:
            link.on_connect = update_health
        group.start()
    decision_pb2_grpc.add_DecisionServiceServicer_to_server(DecisionServicer(engine), server)
    cluster_pb2_grpc.add_ClusterServiceServicer_to_server(ClusterServicer(engine), server)
    cluster_pb2_grpc.add_ModelAdminServiceServicer_to_server(ModelAdminServicer(engine, admin_token, update_health),
                                                            server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = (DECISION_SERVICE, cluster_pb2.DESCRIPTOR.services_by_name["ClusterService"].full_name,
             cluster_pb2.DESCRIPTOR.services_by_name["ModelAdminService"].full_name,
             health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    bound = bind(server, host, port, cfg.serving)
    for service in ("", DECISION_SERVICE):
        await health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    running = CoordinatorServer(server, bound, engine, health, asyncio.get_running_loop().create_task(monitor()))
    if engine.state.version is not None:
        log.info("active model version %d (persisted)", engine.state.version)
    return running


async def run_coordinator(cfg: Config, *, host: str, port: int, agents: dict[str, list[str]], state_dir: str | Path,
                          admin_token: str, audit_path: str | Path | None) -> None:
    """Serve until SIGTERM/SIGINT (the `tactical coordinator` command)."""
    running = await start_coordinator(cfg, host=host, port=port, agents=agents, state_dir=state_dir,
                                      admin_token=admin_token, audit_path=audit_path)
    address = f"{host}:{running.port}"
    log.info("coordinator listening on %s; agents %s", address, agents)
    await serve_until_signal(address)
    log.info("shutting down: NOT_SERVING, draining in-flight calls, flushing the audit log")
    await running.stop()
    log.info("stopped after %d decisions", running.engine.decisions)
