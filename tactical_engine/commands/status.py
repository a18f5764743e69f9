"""`tactical status`: what the cluster is doing, from the coordinator's point of view."""

from __future__ import annotations

import argparse

from tactical_engine.commands import add_config_option, add_target_option, require_seconds


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show the cluster: active version, decisions, each agent's state",
                       description="Show the coordinator's view of the cluster: whether it serves, the active "
                                   "model version, decisions answered and degraded, latency percentiles, and per "
                                   "agent its address, connection, loaded and stored versions, core, pid, "
                                   "batching and inference latency.")
    add_target_option(p)
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per call (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_config_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from tactical.config import load_config
    from tactical_engine.client import TacticalClient, active_version_text

    require_seconds("--timeout", args.timeout)
    cfg = load_config(args.config)
    target = args.target or cfg.serving.local_coordinator
    with TacticalClient(target, cfg, timeout=args.timeout) as client:
        s = client.status()
    if args.json:
        print(json_format.MessageToJson(s, always_print_fields_with_no_presence=True))
        return 0
    share = s.degraded_decisions / s.decisions if s.decisions else 0.0
    print(f"coordinator {target} (pid {s.pid}, up {s.uptime_s:.0f} s): {'SERVING' if s.serving else 'NOT SERVING'}")
    print(f"  active model version {active_version_text(s)}; {s.decisions} decisions, {s.degraded_decisions} degraded "
          f"({share:.1%}); latency p50 {s.p50_ms:.2f} ms, p99 {s.p99_ms:.2f} ms")
    if s.audit_policy:
        state = f"AUDIT DEGRADED: {s.audit_trouble}" if s.audit_trouble else "audit log ok"
        print(f"  {state}; {s.audit_logged} logged, {s.audit_waiting} waiting ({s.audit_spilled} in the spill file, "
              f"{s.audit_backlog_bytes / 2**20:.1f} MiB in memory), {s.audit_dropped} dropped; "
              f"policy {s.audit_policy}")
    else:
        print("  no audit log")
    for a in s.agents:
        print(f"agent {a.agent} at {a.address}: {'connected' if a.connected else 'DISCONNECTED: ' + a.error}"
              + (f"; CANNOT VOTE: {a.problem}" if a.problem and a.connected else ""))
        if a.HasField("info"):
            i = a.info
            mean_batch = i.windows_served / i.batches if i.batches else 0.0
            print(f"  loaded {list(i.loaded_versions)}, stored {list(i.stored_versions)}; core "
                  f"{i.core if i.core >= 0 else 'any'}, pid {i.pid}, up {i.uptime_s:.0f} s")
            for version, why in sorted(i.broken_versions.items()):
                print(f"  BROKEN version {version}: {why}")
            print(f"  {i.windows_served} windows in {i.batches} forward passes (mean batch {mean_batch:.1f}); "
                  f"inference p50 {i.p50_inference_us:.0f} us, p99 {i.p99_inference_us:.0f} us")
    return 0
