"""Roll a model-store version out to a running cluster: stage on every agent, then activate.

Staging runs on every agent process (replicas included) at once. If any agent refuses or cannot be reached, nothing
is activated and RolloutError names the agent and the reason; the serving version is untouched
everywhere (a staged-but-inactive version is harmless). Activation is one call to the
coordinator, which switches every decision to the new version at once.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc

from agents.serving.model_store import ModelStore
from tactical.config import AGENT_NAMES, Config
from tactical.errors import UserError
from tactical_engine.client import AgentClient, TacticalClient


class RolloutError(UserError, RuntimeError):
    """A rollout that did not happen; the message names the agent(s) and why."""


@dataclass(frozen=True)
class RolloutResult:
    version: int
    previous: int | None  # None: no version was active
    staged: dict[str, bool]  # "agent at host:port" -> it already held that version
    seconds: float


def rollout(client: TacticalClient, store: ModelStore, version: int, cfg: Config, token: str) -> RolloutResult:
    """Stage `version` from `store` on every agent the coordinator knows, then activate it."""
    start = time.perf_counter()
    if version not in store.versions():
        raise RolloutError(f"version {version} is not in the model store {store.root} "
                           f"(it has {store.versions() or 'no versions'})")
    artifacts = {name: store.read_artifact(version, name) for name in AGENT_NAMES}
    processes = [(a.agent, a.address) for a in client.status().agents]  # every replica of every agent

    def stage(process: tuple[str, str]) -> tuple[str, bool | str]:
        name, address = process
        blob, manifest = artifacts[name]
        try:
            with AgentClient(address, cfg, admin_token=token) as agent:
                result = agent.stage(name, version, blob, manifest.to_json(), manifest.sha256)
            return f"{name} at {address}", result.already_staged
        except grpc.RpcError as exc:
            return f"{name} at {address}", f"{exc.code().name}: {exc.details()}"

    with ThreadPoolExecutor(len(processes)) as pool:
        outcomes = dict(pool.map(stage, processes))
    failed = {label: why for label, why in outcomes.items() if isinstance(why, str)}
    if failed:
        detail = "; ".join(f"agent {label}: {why}" for label, why in failed.items())
        raise RolloutError(f"staging version {version} failed, nothing was activated: {detail}")
    try:
        result = client.activate(version)
    except grpc.RpcError as exc:
        raise RolloutError(f"activating version {version} failed: {exc.code().name}: {exc.details()}") from None
    previous = result.previous_version if result.HasField("previous_version") else None
    return RolloutResult(version, previous, outcomes, time.perf_counter() - start)
