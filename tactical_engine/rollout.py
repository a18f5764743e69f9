"""Roll a model-store version out to a running cluster (one coordinator or several), and roll it back.

1. Stage the version on every agent process the coordinators know (replicas included), at once.
   If any agent refuses or cannot be reached, nothing is activated and RolloutError names the
   agent and the reason; a staged-but-inactive version is harmless.
2. Prepare it on every coordinator: each checks that all its agents hold it and keeps it ready.
   If one cannot, none switches, and the error says which and why.
3. Activate it on every coordinator at once (one thread per coordinator). A coordinator that
   still fails then (an agent vanished in between) makes the ones that did switch go back, so
   that the coordinators never stay on different versions.

Each decision is answered by one version; between the first and the last coordinator's switch,
two coordinators may answer with different ones: that window is measured from the switch times
the coordinators report (their clocks) and returned.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc

from agents.serving.model_store import ModelStore
from tactical.config import AGENT_NAMES, Config
from tactical.errors import UserError
from tactical.v1 import cluster_pb2
from tactical_engine import promotion
from tactical_engine.client import AgentClient, TacticalClient, version_text
from tactical_engine.promotion import Verdict


class RolloutError(UserError, RuntimeError):
    """A rollout or rollback that did not happen; the message names the agent(s) or coordinator(s) and why."""


class PromotionRefused(RolloutError):
    """The promotion gate refused the candidate (nothing was staged or switched); the message holds the numbers."""


@dataclass(frozen=True)
class SwitchResult:
    """What every coordinator did: the version active now, and what each had before."""

    version: int
    previous: dict[str, int | None]  # coordinator address -> the version it had (None: none was active)
    window_ms: float  # from the first coordinator's switch to the last one's (0 with one coordinator)


@dataclass(frozen=True)
class RolloutResult:
    version: int
    previous: int | None  # the first coordinator's previous version (None: no version was active)
    staged: dict[str, bool]  # "agent at host:port" -> it already held that version
    seconds: float
    switch: SwitchResult
    verdict: Verdict  # the promotion gate's


Coordinators = TacticalClient | Sequence[TacticalClient]


def _each(coordinators: Coordinators) -> list[TacticalClient]:
    return [coordinators] if isinstance(coordinators, TacticalClient) else list(coordinators)


def _call_all(clients: list[TacticalClient], call: Callable[[TacticalClient], object]) -> dict[str, object]:
    """`call` on every coordinator at once; address -> its result or the grpc.RpcError it raised."""

    def one(client: TacticalClient) -> tuple[str, object]:
        try:
            return client.target, call(client)
        except grpc.RpcError as exc:
            return client.target, exc

    with ThreadPoolExecutor(len(clients)) as pool:
        return dict(pool.map(one, clients))


def _failures(outcomes: dict[str, object]) -> str:
    return "; ".join(f"coordinator {address}: {exc.code().name}: {exc.details()}"
                     for address, exc in outcomes.items() if isinstance(exc, grpc.RpcError))


def rollout(coordinators: Coordinators, store: ModelStore, version: int, cfg: Config, token: str, *,
            gate: str | None = None, eval_data: str | Path | None = None) -> RolloutResult:
    """Stage `version` from `store` on every agent the coordinators know, then switch every coordinator to it.

    First the promotion gate (tactical_engine.promotion; policy `gate`, default serving.promotion_gate)
    compares it with the first coordinator's active version, on `eval_data` (bars) or the audit log's
    recent traffic; PromotionRefused, with the numbers, when it does not pass.
    """
    start = time.perf_counter()
    clients = _each(coordinators)
    status = clients[0].status()
    active = status.active_version if status.HasField("active_version") else None
    if version not in store.versions():
        raise RolloutError(f"version {version} is not in the model store {store.root} "
                           f"(it has {store.versions() or 'no versions'})")
    verdict = promotion.evaluate(store, version, active, cfg, gate or cfg.serving.promotion_gate,
                                 eval_data=eval_data)
    if not verdict.passed:
        raise PromotionRefused(f"{verdict.describe()}; nothing was staged or switched (`tactical rollout --version "
                               f"{version} --force` overrides)")
    staged = stage(clients, store, version, cfg, token)
    switch = activate(clients, version)
    first = next(iter(switch.previous.values()))
    return RolloutResult(version, first, staged, time.perf_counter() - start, switch, verdict)


def stage(coordinators: Coordinators, store: ModelStore, version: int, cfg: Config, token: str) -> dict[str, bool]:
    """Stage `version` on every agent process the coordinators know, each once; "agent at host:port" -> it already
    held the version. Raises RolloutError naming every agent that refused or could not be reached."""
    if version not in store.versions():
        raise RolloutError(f"version {version} is not in the model store {store.root} "
                           f"(it has {store.versions() or 'no versions'})")
    artifacts = {name: store.read_artifact(version, name) for name in AGENT_NAMES}
    # every replica of every agent, each once even when several coordinators reach it (at one address or two)
    processes = list({(a.info.instance if a.HasField("info") and a.info.instance else a.address): (a.agent, a.address)
                      for client in _each(coordinators) for a in client.status().agents}.values())

    def stage_on(process: tuple[str, str]) -> tuple[str, bool | str]:
        name, address = process
        blob, manifest = artifacts[name]
        try:
            with AgentClient(address, cfg, admin_token=token) as agent:
                result = agent.stage(name, version, blob, manifest.to_json(), manifest.sha256)
            return f"{name} at {address}", result.already_staged
        except grpc.RpcError as exc:
            return f"{name} at {address}", f"{exc.code().name}: {exc.details()}"

    with ThreadPoolExecutor(len(processes)) as pool:
        outcomes = dict(pool.map(stage_on, processes))
    failed = {label: why for label, why in outcomes.items() if isinstance(why, str)}
    if failed:
        detail = "; ".join(f"agent {label}: {why}" for label, why in failed.items())
        raise RolloutError(f"staging version {version} failed, nothing was activated: {detail}")
    return outcomes


def activate(coordinators: Coordinators, version: int) -> SwitchResult:
    """Prepare `version` on every coordinator, then switch them all (or, if one cannot, none)."""
    clients = _each(coordinators)
    prepared = _call_all(clients, lambda c: c.prepare(version))
    if problems := _failures(prepared):
        raise RolloutError(f"version {version} cannot be activated, no coordinator switched: {problems}")
    switched = _call_all(clients, lambda c: c.activate(version))
    return _settle(clients, switched, f"activating version {version}",
                   undo=lambda c, result: c.rollback(expected_version=_previous(result)))


def rollback(coordinators: Coordinators) -> SwitchResult:
    """Switch every coordinator back to the version it had before, which must be the same one for all."""
    clients = _each(coordinators)
    targets = {c.target: c.list_versions() for c in clients}
    back = {address: listing.history[-1] if listing.history else None for address, listing in targets.items()}
    if None in back.values():
        raise RolloutError("no earlier version to roll back to on "
                           + ", ".join(address for address, v in back.items() if v is None))
    if len(set(back.values())) > 1:
        raise RolloutError("the coordinators would roll back to different versions ("
                           + ", ".join(f"{address}: {v}" for address, v in back.items())
                           + "): roll one version out to all of them instead")
    version = next(iter(back.values()))
    prepared = _call_all(clients, lambda c: c.prepare(version))
    if problems := _failures(prepared):
        raise RolloutError(f"cannot roll back to version {version}, no coordinator switched: {problems}")
    switched = _call_all(clients, lambda c: c.rollback(expected_version=version))
    return _settle(clients, switched, f"rolling back to version {version}",
                   undo=lambda c, result: c.activate(_previous(result)))


def _previous(result: cluster_pb2.ActivationResult) -> int | None:
    return result.previous_version if result.HasField("previous_version") else None


def _settle(clients: list[TacticalClient], switched: dict[str, object], what: str,
            undo: Callable[[TacticalClient, cluster_pb2.ActivationResult], object]) -> SwitchResult:
    """The result when every coordinator switched; else switch back the ones that did and raise."""
    if problems := _failures(switched):
        done = [c for c in clients if not isinstance(switched[c.target], grpc.RpcError)]
        restored = _call_all(done, lambda c: undo(c, switched[c.target])) if done else {}
        left = _failures(restored)
        raise RolloutError(f"{what} failed on {problems}; "
                           + (f"switched back: {', '.join(c.target for c in done)}" if done else "none had switched")
                           + (f"; COULD NOT SWITCH BACK {left}" if left else ""))
    times = [result.switched_ms for result in switched.values()]
    version = next(iter(switched.values())).active_version
    return SwitchResult(version, {address: _previous(result) for address, result in switched.items()},
                        float(max(times) - min(times)))


def describe(switch: SwitchResult) -> str:
    """One line for people: what each coordinator had, and the window when there are several."""
    if len(switch.previous) == 1:
        return f"(was {version_text(next(iter(switch.previous.values())))})"
    was = ", ".join(f"{address} had {version_text(v)}" for address, v in switch.previous.items())
    return (f"on {len(switch.previous)} coordinators ({was}); they switched within {switch.window_ms:.0f} ms of "
            f"each other")
