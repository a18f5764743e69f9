"""Soak run: many decisions from concurrent streams while agents are killed and rollouts happen.

    python benchmarks/soak.py [--decisions 100000] [--streams 8] [--seed 0]

The real local cluster (launcher restarting what dies) serves `--decisions` decisions over
`--streams` concurrent DecideStreams. Meanwhile a chaos thread, every 1-4 s at random,
SIGKILLs an agent, rolls out another model version, or rolls back (after a rollout). Afterwards every vote of
every decision is recomputed here from that version's ONNX artifacts: a vote that does not
match its decision's version is a mixed-version decision.

Reports decisions answered, failed calls (target 0), degraded share, mixed-version decisions
(target 0), and latency p50/p99 overall, within 2 s after an agent kill, and otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

VERSIONS = (1, 2, 3)
POOL = 64


def opinionated_versions(store, cfg) -> None:
    """Versions 1-3: models whose agents give distinct, non-uniform probabilities."""
    import torch

    from training.system import TacticalMARLSystem
    from training.versions import publish

    for v in VERSIONS:
        torch.manual_seed(1000 + v)
        model = TacticalMARLSystem(cfg).eval()
        with torch.no_grad():
            for actor in model.actors.values():
                actor.policy_head.weight.normal_(0, 0.3)
                actor.policy_head.bias.normal_(0, 1.0)
        publish(store, model, source=f"soak version {v}", version=v)


async def stream_client(target, cfg, windows, count, out, failures) -> None:
    import grpc

    from tactical.rpc import aio_channel
    from tactical.v1 import decision_pb2, decision_pb2_grpc
    from tactical.wire import encode_window

    requests = [decision_pb2.DecideRequest(window=encode_window(w)) for w in windows]
    async with aio_channel(target, cfg.serving) as channel:
        call = decision_pb2_grpc.DecisionServiceStub(channel).DecideStream()
        rng = random.Random(len(out))
        try:
            for _ in range(count):
                i = rng.randrange(POOL)
                sent = time.perf_counter()
                await call.write(requests[i])
                d = await call.read()
                if d is grpc.aio.EOF or d.HasField("error"):
                    failures.append("stream closed" if d is grpc.aio.EOF else d.error.message)
                    return
                votes = np.array([v.probabilities if v.ok else [np.nan] * 3 for v in d.votes], dtype=np.float32)
                out.append((sent, (time.perf_counter() - sent) * 1e3, i, d.model_version, d.degraded, votes))
            await call.done_writing()
        except grpc.aio.AioRpcError as exc:
            failures.append(f"{exc.code().name}: {exc.details()}")


def chaos(cluster, cfg, store, token, stop: threading.Event, seed: int, log: list) -> None:
    import grpc

    from tactical_engine.client import TacticalClient
    from tactical_engine.rollout import RolloutError, rollout

    rng = random.Random(seed)
    undoable = 0  # rollouts not yet rolled back: a rollback only makes sense after one
    with TacticalClient(cluster.coordinator.address, cfg, admin_token=token) as client:
        while not stop.wait(rng.uniform(1.0, 4.0)):
            action = rng.choice(["kill", "kill", "rollout"] + (["rollback"] if undoable else []))
            try:
                if action == "kill":
                    victim = rng.choice(cluster.agents)
                    if victim.alive():
                        victim.proc.kill()
                        log.append((time.perf_counter(), f"killed {victim.name}"))
                elif action == "rollout":
                    version = rng.choice(VERSIONS)
                    rollout(client, store, version, cfg, token)
                    undoable += 1
                    log.append((time.perf_counter(), f"rolled out v{version}"))
                else:
                    result = client.rollback()
                    undoable -= 1
                    log.append((time.perf_counter(), f"rolled back to v{result.active_version}"))
            except (RolloutError, grpc.RpcError) as exc:  # e.g. an agent is down, or nothing to roll back to
                detail = exc.details() if isinstance(exc, grpc.RpcError) else str(exc)
                log.append((time.perf_counter(), f"{action} refused: {detail.splitlines()[0][:120]}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from agents.serving.model_store import ModelStore
    from agents.serving.runtime import ActorRunner
    from tactical.config import AGENT_NAMES, load_config
    from tactical.rpc import admin_token
    from tactical_engine.launcher import LocalCluster, write_isolated_config
    from training.versions import ensure_default_version

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = write_isolated_config(tmp)
        cfg = load_config(path)
        store = ModelStore(cfg.paths.model_store)
        ensure_default_version(store.root, cfg)
        opinionated_versions(store, cfg)
        windows = np.random.default_rng(args.seed).uniform(-1, 1, (POOL, 60, 7)).astype(np.float32)
        expected = {(v, a): ActorRunner(*store.read_artifact(v, name)).run(windows).probabilities
                    for v in VERSIONS for a, name in enumerate(AGENT_NAMES)}

        cluster = LocalCluster(cfg, str(path))
        cluster.start()
        token = admin_token(cfg)
        stop = threading.Event()
        events: list = []
        supervisor_log: list[str] = []

        def supervise():
            while not stop.is_set():
                supervisor_log.extend(cluster.supervise_once())
                time.sleep(0.05)

        threads = [threading.Thread(target=supervise),
                   threading.Thread(target=chaos, args=(cluster, cfg, store, token, stop, args.seed, events))]
        records: list = []
        failures: list[str] = []
        try:
            for t in threads:
                t.start()
            start = time.perf_counter()
            per_stream = args.decisions // args.streams

            async def drive():
                await asyncio.gather(*(stream_client(cluster.coordinator.address, cfg, windows, per_stream,
                                                     records, failures) for _ in range(args.streams)))

            asyncio.run(drive())
            elapsed = time.perf_counter() - start
        finally:
            stop.set()
            for t in threads:
                t.join()
            cluster.stop()

    mixed = 0
    for _, _, i, version, _, votes in records:
        for a in range(len(AGENT_NAMES)):
            if not np.isnan(votes[a, 0]) and not np.allclose(votes[a], expected[(version, a)][i], atol=1e-5):
                mixed += 1
                break
    kills = [t for t, what in events if what.startswith("killed")]
    during = np.array([any(0 <= s - k <= 2.0 for k in kills) for s, *_ in records])
    latency = np.array([r[1] for r in records])
    degraded = np.array([r[4] for r in records])

    def pct(mask, q):
        return float(np.percentile(latency[mask], q)) if mask.any() else float("nan")

    print(f"{'decisions answered':<34}{len(records):>12,}  in {elapsed:.1f} s ({len(records) / elapsed:,.0f}/s), "
          f"{args.streams} streams")
    print(f"{'failed calls':<34}{len(failures):>12}  (target 0){'  first: ' + failures[0] if failures else ''}")
    print(f"{'degraded decisions':<34}{int(degraded.sum()):>12,}  ({degraded.mean():.2%})")
    print(f"{'mixed-version decisions':<34}{mixed:>12}  (target 0)")
    print(f"{'agent kills / rollouts / rollbacks':<34}{len(kills):>12}  / "
          f"{sum(w.startswith('rolled out') for _, w in events)} / "
          f"{sum(w.startswith('rolled back') for _, w in events)}")
    for _, what in events:
        if "refused" in what:
            print(f"{'':<34}{what}")
    print(f"{'restarts by the launcher':<34}{sum('restarted' in e for e in supervisor_log):>12}")
    everything = np.ones_like(during)
    print(f"{'latency p50 / p99, all':<34}{pct(everything, 50):>9.2f} ms / {pct(everything, 99):.2f} ms")
    print(f"{'latency p50 / p99, <=2 s after kill':<34}{pct(during, 50):>9.2f} ms / {pct(during, 99):.2f} ms")
    print(f"{'latency p50 / p99, otherwise':<34}{pct(~during, 50):>9.2f} ms / {pct(~during, 99):.2f} ms")


if __name__ == "__main__":
    main()
