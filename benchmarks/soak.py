"""Soak run: many decisions from concurrent streams while agents and audit writers are killed, versions
are rolled out and back, some windows are poison, and (as root) the audit log's disk fills up.

    python benchmarks/soak.py [--decisions 100000] [--streams 8] [--seed 0] [--full-disk-seconds 5]

The real local cluster (launcher restarting what dies) serves `--decisions` decisions over
`--streams` concurrent DecideStreams. Meanwhile a chaos thread, every 1-4 s at random,
SIGKILLs an agent or the coordinator's audit writer, rolls out another model version, or rolls
back (after a rollout); one window in a hundred overflows the networks (a poison window, whose
NaN votes must be left out). Then, with root, a full-disk phase: the audit log lives on a small
tmpfs, which is filled to the last block for --full-disk-seconds under load and then freed.

Afterwards every vote of every decision is recomputed here from that version's ONNX artifacts:
a vote that does not match its decision's version is a mixed-version decision. At the end of
each phase the coordinator's audit accounting is printed (answered = logged + dropped +
waiting), and after the stop the audit log's rows are counted: rows + dropped == answered.

Reports decisions answered, failed calls (target 0), degraded share, invalid votes, mixed-version
decisions (target 0), the audit accounting per phase, and latency p50/p99 overall, within 2 s
after an agent kill, and otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

VERSIONS = (1, 2, 3)
POOL = 100  # windows the clients cycle through; the last one is poison
POISON = POOL - 1


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


async def stream_client(target, cfg, windows, stop_at, out, failures, seed) -> None:
    """Closed loop until `stop_at` decisions were answered in all (or a call fails)."""
    import grpc

    from tactical.rpc import aio_channel
    from tactical.v1 import decision_pb2, decision_pb2_grpc
    from tactical.wire import encode_window

    requests = [decision_pb2.DecideRequest(window=encode_window(w)) for w in windows]
    async with aio_channel(target, cfg.serving) as channel:
        call = decision_pb2_grpc.DecisionServiceStub(channel).DecideStream()
        rng = random.Random(seed)
        try:
            while len(out) < stop_at():
                i = rng.randrange(POOL)
                sent = time.perf_counter()
                await call.write(requests[i])
                d = await call.read()
                if d is grpc.aio.EOF or d.HasField("error"):
                    failures.append("stream closed" if d is grpc.aio.EOF else d.error.message)
                    return
                votes = np.array([v.probabilities if v.ok else [np.nan] * 3 for v in d.votes], dtype=np.float32)
                invalid = sum("invalid vote" in v.error for v in d.votes)
                out.append((sent, (time.perf_counter() - sent) * 1e3, i, d.model_version, d.degraded, votes, invalid))
            await call.done_writing()
        except grpc.aio.AioRpcError as exc:
            failures.append(f"{exc.code().name}: {exc.details()}")


def audit_writers(cluster) -> list[int]:
    pid = cluster.coordinator.proc.pid
    with contextlib.suppress(OSError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def chaos(cluster, cfg, store, token, stop: threading.Event, seed: int, log: list) -> None:
    import grpc

    from tactical_engine.client import TacticalClient
    from tactical_engine.rollout import RolloutError, rollout

    rng = random.Random(seed)
    undoable = 0  # rollouts not yet rolled back: a rollback only makes sense after one
    with TacticalClient(cluster.coordinator.address, cfg, admin_token=token) as client:
        while not stop.wait(rng.uniform(1.0, 4.0)):
            action = rng.choice(["kill", "kill", "writer", "rollout"] + (["rollback"] if undoable else []))
            try:
                if action == "kill":
                    victim = rng.choice(cluster.agents)
                    if victim.alive():
                        victim.proc.kill()
                        log.append((time.perf_counter(), f"killed {victim.name}"))
                elif action == "writer":
                    for pid in audit_writers(cluster):
                        os.kill(pid, signal.SIGKILL)
                        log.append((time.perf_counter(), "killed the audit writer"))
                elif action == "rollout":
                    version = rng.choice(VERSIONS)
                    result = rollout(client, store, version, cfg, token)
                    undoable += result.previous != version  # the active version again changes nothing to undo
                    log.append((time.perf_counter(), f"rolled out v{version}"))
                else:
                    result = client.rollback()
                    undoable -= 1
                    log.append((time.perf_counter(), f"rolled back to v{result.active_version}"))
            except (RolloutError, grpc.RpcError) as exc:  # e.g. an agent is down, or nothing to roll back to
                detail = exc.details() if isinstance(exc, grpc.RpcError) else str(exc)
                log.append((time.perf_counter(), f"{action} refused: {detail.splitlines()[0][:120]}"))


@contextlib.contextmanager
def audit_disk(tmp: Path, wanted: bool):
    """A tmpfs for the audit log when a full-disk phase is wanted and mounting is allowed, else None: 1 GiB, room
    for the chaos phase's rows (each keeps its window: about 2.5 kB), until fill() takes the rest."""
    mount = tmp / "auditfs"
    mount.mkdir()
    if not wanted or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1g", "tmpfs", str(mount)],
                                    capture_output=True).returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * (1 << 20))
            f.flush()
    return filler


def accounting(client, phase: str, answered_here: int, failures: list[str]) -> tuple:
    s = client.status()
    waiting = s.audit_waiting
    exact = s.decisions == s.audit_logged + s.audit_dropped + waiting
    return (phase, answered_here, s.decisions, s.audit_logged, s.audit_dropped, waiting, len(failures), exact)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=100_000, help="decisions of the chaos phase")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full-disk-seconds", type=float, default=5.0,
                        help="length of the full-disk phase (needs root to mount a tmpfs; 0: no such phase)")
    args = parser.parse_args()

    from agents.serving.model_store import ModelStore
    from agents.serving.runtime import ActorRunner
    from tactical.config import AGENT_NAMES, load_config
    from tactical.rpc import admin_token
    from tactical_engine.client import TacticalClient
    from tactical_engine.launcher import LocalCluster, write_isolated_config
    from training.versions import ensure_default_version

    with tempfile.TemporaryDirectory() as tmp, audit_disk(Path(tmp), args.full_disk_seconds > 0) as disk:
        tmp = Path(tmp)
        path = write_isolated_config(tmp)
        if disk is not None:
            path = write_isolated_config(tmp, paths={"audit_log": str(disk / "audit.sqlite"),
                                                     "audit_spill": str(tmp / "audit-spill")})
        cfg = load_config(path)
        store = ModelStore(cfg.paths.model_store)
        ensure_default_version(store.root, cfg)
        opinionated_versions(store, cfg)
        windows = np.random.default_rng(args.seed).uniform(-1, 1, (POOL, 60, 7)).astype(np.float32)
        windows[POISON] = np.finfo(np.float32).max  # overflows the networks: NaN votes, to be left out
        expected = {}
        for v in VERSIONS:
            for a, name in enumerate(AGENT_NAMES):
                expected[(v, a)] = ActorRunner(*store.read_artifact(v, name)).infer(windows)[0]

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
        phases = []
        filled: list[float] = []
        try:
            for t in threads:
                t.start()
            start = time.perf_counter()

            async def drive(stop_at):
                await asyncio.gather(*(stream_client(cluster.coordinator.address, cfg, windows, stop_at, records,
                                                     failures, args.seed * 100 + k) for k in range(args.streams)))

            asyncio.run(drive(lambda: args.decisions))
            elapsed = time.perf_counter() - start
            stop.set()
            threads[1].join()  # no more chaos; the supervisor goes on
            with TacticalClient(cluster.coordinator.address, cfg) as client:
                while client.status().audit_waiting:
                    time.sleep(0.2)
                phases.append(accounting(client, "chaos", len(records), failures))
                if disk is not None:
                    before = len(records)

                    def disk_phase():
                        time.sleep(1.0)
                        filler = fill(disk)
                        filled.append(time.perf_counter())
                        time.sleep(args.full_disk_seconds)
                        filler.unlink()
                        filled.append(time.perf_counter())

                    phase = threading.Thread(target=disk_phase)
                    phase.start()
                    asyncio.run(drive(lambda: before + (10**9 if len(filled) < 2 else 0)))
                    phase.join()
                    while client.status().audit_waiting:
                        time.sleep(0.2)
                    phases.append(accounting(client, f"full disk {args.full_disk_seconds:g} s", len(records) - before,
                                             failures))
        finally:
            stop.set()
            for t in threads:
                t.join()
            cluster.stop()
        with contextlib.closing(sqlite3.connect(cfg.paths.audit_log)) as conn:
            rows = conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]

    mixed = invalid = 0
    for _, _, i, version, _, votes, bad in records:
        invalid += bad
        for a in range(len(AGENT_NAMES)):
            if not np.isnan(votes[a, 0]) and not np.allclose(votes[a], expected[(version, a)][i], atol=1e-5):
                mixed += 1
                break
    kills = [t for t, what in events if what.startswith("killed agent")]
    during = np.array([any(0 <= s - k <= 2.0 for k in kills) for s, *_ in records])
    latency = np.array([r[1] for r in records])
    degraded = np.array([r[4] for r in records])

    def pct(mask, q):
        return float(np.percentile(latency[mask], q)) if mask.any() else float("nan")

    print(f"{'decisions answered':<36}{len(records):>12,}  chaos phase {args.decisions:,} in {elapsed:.1f} s "
          f"({args.decisions / elapsed:,.0f}/s), {args.streams} streams")
    print(f"{'failed calls':<36}{len(failures):>12}  (target 0){'  first: ' + failures[0] if failures else ''}")
    print(f"{'degraded decisions':<36}{int(degraded.sum()):>12,}  ({degraded.mean():.2%})")
    print(f"{'invalid votes (poison windows)':<36}{invalid:>12,}  in "
          f"{sum(r[2] == POISON for r in records):,} poison decisions")
    print(f"{'mixed-version decisions':<36}{mixed:>12}  (target 0)")
    print(f"{'agent kills / writer kills':<36}{len(kills):>12}  / "
          f"{sum(w == 'killed the audit writer' for _, w in events)}")
    print(f"{'rollouts / rollbacks':<36}{sum(w.startswith('rolled out') for _, w in events):>12}  / "
          f"{sum(w.startswith('rolled back') for _, w in events)}")
    for _, what in events:
        if "refused" in what:
            print(f"{'':<36}{what}")
    print(f"{'restarts by the launcher':<36}{sum('restarted' in e for e in supervisor_log):>12}")
    everything = np.ones_like(during)
    print(f"{'latency p50 / p99, all':<36}{pct(everything, 50):>9.2f} ms / {pct(everything, 99):.2f} ms")
    print(f"{'latency p50 / p99, <=2 s after kill':<36}{pct(during, 50):>9.2f} ms / {pct(during, 99):.2f} ms")
    print(f"{'latency p50 / p99, otherwise':<36}{pct(~during, 50):>9.2f} ms / {pct(~during, 99):.2f} ms")
    print()
    print(f"{'phase':<20}{'answered':>10}{'total':>10}{'logged':>10}{'dropped':>9}{'waiting':>9}{'failed':>8}"
          f"  identity")
    for phase, here, total, logged, dropped, waiting, failed, exact in phases:
        print(f"{phase:<20}{here:>10,}{total:>10,}{logged:>10,}{dropped:>9,}{waiting:>9,}{failed:>8}  "
              f"{'exact' if exact else 'BROKEN'}")
    if disk is None and args.full_disk_seconds > 0:
        print("full-disk phase skipped: mounting a tmpfs needs root")
    total_dropped = phases[-1][4] if phases else 0
    print(f"after the stop: {rows:,} rows in the audit log + {total_dropped:,} dropped = {rows + total_dropped:,}; "
          f"answered {len(records):,}: {'exact' if rows + total_dropped == len(records) else 'MISMATCH'}")


if __name__ == "__main__":
    main()
