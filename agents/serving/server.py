"""The agent server: one process, one actor, one core. Torch-free: ONNX Runtime on one thread.

Health (grpc.health.v1) tells what the coordinator would experience: SERVING while at least one
model version is loaded and the version it last asked for is not one this agent holds broken.
On SIGTERM or SIGINT the server goes NOT_SERVING, finishes in-flight calls (grace period) and exits.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agents.serving.artifact import ArtifactError, Manifest
from agents.serving.batching import InferenceBatcher, UnknownVersion
from agents.serving.model_store import ModelStore
from agents.serving.registry import BrokenVersion, VersionRegistry
from tactical.atomic import require_writable_dir
from tactical.config import Config
from tactical.logs import RateLimitedLog, client_errors
from tactical.metrics import histogram_family, serve_metrics
from tactical.process import pin_to_core, serve_until_signal
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
from tactical.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from tactical.wire import STAGE_CHUNK, WireError, decode_batch

log = logging.getLogger(__name__)
INSTANCE = os.urandom(8).hex()  # this process, as AgentInfo.instance names it
failures = RateLimitedLog(log)
AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
AGENT_ADMIN_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentAdminService"]
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    """Act, ActStream and GetInfo: validate, then hand the windows to the batcher."""

    def __init__(self, agent: str, registry: VersionRegistry, batcher: InferenceBatcher, window: int,
                 max_batch: int, core: int, on_request: Callable[[int], None]):
        self.agent, self.registry, self.batcher = agent, registry, batcher
        self.window, self.max_batch, self.core = window, max_batch, core
        self.on_request = on_request  # hears each new version asked for, and a broken one: health follows it
        self._asked: int | None = None
        self.active_requests = 0
        self.open_streams = 0
        self.started = time.monotonic()

    async def _act(self, request: agent_pb2.ActRequest, streamed: bool) -> agent_pb2.ActResponse:
        """The answer, or raises WireError / UnknownVersion / BrokenVersion.

        The one stream of the one coordinator (already batched there) runs its forward pass at
        once; concurrent callers (unary calls, several coordinators) go through the batcher.
        """
        windows = decode_batch(request.windows, self.window, self.max_batch)
        version = request.model_version
        if version != self._asked:
            self._asked = version
            self.on_request(version)
        if self.registry.get(version) is None:
            try:
                runner = await self.registry.load_stored(version)
            except BrokenVersion:
                self.on_request(version)
                raise
            if runner is None:
                raise UnknownVersion(version)
        self.active_requests += 1
        try:
            if streamed and self.open_streams == 1 and self.active_requests == 1 and self.batcher.idle():
                probs, values, micros = self.batcher.infer_now(version, windows)
            else:
                probs, values, micros = await self.batcher.infer(version, windows)
        finally:
            self.active_requests -= 1
        response = agent_pb2.ActResponse(seq=request.seq, model_version=version,
                                         probabilities=probs.astype("<f4", copy=False).tobytes(),
                                         values=values.astype("<f4", copy=False).tobytes(), inference_us=micros)
        if request.HasField("shadow_version"):
            await self._shadow(request.shadow_version, windows, response)
        return response

    async def _shadow(self, version: int, windows: np.ndarray, response: agent_pb2.ActResponse) -> None:
        """The shadow version's probabilities on the same windows, into `response` (or why not)."""
        try:
            runner = self.registry.get(version) or await self.registry.load_stored(version)
        except BrokenVersion as exc:
            runner, response.shadow_error = None, str(exc)
        if runner is None:
            response.shadow_error = response.shadow_error or f"model version {version} is not on agent {self.agent}"
            return
        probs, _ = runner.infer(windows)
        response.shadow_probabilities = probs.astype("<f4", copy=False).tobytes()

    def _status(self, exc: Exception, version: int) -> tuple[grpc.StatusCode, str]:
        if isinstance(exc, WireError):
            client_errors.note("invalid agent request", str(exc))
            return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        if isinstance(exc, UnknownVersion):
            return grpc.StatusCode.NOT_FOUND, (f"model version {version} is not on agent {self.agent} "
                                               f"(loaded: {self.registry.loaded()}, "
                                               f"stored: {self.registry.store.versions()})")
        if isinstance(exc, BrokenVersion):
            return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
        failures.note("inference failed", f"{type(exc).__name__}: {exc}", logging.ERROR)
        return grpc.StatusCode.INTERNAL, f"inference failed on agent {self.agent}: {exc}"

    async def Act(self, request, context):
        try:
            return await self._act(request, streamed=False)
        except Exception as exc:
            await context.abort(*self._status(exc, request.model_version))

    async def ActStream(self, request_iterator, context):
        self.open_streams += 1
        try:  # context.read()/write(): no async generator per message
            while (request := await context.read()) is not grpc.aio.EOF:
                if isinstance(request, Undecodable):
                    client_errors.note("undecodable request", request.message)
                    await context.write(agent_pb2.ActResponse(error=common_pb2.Error(
                        code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=request.message)))
                    continue
                try:
                    response = await self._act(request, streamed=True)
                except Exception as exc:
                    code, message = self._status(exc, request.model_version)
                    response = agent_pb2.ActResponse(seq=request.seq, model_version=request.model_version,
                                                     error=common_pb2.Error(code=code.value[0], message=message))
                await context.write(response)
        finally:
            self.open_streams -= 1

    async def GetInfo(self, request, context):
        latencies = self.batcher.inference_us
        return agent_pb2.AgentInfo(
            agent=self.agent, loaded_versions=self.registry.loaded(), stored_versions=self.registry.store.versions(),
            active_requests=self.active_requests, windows_served=self.batcher.windows_served,
            batches=self.batcher.batches, p50_inference_us=percentile(latencies, 50),
            p99_inference_us=percentile(latencies, 99), core=self.core, pid=os.getpid(),
            uptime_s=time.monotonic() - self.started, sha256=self.registry.sha256(),
            broken_versions=self.registry.broken(), feature_references=self.registry.feature_references(),
            instance=INSTANCE, feature_settings=self.registry.feature_settings())


class AgentAdminServicer(agent_pb2_grpc.AgentAdminServiceServicer):
    """StageVersion: receive a version in chunks, verify everything, persist, load. Token required."""

    def __init__(self, agent: str, registry: VersionRegistry, token: str, max_bytes: int, on_change):
        self.agent, self.registry, self.token, self.max_bytes = agent, registry, token, max_bytes
        self.on_change = on_change
        # (result, reason): staged, already, refused; the usual ones start at 0 (a series for dashboards at once)
        self.outcomes = collections.Counter({("staged", ""): 0, ("already", ""): 0, ("refused", "artifact"): 0})

    async def StageVersion(self, request_iterator, context):
        await require_admin(context, self.token)
        header, chunks, received = None, [], 0
        async for chunk in request_iterator:
            if isinstance(chunk, Undecodable):
                client_errors.note("undecodable request", chunk.message)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, chunk.message)
            part = chunk.WhichOneof("part")
            if part == "header":
                if header is not None:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a second header in one upload")
                header = chunk.header
                if header.size_bytes > self.max_bytes:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                        f"artifact of {header.size_bytes} bytes exceeds the {self.max_bytes}-byte cap")
            elif part == "data":
                if header is None:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "data before the header")
                if len(chunk.data) > STAGE_CHUNK:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                        f"a data chunk of {len(chunk.data)} bytes; chunks are at most {STAGE_CHUNK}")
                received += len(chunk.data)
                if received > header.size_bytes:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                        f"received more than the announced {header.size_bytes} bytes")
                chunks.append(chunk.data)
        if header is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an upload needs a header first")
        if header.agent != self.agent:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"artifact is for agent {header.agent!r}, this is agent {self.agent!r}")
        blob = b"".join(chunks)
        if len(blob) != header.size_bytes:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"upload truncated: {len(blob)} of {header.size_bytes} bytes arrived")
        if hashlib.sha256(blob).hexdigest() != header.sha256:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "upload checksum mismatch: the bytes received do "
                                                                  "not hash to the announced sha256")
        try:
            manifest = Manifest.from_json(header.manifest_json)
            if manifest.sha256 != header.sha256:
                raise ArtifactError("the manifest's sha256 differs from the upload's")
            # Loading and probing take ~100 ms: off the event loop, so serving goes on meanwhile.
            runner, already = await asyncio.to_thread(self.registry.prepare, header.version, blob, manifest)
        except ArtifactError as exc:
            log.warning("refused version %d: %s", header.version, exc)
            self.outcomes[("refused", "artifact")] += 1
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"version {header.version} refused: {exc}")
        except FileExistsError:
            self.outcomes[("refused", "concurrent")] += 1
            await context.abort(grpc.StatusCode.ABORTED, f"version {header.version} is being staged concurrently")
        except OSError as exc:  # the store cannot be written: the serving versions are untouched
            self.outcomes[("refused", "no_space" if exc.errno in NO_SPACE else "io")] += 1
            where = exc.filename or self.registry.store.root
            log.error("cannot store version %d at %s: %s", header.version, where, exc.strerror or exc)
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if exc.errno in NO_SPACE else grpc.StatusCode.INTERNAL
            await context.abort(code, f"agent {self.agent} cannot store version {header.version} at {where}: "
                                      f"{exc.strerror or exc}")
        self.registry.hold(header.version, runner)
        self.outcomes[("already" if already else "staged", "")] += 1
        await self.on_change()
        return agent_pb2.StageResult(agent=self.agent, version=header.version, already_staged=already)


@dataclass
class AgentServer:
    """A running agent server; `stop()` shuts it down gracefully."""

    agent: str
    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    batcher: InferenceBatcher
    metrics: str | None  # where the Prometheus endpoint listens (None: off)

    async def stop(self, grace: float = SHUTDOWN_GRACE_S) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.batcher.stop()


async def start_agent_server(agent: str, cfg: Config, *, host: str, port: int, core: int, store_root: str | Path,
                             bootstrap_root: str | Path | None, admin_token: str,
                             metrics_port: int = 0) -> AgentServer:
    """Load versions (own store, then the trainer's store for what is missing), bind, serve (and the Prometheus
    endpoint on `metrics_port`; 0: none)."""
    serving = cfg.serving
    require_writable_dir(store_root, f"agent {agent}'s version store")
    registry = VersionRegistry(agent, ModelStore(store_root), keep=serving.versions_kept)
    loaded = registry.load_persisted()
    if bootstrap_root is not None:
        imported = registry.import_from(ModelStore(bootstrap_root), serving.versions_kept)
        if imported:
            log.info("imported versions %s from %s", imported, bootstrap_root)
    if registry.loaded():
        log.info("serving versions %s (persisted before start: %s)", registry.loaded(), loaded)
        if 0 in registry.loaded():
            log.warning("version 0 is the embedded default: a freshly initialized, seeded, untrained model")
    else:
        log.warning("no model version yet: NOT_SERVING until one is staged")

    batcher = InferenceBatcher(registry, serving.max_batch)
    server = new_server(serving)
    health = health_aio.HealthServicer()
    asked: list[int] = []  # the version last asked for by a caller, once asked
    shown: list[int] = []  # the status health reports now
    refreshing: set[asyncio.Task] = set()

    async def refresh_health() -> None:
        broken = bool(asked) and asked[0] in registry.broken()
        serving_now = bool(registry.loaded()) and not broken
        status = health_pb2.HealthCheckResponse.SERVING if serving_now else health_pb2.HealthCheckResponse.NOT_SERVING
        if shown != [status]:
            shown[:] = [status]
            for service in ("", AGENT_SERVICE.full_name):
                await health.set(service, status)

    def on_request(version: int) -> None:
        """A new version was asked for, or a broken one: health may change."""
        asked[:] = [version]
        task = asyncio.ensure_future(refresh_health())
        refreshing.add(task)  # held until done (the loop keeps only weak references to tasks)
        task.add_done_callback(refreshing.discard)

    largest = max(serving.max_batch, serving.max_batch_items)  # a DecideBatch's windows arrive as one request
    add_service(server, AGENT_SERVICE, AgentServicer(agent, registry, batcher, cfg.features.window, largest, core,
                                                     on_request))
    admin = AgentAdminServicer(agent, registry, admin_token, serving.max_message_bytes * 16, refresh_health)
    add_service(server, AGENT_ADMIN_SERVICE, admin)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection(server, [AGENT_SERVICE.full_name, AGENT_ADMIN_SERVICE.full_name,
                               health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
    bound = bind(server, host, port, serving)
    metrics = serve_metrics(host, metrics_port, lambda: agent_families(agent, registry, batcher, admin))
    await refresh_health()
    batcher.start()
    await server.start()
    return AgentServer(agent, server, bound, health, batcher, metrics)


def agent_families(agent: str, registry: VersionRegistry, batcher: InferenceBatcher,
                   admin: AgentAdminServicer) -> Iterator[Metric]:
    """The agent's metric families, built at scrape time from counters the request path keeps."""
    windows = CounterMetricFamily("tactical_agent_windows", "Windows answered", labels=["agent"])
    windows.add_metric([agent], batcher.windows_served)
    yield windows
    yield histogram_family("tactical_agent_batch_windows", "Windows per forward pass",
                           {(agent,): batcher.batch_sizes}, ["agent"])
    yield histogram_family("tactical_agent_inference_seconds", "Time of a forward pass",
                           {(agent,): batcher.inference_seconds}, ["agent"])
    held = GaugeMetricFamily("tactical_agent_versions", "Model versions this agent holds: loaded in memory, stored, "
                                                        "broken (stored but cannot be served)",
                             labels=["agent", "state"])
    for state, versions in (("loaded", registry.loaded()), ("stored", registry.store.versions()),
                            ("broken", registry.broken())):
        held.add_metric([agent, state], len(versions))
    yield held
    stages = CounterMetricFamily("tactical_agent_stages", "Versions staged here: staged, already held, or refused "
                                                          "(and why)", labels=["agent", "result", "reason"])
    for (result, reason), n in list(admin.outcomes.items()):
        stages.add_metric([agent, result, reason], n)
    yield stages


async def run_agent(agent: str, cfg: Config, *, host: str, port: int, core: int, store_root: str | Path,
                    bootstrap_root: str | Path | None, admin_token: str, metrics_port: int) -> None:
    """Serve until SIGTERM/SIGINT (the `tactical agent` command)."""
    pinned = pin_to_core(core)
    running = await start_agent_server(agent, cfg, host=host, port=port, core=pinned, store_root=store_root,
                                       bootstrap_root=bootstrap_root, admin_token=admin_token,
                                       metrics_port=metrics_port)
    address = f"{host}:{running.port}"
    log.info("agent %s listening on %s (core %s)%s", agent, address, pinned if pinned >= 0 else "any",
             f"; metrics at http://{running.metrics}/metrics" if running.metrics else "")
    await serve_until_signal(address, metrics=running.metrics)
    log.info("shutting down: NOT_SERVING, draining in-flight calls")
    await running.stop()
    log.info("stopped")
