"""A small synchronous client for the coordinator and the agents, used by the CLI and scripts.

    with TacticalClient("127.0.0.1:50050") as client:
        decision = client.decide(window=features[-60:])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from market.bars import Bars
from tactical.config import Config, default_config
from tactical.rpc import admin_metadata, sync_channel
from tactical.v1 import agent_pb2, agent_pb2_grpc, cluster_pb2, cluster_pb2_grpc, decision_pb2, decision_pb2_grpc
from tactical.wire import STAGE_CHUNK, traceparent_metadata
from tactical_engine.requests import request_for


def health_status(channel: grpc.Channel, timeout: float, service: str = "") -> str:
    """SERVING, NOT_SERVING, ... or UNREACHABLE (with the reason) for the server behind `channel`."""
    try:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                             timeout=timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    except grpc.RpcError as exc:
        return f"UNREACHABLE ({exc.code().name})"


def decide_request(*, window: np.ndarray | None = None, bars: Bars | None = None, request_id: str = "",
                   instrument: str = "") -> decision_pb2.DecideRequest:
    """A Decide request for exactly one of a window or bars."""
    if (window is None) == (bars is None):
        raise ValueError("give exactly one of window or bars")
    return request_for(window if window is not None else bars, instrument, request_id)


def version_text(version: int | None) -> str:
    """A model version for people: its number, or 'none' (0 is a version: the embedded default)."""
    return "none" if version is None else str(version)


def active_version_text(message: cluster_pb2.ClusterStatus | cluster_pb2.VersionList) -> str:
    """The active version for people: its number, or 'none' while no version is active."""
    return version_text(message.active_version if message.HasField("active_version") else None)


class TacticalClient:
    """Calls to one coordinator. Admin calls send `admin_token`."""

    def __init__(self, target: str, cfg: Config | None = None, admin_token: str = "", timeout: float = 5.0):
        self.cfg = cfg or default_config()
        self.target = target
        self.timeout = timeout
        self.admin_token = admin_token
        self.channel = sync_channel(target, self.cfg.serving)
        self.decisions = decision_pb2_grpc.DecisionServiceStub(self.channel)
        self.cluster = cluster_pb2_grpc.ClusterServiceStub(self.channel)
        self.admin = cluster_pb2_grpc.ModelAdminServiceStub(self.channel)

    def __enter__(self) -> TacticalClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def health(self) -> str:
        return health_status(self.channel, self.timeout)

    def decide(self, *, window: np.ndarray | None = None, bars: Bars | None = None, request_id: str = "",
               instrument: str = "", traceparent: str | None = None) -> decision_pb2.Decision:
        return self.decisions.Decide(decide_request(window=window, bars=bars, request_id=request_id,
                                                    instrument=instrument), timeout=self.timeout,
                                     metadata=traceparent_metadata(traceparent))

    def decide_stream(self, requests: Iterator[decision_pb2.DecideRequest]) -> Iterator[decision_pb2.Decision]:
        return self.decisions.DecideStream(requests)

    def status(self) -> cluster_pb2.ClusterStatus:
        return self.cluster.GetStatus(cluster_pb2.GetStatusRequest(), timeout=self.timeout)

    def activate(self, version: int) -> cluster_pb2.ActivationResult:
        return self.admin.Activate(cluster_pb2.ActivateRequest(version=version), timeout=self.timeout,
                                   metadata=admin_metadata(self.admin_token))

    def rollback(self, expected_version: int | None = None) -> cluster_pb2.ActivationResult:
        return self.admin.Rollback(cluster_pb2.RollbackRequest(expected_version=expected_version),
                                   timeout=self.timeout, metadata=admin_metadata(self.admin_token))

    def set_shadow(self, version: int | None) -> cluster_pb2.ShadowReport:
        return self.admin.SetShadow(cluster_pb2.SetShadowRequest(version=version), timeout=self.timeout,
                                    metadata=admin_metadata(self.admin_token))

    def shadow(self) -> cluster_pb2.ShadowReport:
        return self.cluster.GetShadow(cluster_pb2.GetShadowRequest(), timeout=self.timeout)

    def prepare(self, version: int) -> cluster_pb2.PrepareResult:
        return self.admin.Prepare(cluster_pb2.PrepareRequest(version=version), timeout=self.timeout,
                                  metadata=admin_metadata(self.admin_token))

    def list_versions(self) -> cluster_pb2.VersionList:
        return self.admin.ListVersions(cluster_pb2.ListVersionsRequest(), timeout=self.timeout,
                                       metadata=admin_metadata(self.admin_token))


@contextmanager
def coordinator_clients(targets: Sequence[str], cfg: Config, admin_token: str = "",
                        timeout: float = 5.0) -> Iterator[list[TacticalClient]]:
    """A TacticalClient for each coordinator, all closed at the end (for switching several together)."""
    with ExitStack() as stack:
        yield [stack.enter_context(TacticalClient(t, cfg, admin_token=admin_token, timeout=timeout)) for t in targets]


class AgentClient:
    """Calls to one agent: info, health, staging."""

    def __init__(self, target: str, cfg: Config | None = None, admin_token: str = "", timeout: float = 5.0):
        self.cfg = cfg or default_config()
        self.timeout = timeout
        self.admin_token = admin_token
        self.channel = sync_channel(target, self.cfg.serving)
        self.agent = agent_pb2_grpc.AgentServiceStub(self.channel)
        self.admin = agent_pb2_grpc.AgentAdminServiceStub(self.channel)

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.channel.close()

    def health(self) -> str:
        return health_status(self.channel, self.timeout)

    def info(self) -> agent_pb2.AgentInfo:
        return self.agent.GetInfo(agent_pb2.GetInfoRequest(), timeout=self.timeout)

    def stage(self, agent: str, version: int, blob: bytes, manifest_json: str, sha256: str,
              timeout: float = 60.0) -> agent_pb2.StageResult:
        """Upload a version in 1 MiB chunks after a header."""
        def chunks() -> Iterator[agent_pb2.StageChunk]:
            yield agent_pb2.StageChunk(header=agent_pb2.StageHeader(
                agent=agent, version=version, sha256=sha256, size_bytes=len(blob), manifest_json=manifest_json))
            for offset in range(0, len(blob), STAGE_CHUNK):
                yield agent_pb2.StageChunk(data=blob[offset:offset + STAGE_CHUNK])

        return self.admin.StageVersion(chunks(), timeout=timeout, metadata=admin_metadata(self.admin_token))
