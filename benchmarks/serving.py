"""Serving benchmark: the real cluster against the floor, latency, throughput and memory.

    python benchmarks/serving.py [--seconds 5]

One run, side by side:
- floor: the real coordinator fanning out to three trivial agent servers that answer without
  inference (same protocol, same batching);
- real: `tactical up`'s cluster (three ONNX Runtime agents and the coordinator, audit log on);
each with one client (unary, then one stream) and 8 and 32 concurrent streams (closed loop:
a client sends its next window when the previous decision arrives), then DecideBatch calls of
500 instruments. The resident memory of each real serving process is read twice: after the
single-window scenarios, and after the DecideBatch ones (ONNX Runtime keeps the arena a batch of
500 grew). The client runs on the same two cores as the servers.

Targets (issue 4): one client streaming p50 <= 1.4 ms, p99 <= 2.5 ms; unary p50 <= 1.8 ms,
p99 <= 3.5 ms; real p50 within 1.3x of the floor; >= 5,000 decisions/s with 32 streams at
p99 < 10 ms; the serving processes together (with the coordinator's audit writer) < 512 MB resident
(after the single-window scenarios).

`python benchmarks/serving.py --trivial-agent NAME --port P` runs one trivial agent (used by the floor).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = [("unary", 1), ("stream", 1), ("stream", 8), ("stream", 32)]
BATCH = 500  # instruments per DecideBatch request (issue 13's desk at a bar close)
BATCH_SCENARIOS = [("batch", 1), ("batch", 2), ("ticks", 1), ("ticks", 2)]


async def serve_trivial_agent(name: str, port: int) -> None:
    """An agent server with the real protocol that answers uniform probabilities without a model."""
    import grpc
    import numpy as np
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1.health import aio as health_aio

    from tactical.process import announce_listening, on_shutdown_signals
    from tactical.v1 import agent_pb2, agent_pb2_grpc

    class Trivial(agent_pb2_grpc.AgentServiceServicer):
        def answer(self, request):
            n = request.windows.count
            np.frombuffer(request.windows.data, dtype="<f4")  # decode, as the real agent does
            return agent_pb2.ActResponse(seq=request.seq, model_version=request.model_version,
                                         probabilities=np.full((n, 3), 1 / 3, dtype="<f4").tobytes(),
                                         values=np.zeros(n, dtype="<f4").tobytes())

        async def Act(self, request, context):
            return self.answer(request)

        async def ActStream(self, request_iterator, context):
            while (request := await context.read()) is not grpc.aio.EOF:
                await context.write(self.answer(request))

        async def GetInfo(self, request, context):
            return agent_pb2.AgentInfo(agent=name, loaded_versions=[0], stored_versions=[0])

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    agent_pb2_grpc.add_AgentServiceServicer_to_server(Trivial(), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    announce_listening(f"127.0.0.1:{bound}")
    stop = asyncio.Event()
    on_shutdown_signals(asyncio.get_running_loop(), stop.set)
    await stop.wait()
    await server.stop(1)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def resident(cluster) -> dict[str, float]:
    """Resident MB of every serving process of a running LocalCluster, the coordinator's audit writer included."""
    memory = {child.name: rss_mb(child.proc.pid) for child in cluster.children}
    pid = cluster.coordinator.proc.pid
    for writer in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        memory["audit writer"] = rss_mb(int(writer))
    return memory


def measure(target: str, cfg, seconds: float, scenarios: list[tuple[str, int]] = SCENARIOS) -> dict:
    from loadgen import run_load

    results = {}
    for mode, streams in scenarios:
        items = BATCH if mode in ("batch", "ticks") else 1
        r = asyncio.run(run_load(target, cfg.serving, streams=streams, seconds=seconds, mode=mode, items=items,
                                 min_bars=cfg.features.min_bars))
        if r.errors:
            raise SystemExit(f"{mode} x{streams}: {len(r.errors)} failed calls, first: {r.errors[0]}")
        results[(mode, streams)] = r
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per scenario (default 5)")
    parser.add_argument("--trivial-agent", metavar="NAME", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trivial_agent:
        asyncio.run(serve_trivial_agent(args.trivial_agent, args.port))
        return

    from paired import cpu_seconds
    from tactical.config import AGENT_NAMES, load_config
    from tactical_engine.client import TacticalClient
    from tactical_engine.launcher import Child, LocalCluster, tactical_command, write_isolated_config

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config_path = write_isolated_config(tmp)
        cfg = load_config(config_path)

        print("floor: the coordinator with three trivial agents ...", file=sys.stderr)
        trivial = [Child(f"trivial {n}", [sys.executable, __file__, "--trivial-agent", n], 0) for n in AGENT_NAMES]
        coordinator = Child("coordinator", [], 0)
        try:
            for child in trivial:
                child.spawn()
                child.wait_listening()
            agents = ",".join(f"{n}={c.address}" for n, c in zip(AGENT_NAMES, trivial, strict=True))
            coordinator.command = tactical_command("coordinator", "--agents", agents, "--config", str(config_path),
                                                   "--state", str(tmp / "floor"),
                                                   "--audit", str(tmp / "floor-audit.sqlite"))
            coordinator.spawn()
            coordinator.wait_listening()
            with TacticalClient(coordinator.address, cfg) as client:
                deadline = time.monotonic() + 30
                while client.health() != "SERVING":
                    if time.monotonic() > deadline:
                        raise SystemExit("the floor coordinator never became SERVING")
                    time.sleep(0.1)
            floor = measure(coordinator.address, cfg, args.seconds)
        finally:
            for child in [coordinator, *trivial]:
                child.terminate()

        print("real: tactical up's cluster ...", file=sys.stderr)
        cluster = LocalCluster(cfg, str(config_path))
        cluster.start()
        try:
            real = measure(cluster.coordinator.address, cfg, args.seconds)
            streamed = resident(cluster)
            batches = measure(cluster.coordinator.address, cfg, args.seconds, BATCH_SCENARIOS)
            cpu = {child.name: cpu_seconds(child.proc.pid) for child in cluster.children}
            batched = resident(cluster)
        finally:
            cluster.stop()

    print(f"{'scenario':<22}{'floor/s':>9}{'floor p50':>10}{'floor p99':>10}{'real/s':>9}{'real p50':>10}"
          f"{'real p99':>10}{'p50 ratio':>10}")
    for key in floor:
        f, r = floor[key], real[key]
        name = f"{key[0]}, {key[1]} client{'s' if key[1] > 1 else ''}"
        print(f"{name:<22}{f.rate:>9,.0f}{f.percentile(50):>9.2f}m{f.percentile(99):>9.2f}m{r.rate:>9,.0f}"
              f"{r.percentile(50):>9.2f}m{r.percentile(99):>9.2f}m{r.percentile(50) / f.percentile(50):>10.2f}")
    print("(latencies in ms, measured by the client from send to answer)")
    print()
    print(f"many instruments per call: DecideBatch of {BATCH} instruments (windows, or each instrument's next bar)")
    print(f"{'scenario':<26}{'decisions/s':>12}{'request p50':>13}{'request p99':>13}{'us/decision':>13}")
    single = real[("stream", 32)]
    print(f"{'stream, 32 clients':<26}{single.rate:>12,.0f}{single.percentile(50):>12.2f}m"
          f"{single.percentile(99):>12.2f}m{1e6 / single.rate:>13.1f}")
    for (mode, streams), r in batches.items():
        name = f"{'windows' if mode == 'batch' else 'next bars'}, {streams} client{'s' if streams > 1 else ''}"
        print(f"{name:<26}{r.rate:>12,.0f}{r.percentile(50):>12.2f}m{r.percentile(99):>12.2f}m{1e6 / r.rate:>13.1f}")
    spent = sum(cpu.values())
    print("CPU of the serving processes over the whole run: "
          + ", ".join(f"{k} {v / spent:.0%}" for k, v in cpu.items()))
    print()
    print(f"{'process':<18}{'resident MB after single windows':>34}{'after DecideBatch too':>23}")
    for name, mb in streamed.items():
        print(f"{name:<18}{mb:>34.1f}{batched.get(name, float('nan')):>23.1f}")
    total = sum(streamed.values())
    print(f"{'total':<18}{total:>34.1f}{sum(batched.values()):>23.1f}")
    print()
    s1, u1, s32 = real[("stream", 1)], real[("unary", 1)], real[("stream", 32)]
    ratio = s1.percentile(50) / floor[("stream", 1)].percentile(50)
    checks = [
        ("one client streaming p50 (ms)", s1.percentile(50), "<= 1.4", s1.percentile(50) <= 1.4),
        ("one client streaming p99 (ms)", s1.percentile(99), "<= 2.5", s1.percentile(99) <= 2.5),
        ("one client unary p50 (ms)", u1.percentile(50), "<= 1.8", u1.percentile(50) <= 1.8),
        ("one client unary p99 (ms)", u1.percentile(99), "<= 3.5", u1.percentile(99) <= 3.5),
        ("streaming p50 over the floor's", ratio, "<= 1.3", ratio <= 1.3),
        ("32 streams, decisions/s", s32.rate, ">= 5000", s32.rate >= 5000),
        ("32 streams, p99 (ms)", s32.percentile(99), "< 10", s32.percentile(99) < 10),
        ("serving processes with the audit writer (MB resident, single windows)", total, "< 512", total < 512),
        (f"DecideBatch of {BATCH}, decisions/s", batches[("batch", 2)].rate, ">= 50000",
         batches[("batch", 2)].rate >= 50000),
        (f"DecideBatch of {BATCH}, request p99 (ms)", batches[("batch", 1)].percentile(99), "< 20",
         batches[("batch", 1)].percentile(99) < 20),
    ]
    print(f"{'target':<54}{'measured':>10}{'goal':>10}{'ok':>5}")
    for name, value, goal, ok in checks:
        print(f"{name:<54}{value:>10.2f}{goal:>10}{'yes' if ok else 'NO':>5}")


if __name__ == "__main__":
    main()
