"""`tactical health`: the standard gRPC health check of the coordinator and every agent it knows."""

from __future__ import annotations

import argparse

from tactical_engine.commands import add_config_option, add_target_option, require_range, require_seconds


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("health", help="check the coordinator and every agent (exit 0 only when all SERVING)",
                       description="Ask the coordinator, then each agent it knows, with the standard "
                                   "grpc.health.v1 protocol, and print one row per process: address, status, "
                                   "model version, latency percentiles, requests. Exit 0 only when every process "
                                   "is SERVING, else 1.")
    add_target_option(p)
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per call (default 3)")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="keep checking until everything is SERVING, for at most this long (default 0: check once)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_config_option(p)
    p.set_defaults(handler=run)


def check(target: str, cfg, timeout: float) -> tuple[list[dict], object]:
    """One row per process, and the coordinator's status (None when it could not be asked)."""
    import grpc

    from tactical_engine.client import AgentClient, TacticalClient, active_version_text

    rows = []
    with TacticalClient(target, cfg, timeout=timeout) as client:
        status = client.health()
        try:
            cluster = client.status()
        except grpc.RpcError:
            cluster = None
        rows.append({"process": "coordinator", "address": target, "status": status,
                     "version": active_version_text(cluster) if cluster else "-",
                     "p50": f"{cluster.p50_ms:.2f} ms" if cluster else "-",
                     "p99": f"{cluster.p99_ms:.2f} ms" if cluster else "-",
                     "requests": cluster.decisions if cluster else 0})
    for agent in (cluster.agents if cluster else []):
        with AgentClient(agent.address, cfg, timeout=timeout) as client:
            agent_status = client.health()
        info = agent.info if agent.HasField("info") else None
        active = cluster.active_version if cluster.HasField("active_version") else None
        versions = ",".join(("*" if v == active else "") + str(v) for v in info.loaded_versions) if info else "-"
        rows.append({"process": f"agent {agent.agent}", "address": agent.address, "status": agent_status,
                     "version": versions, "p50": f"{info.p50_inference_us:.0f} us" if info else "-",
                     "p99": f"{info.p99_inference_us:.0f} us" if info else "-",
                     "requests": info.windows_served if info else 0})
    return rows, cluster


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from tactical.config import load_config

    require_seconds("--timeout", args.timeout)
    require_range("--wait", args.wait, 0)
    cfg = load_config(args.config)
    target = args.target or cfg.serving.local_coordinator
    deadline = time.monotonic() + args.wait
    while True:
        rows, cluster = check(target, cfg, args.timeout)
        healthy = len(rows) >= 4 and all(r["status"] == "SERVING" for r in rows)
        if healthy or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if args.json:
        print(json.dumps({"healthy": healthy, "processes": rows}, indent=2))
    else:
        print(f"{'process':<16}{'address':<22}{'status':<26}{'version':<12}{'p50':>11}{'p99':>11}{'requests':>10}")
        for r in rows:
            print(f"{r['process']:<16}{r['address']:<22}{r['status']:<26}{r['version']:<12}{r['p50']:>11}"
                  f"{r['p99']:>11}{r['requests']:>10}")
        if cluster:
            print("version: the active model version; for agents the loaded ones, * marks the active one")
    return 0 if healthy else 1
