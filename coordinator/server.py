"""The coordinator's gRPC server: one servicer per service, thin handlers that validate and delegate.

DecisionService answers trading clients, ClusterService reports status, ModelAdminService
(admin token) activates and rolls back versions; health and reflection are wired in. On
SIGTERM or SIGINT it goes NOT_SERVING, drains in-flight calls, closes the agent links and
flushes the audit log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from coordinator import guard
from coordinator.audit import AuditLog, AuditUnavailable
from coordinator.core import Coordinator, error_decision
from coordinator.links import AgentGroup, AgentLink, ArrivalForecast
from coordinator.metrics import families, status_json
from coordinator.state import ActiveVersionState
from market.bars import BarDataError
from tactical.config import AGENT_NAMES, Config
from tactical.failpoints import crash_point
from tactical.logs import client_errors
from tactical.metrics import serve_metrics
from tactical.process import serve_until_signal
from tactical.rpc import (
    SHUTDOWN_GRACE_S,
    Undecodable,
    add_service,
    bind,
    enable_reflection,
    new_server,
    percentile,
    require_admin,
)
from tactical.v1 import cluster_pb2, cluster_pb2_grpc, decision_pb2, decision_pb2_grpc
from tactical.wire import ERROR_REASON_HEADER, N_FEATURES, WireError, traceparent

log = logging.getLogger(__name__)
MONITOR_INTERVAL_S = 1.0
PREPARE_TTL_MS = 10_000.0  # how long a Prepare holds a version ready for the Activate that follows
DECISION_SERVICE_DESCRIPTOR = decision_pb2.DESCRIPTOR.services_by_name["DecisionService"]
DECISION_SERVICE = DECISION_SERVICE_DESCRIPTOR.full_name
CLUSTER_SERVICE = cluster_pb2.DESCRIPTOR.services_by_name["ClusterService"]
MODEL_ADMIN_SERVICE = cluster_pb2.DESCRIPTOR.services_by_name["ModelAdminService"]


class DecisionServicer(decision_pb2_grpc.DecisionServiceServicer):
    """Decide, DecideStream, DecideBatch: bad input is INVALID_ARGUMENT (on a stream or in a batch, an error
    Decision, and the call goes on); a fail-closed audit that cannot record is UNAVAILABLE with the reason."""

    def __init__(self, coordinator: Coordinator):
        self.coordinator = coordinator

    async def Decide(self, request, context):
        try:
            return await self.coordinator.answer(request, traceparent(context.invocation_metadata()))
        except (WireError, BarDataError) as exc:
            self._refused("INVALID_ARGUMENT", exc)
            if getattr(exc, "reason", ""):
                context.set_trailing_metadata(((ERROR_REASON_HEADER, exc.reason),))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except AuditUnavailable as exc:
            self._refused("UNAVAILABLE", exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    async def DecideBatch(self, request, context):
        try:
            decisions = await self.coordinator.answer_batch(request.items, traceparent(context.invocation_metadata()))
        except WireError as exc:
            self._refused("INVALID_ARGUMENT", exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except AuditUnavailable as exc:
            self._refused("UNAVAILABLE", exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        for d in decisions:
            if d.HasField("error"):
                self._refused("INVALID_ARGUMENT", d.error.message)
        return decision_pb2.DecideBatchResponse(decisions=decisions)

    def _refused(self, code: str, cause: Exception | str) -> None:
        """Counted as a metric; client errors logged at a bounded rate (never a traceback per call)."""
        self.coordinator.metrics.refused[code] += 1
        if code == "INVALID_ARGUMENT":
            client_errors.note("invalid request", str(cause))

    async def DecideStream(self, request_iterator, context):
        # context.read()/write() rather than iterating and yielding: no async generators per message
        stream = id(context)
        forecast = self.coordinator.forecast
        trace = traceparent(context.invocation_metadata())
        try:
            while (request := await context.read()) is not grpc.aio.EOF:
                forecast.arrived(stream)
                if isinstance(request, Undecodable):
                    client_errors.note("undecodable request", request.message)
                    self.coordinator.metrics.refused["INVALID_ARGUMENT"] += 1
                    decision = error_decision("", "", grpc.StatusCode.INVALID_ARGUMENT, request.message)
                else:
                    try:
                        decision = await self.coordinator.answer(request, trace)
                    except (WireError, BarDataError) as exc:
                        self._refused("INVALID_ARGUMENT", exc)
                        decision = error_decision(request.request_id, request.instrument,
                                                  grpc.StatusCode.INVALID_ARGUMENT, exc)
                    except AuditUnavailable as exc:
                        self._refused("UNAVAILABLE", exc)
                        decision = error_decision(request.request_id, request.instrument,
                                                  grpc.StatusCode.UNAVAILABLE, str(exc))
                forecast.answered(stream)
                await context.write(decision)
        finally:
            forecast.arrived(stream)


class ClusterServicer(cluster_pb2_grpc.ClusterServiceServicer):
    def __init__(self, coordinator: Coordinator):
        self.coordinator = coordinator

    async def GetStatus(self, request, context):
        c = self.coordinator
        await c.refresh_agents()
        agents = [cluster_pb2.AgentStatus(agent=link.name, address=link.address, connected=link.connected,
                                          info=link.info, error="" if link.connected else link.last_error,
                                          problem=c.problem(link) or "")
                  for link in c.links()]
        status = cluster_pb2.ClusterStatus(
            active_version=c.state.version, serving=c.serving(), agents=agents, decisions=c.decisions,
            degraded_decisions=c.degraded, p50_ms=percentile(c.latencies_ms, 50),
            p99_ms=percentile(c.latencies_ms, 99), pid=os.getpid(), uptime_s=time.monotonic() - c.started,
            health_json=status_json(c))
        if c.guard_last is not None:
            status.guard_time_ms, status.guard = c.guard_last
        if c.audit is not None:
            audit = c.audit.status()
            status.MergeFrom(cluster_pb2.ClusterStatus(
                audit_policy=audit.policy, audit_trouble=audit.trouble or "", audit_logged=audit.logged,
                audit_dropped=audit.dropped, audit_waiting=audit.waiting, audit_spilled=audit.spilled,
                audit_backlog_bytes=audit.backlog_bytes))
        return status

    async def GetShadow(self, request, context):
        return shadow_report(self.coordinator)


def shadow_report(c: Coordinator) -> cluster_pb2.ShadowReport:
    s = c.scores.shadow
    report = cluster_pb2.ShadowReport(active_version=c.state.version,
                                      transaction_cost=c.cfg.training.transaction_cost)
    if s is not None:
        report.MergeFrom(cluster_pb2.ShadowReport(
            shadow_version=s.version, since_ms=s.since_ms, decisions=s.decisions, agreed=s.agreed,
            active_pnl=np.array(s.active_pnl, dtype="<f8").tobytes(),
            shadow_pnl=np.array(s.shadow_pnl, dtype="<f8").tobytes()))
    return report


class ModelAdminServicer(cluster_pb2_grpc.ModelAdminServiceServicer):
    """Prepare, Activate, Rollback, ListVersions. Token required.

    A switch normally asks every agent first whether it holds the version (a GetInfo round trip).
    Prepare does that ahead of time and holds the version ready for PREPARE_TTL_S, so that the
    switches of several coordinators, prepared first, then activated together, land within a few
    milliseconds of each other (tactical_engine.rollout).
    """

    def __init__(self, coordinator: Coordinator, token: str, on_change):
        self.coordinator, self.token, self.on_change = coordinator, token, on_change
        self._lock = asyncio.Lock()
        self._prepared: tuple[int, float] | None = None  # (version, until when: monotonic seconds)

    async def _check(self, context, version: int) -> None:
        """Abort unless every agent can vote with `version` (asking them, unless it was just prepared)."""
        e = self.coordinator
        prepared = self._prepared is not None and self._prepared[0] == version and time.monotonic() < self._prepared[1]
        if not prepared:
            await e.refresh_agents()
        missing = e.missing(version)  # from the agents' last reports: no call when prepared
        if missing:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"version {version} is not staged on every agent: missing on {'; '.join(missing)}")
        if (skew := e.feature_skew(version)) is not None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, skew)

    async def _switch(self, context, version: int, rollback: bool) -> cluster_pb2.ActivationResult:
        e = self.coordinator
        await self._check(context, version)
        self._prepared = None
        crash_point("coordinator-switch")  # fault tests: a coordinator dying in the middle of a coordinated rollout
        previous = e.state.rollback() if rollback else e.state.activate(version)
        e.on_activated(version)
        switched_ms = int(time.time() * 1000)
        if rollback:
            e.metrics.rollbacks += 1
        else:
            e.metrics.activations += 1
        log.info("%s version %d (was %s)", "rolled back to" if rollback else "activated", version, previous,
                 extra={"version": version, "previous_version": previous, "rollback": rollback})
        await self.on_change()
        return cluster_pb2.ActivationResult(active_version=version, previous_version=previous,
                                            switched_ms=switched_ms)

    async def SetShadow(self, request, context):
        await require_admin(context, self.token)
        async with self._lock:
            e = self.coordinator
            if request.HasField("version"):
                if e.state.version is None:
                    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no active version to shadow beside")
                if request.version == e.state.version:
                    await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                        f"version {request.version} is the active version")
                await self._check(context, request.version)
            version = request.version if request.HasField("version") else None
            e.state.set_shadow(version)
            e.scores.start_shadow(version, e.state.version)  # a new record, also when the same version is set again
            log.info("shadow version %s (active %s)", version, e.state.version,
                     extra={"shadow_version": version, "version": e.state.version})
            return shadow_report(e)

    async def Prepare(self, request, context):
        await require_admin(context, self.token)
        async with self._lock:
            await self._check(context, request.version)
            self._prepared = (request.version, time.monotonic() + (request.ttl_ms or PREPARE_TTL_MS) / 1000)
            state = self.coordinator.state
            return cluster_pb2.PrepareResult(version=request.version, active_version=state.version,
                                             rollback_target=state.rollback_target())

    async def Activate(self, request, context):
        await require_admin(context, self.token)
        async with self._lock:
            return await self._switch(context, request.version, rollback=False)

    async def Rollback(self, request, context):
        await require_admin(context, self.token)
        async with self._lock:
            target = self.coordinator.state.rollback_target()
            if target is None:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no earlier version to roll back to")
            if request.HasField("expected_version") and request.expected_version != target:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"a rollback here would activate version {target}, not "
                                    f"{request.expected_version}")
            return await self._switch(context, target, rollback=True)

    async def ListVersions(self, request, context):
        await require_admin(context, self.token)
        e = self.coordinator
        await e.refresh_agents()
        agents = [cluster_pb2.AgentVersions(agent=link.name,
                                            loaded_versions=link.info.loaded_versions if link.info else [],
                                            stored_versions=link.info.stored_versions if link.info else [],
                                            error="" if link.info else link.last_error)
                  for link in e.links()]
        return cluster_pb2.VersionList(active_version=e.state.version, history=e.state.history, agents=agents)


@dataclass
class CoordinatorServer:
    server: grpc.aio.Server
    port: int
    coordinator: Coordinator
    health: health_aio.HealthServicer
    monitor: asyncio.Task
    metrics: str | None  # where the Prometheus endpoint listens (None: off)

    async def stop(self, grace: float = SHUTDOWN_GRACE_S) -> str:
        """NOT_SERVING first, drain in-flight calls, close the agent links, flush the audit log; say what became
        of the decisions answered."""
        self.coordinator.shutting_down = True
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        self.monitor.cancel()
        await asyncio.gather(self.monitor, return_exceptions=True)
        await asyncio.gather(*(group.close() for group in self.coordinator.agents.values()))
        answered = f"{self.coordinator.decisions} decisions answered"
        if self.coordinator.audit is None:
            return f"{answered} (no audit log)"
        audit = await self.coordinator.audit.aclose()
        return (f"{answered}: {audit.logged} in the audit log, {audit.dropped} dropped, {audit.waiting} waiting in "
                f"the spill file for the next start" + (f"; {audit.recovered} recovered from an earlier run's spill"
                                                         if audit.recovered else ""))


async def start_coordinator(cfg: Config, *, host: str, port: int, agents: dict[str, list[str]],
                            state_dir: str | Path, admin_token: str, audit_path: str | Path | None,
                            metrics_port: int = 0) -> CoordinatorServer:
    """Connect to the agents, bind, serve. `agents` maps each agent name to its replicas' host:port;
    `metrics_port`: the Prometheus endpoint's (0: none)."""
    unknown = set(agents) ^ set(AGENT_NAMES)
    if unknown or not all(agents.values()):
        raise ValueError(f"the coordinator needs every agent of {list(AGENT_NAMES)}, got {agents}")
    serving = cfg.serving
    state = ActiveVersionState(state_dir)
    audit = AuditLog(audit_path, flush_ms=serving.audit_flush_ms, policy=serving.audit_policy,
                     backlog_bytes=serving.audit_backlog_bytes, spill_dir=cfg.paths.audit_spill or None,
                     spill_bytes=serving.audit_spill_bytes,
                     window_days=serving.audit_window_days) if audit_path else None
    forecast = ArrivalForecast(serving.batch_linger_ms / 1000)
    groups = {name: AgentGroup(name, [AgentLink(name, address, serving, cfg.features.window, N_FEATURES,
                                                forecast) for address in agents[name]])
              for name in AGENT_NAMES}
    coordinator = Coordinator(cfg, groups, state, audit, forecast)
    server = new_server(serving)
    health = health_aio.HealthServicer()
    shown: list[int] = []

    async def update_health() -> None:
        """SERVING when clients would get decisions: enough agents can vote with the active version, and (under
        fail-closed) the audit can record them."""
        if coordinator.shutting_down:
            return
        if coordinator.state.version is None:
            version = coordinator.newest_common_version()
            if version is not None:
                coordinator.state.activate(version)
                coordinator.on_activated(version)
                log.info("activated version %d at startup (newest version every connected agent holds)", version)
        deciding = coordinator.serving() and (audit is None or audit.accepting())
        status = health_pb2.HealthCheckResponse.SERVING if deciding else health_pb2.HealthCheckResponse.NOT_SERVING
        if shown != [status]:
            shown[:] = [status]
            for service in ("", DECISION_SERVICE):
                await health.set(service, status)

    async def monitor() -> None:
        """Health and the first activation follow the agents; a failed round is logged, never fatal."""
        while True:
            try:
                await coordinator.refresh_agents()
                guard.watch(coordinator)
                await update_health()
            except Exception:
                log.exception("monitoring the agents failed; retrying in %g s", MONITOR_INTERVAL_S)
            await asyncio.sleep(MONITOR_INTERVAL_S)

    for group in groups.values():
        for link in group.links:
            link.on_connect = update_health
        group.start()
    add_service(server, DECISION_SERVICE_DESCRIPTOR, DecisionServicer(coordinator))
    add_service(server, CLUSTER_SERVICE, ClusterServicer(coordinator))
    add_service(server, MODEL_ADMIN_SERVICE, ModelAdminServicer(coordinator, admin_token, update_health))
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection(server, [DECISION_SERVICE, CLUSTER_SERVICE.full_name, MODEL_ADMIN_SERVICE.full_name,
                               health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
    for link in coordinator.links():
        link.batch_size = coordinator.metrics.batch_size[link.name]
    bound = bind(server, host, port, serving)
    metrics = serve_metrics(host, metrics_port, lambda: families(coordinator))
    await update_health()
    await server.start()
    running = CoordinatorServer(server, bound, coordinator, health, asyncio.get_running_loop().create_task(monitor()),
                                metrics)
    if coordinator.state.version is not None:
        log.info("active model version %d (persisted)", coordinator.state.version)
    return running


async def run_coordinator(cfg: Config, *, host: str, port: int, agents: dict[str, list[str]], state_dir: str | Path,
                          admin_token: str, audit_path: str | Path | None, metrics_port: int) -> None:
    """Serve until SIGTERM/SIGINT (the `tactical coordinator` command)."""
    running = await start_coordinator(cfg, host=host, port=port, agents=agents, state_dir=state_dir,
                                      admin_token=admin_token, audit_path=audit_path, metrics_port=metrics_port)
    address = f"{host}:{running.port}"
    log.info("coordinator listening on %s; agents %s%s", address, agents,
             f"; metrics at http://{running.metrics}/metrics" if running.metrics else "")
    await serve_until_signal(address, metrics=running.metrics)
    log.info("shutting down: NOT_SERVING, draining in-flight calls, flushing the audit log")
    log.info("stopped after %s", await running.stop())
