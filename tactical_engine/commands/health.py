"""`tactical health`: the standard gRPC health check of the coordinator and every agent it knows."""

from __future__ import annotations

import argparse

from tactical_engine.commands import add_config_option, add_target_option, require_range, require_seconds


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("health", help="check the coordinator and every agent (exit 0 only when all SERVING)",
                       description="Ask the coordinator, then each agent it knows, with the standard "
                                   "grpc.health.v1 protocol, and print one row per process: address, status, "
                                   "model version, latency percentiles, requests; then every problem, named: an "
                                   "agent that cannot vote with the active version (unreachable, lacks it, holds "
                                   "it broken), an audit log in trouble (AUDIT DEGRADED, with its backlog and "
                                   "drops). Exit 0 only when every process is SERVING and nothing is wrong, else 1.")
    add_target_option(p)
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per call (default 3)")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="keep checking until everything is SERVING, for at most this long (default 0: check once)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_config_option(p)
    p.set_defaults(handler=run)


def check(target: str, cfg, timeout: float) -> tuple[list[dict], object]:
    """One row per process, and the coordinator's status (None when it could not be asked).

    A row's `problem` says why that process does not serve what clients would ask of it: an agent
    that cannot vote with the active version (unreachable, lacks it, holds it broken), an audit
    log in trouble. Latencies are in ms; `loaded_versions` is None for the coordinator.
    """
    import grpc

    from tactical_engine.client import AgentClient, TacticalClient

    rows = []
    with TacticalClient(target, cfg, timeout=timeout) as client:
        status = client.health()
        try:
            cluster = client.status()
        except grpc.RpcError:
            cluster = None
        problem = None
        if cluster is not None and cluster.audit_trouble:
            problem = (f"AUDIT DEGRADED: {cluster.audit_trouble}; {cluster.audit_waiting} waiting "
                       f"({cluster.audit_spilled} in the spill file), {cluster.audit_dropped} dropped, "
                       f"policy {cluster.audit_policy}")
        active = cluster.active_version if cluster and cluster.HasField("active_version") else None
        decided = cluster is not None and cluster.decisions > 0  # no latencies before the first decision
        rows.append({"process": "coordinator", "address": target, "status": status, "active_version": active,
                     "loaded_versions": None, "p50_ms": round(cluster.p50_ms, 3) if decided else None,
                     "p99_ms": round(cluster.p99_ms, 3) if decided else None,
                     "requests": cluster.decisions if cluster else None, "problem": problem})
    for agent in (cluster.agents if cluster else []):
        with AgentClient(agent.address, cfg, timeout=timeout) as client:
            agent_status = client.health()
        info = agent.info if agent.HasField("info") else None
        rows.append({"process": f"agent {agent.agent}", "address": agent.address, "status": agent_status,
                     "active_version": active, "loaded_versions": list(info.loaded_versions) if info else [],
                     "p50_ms": round(info.p50_inference_us / 1000, 4) if info and info.windows_served else None,
                     "p99_ms": round(info.p99_inference_us / 1000, 4) if info and info.windows_served else None,
                     "requests": info.windows_served if info else None, "problem": agent.problem or None})
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
        healthy = len(rows) >= 4 and all(r["status"] == "SERVING" and not r["problem"] for r in rows)
        if healthy or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if args.json:
        print(json.dumps({"healthy": healthy, "processes": rows}, indent=2))
        return 0 if healthy else 1

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} ms" if value >= 0.1 else f"{value * 1000:.0f} us"

    def versions(r: dict) -> str:
        if r["loaded_versions"] is None:  # the coordinator
            return "-" if r["active_version"] is None else str(r["active_version"])
        return ",".join(("*" if v == r["active_version"] else "") + str(v) for v in r["loaded_versions"]) or "-"

    print(f"{'process':<16}{'address':<22}{'status':<26}{'version':<12}{'p50':>11}{'p99':>11}{'requests':>10}")
    for r in rows:
        print(f"{r['process']:<16}{r['address']:<22}{r['status']:<26}{versions(r):<12}{ms(r['p50_ms']):>11}"
              f"{ms(r['p99_ms']):>11}{'-' if r['requests'] is None else r['requests']:>10}")
    if cluster:
        print("version: the active model version; for agents the loaded ones, * marks the active one")
    for r in rows:
        if r["problem"]:
            print(f"{r['process']} at {r['address']}: {r['problem']}")
    return 0 if healthy else 1
