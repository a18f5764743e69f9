"""`tactical status`: what the cluster is doing, from the coordinator's point of view."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tactical_engine.commands import add_config_option, add_target_option, require_seconds

if TYPE_CHECKING:
    from tactical.v1 import cluster_pb2


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show the cluster: active version, decisions, committee health, input drift, "
                                      "each agent's state",
                       description="Show the coordinator's view of the cluster: whether it serves, the active "
                                   "model version, decisions answered and degraded, latency percentiles, the audit "
                                   "log; committee health per version over the last serving.health_window "
                                   "decisions (how often the agents disagree, the entropy of the aggregated vote, "
                                   "each agent's action mix, Holds forced by low confidence); input drift (PSI of "
                                   "each feature against the active version's training bars: < 0.1 stable, "
                                   "0.1-0.25 moderate, > 0.25 shifted); and per agent its address, connection, "
                                   "loaded and stored versions, core, pid, batching and inference latency.")
    add_target_option(p)
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per call (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_config_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import datetime as dt
    import json

    from tactical.config import load_config
    from tactical_engine.client import TacticalClient, active_version_text
    from tactical_engine.json_output import print_json

    require_seconds("--timeout", args.timeout)
    cfg = load_config(args.config)
    target = args.target or cfg.serving.local_coordinator
    with TacticalClient(target, cfg, timeout=args.timeout) as client:
        s = client.status()
    health = json.loads(s.health_json) if s.health_json else None
    if args.json:
        print_json(status_dict(s, health))
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
    if s.guard:
        when = dt.datetime.fromtimestamp(s.guard_time_ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(f"  GUARD at {when} UTC: {s.guard}")
    for line in health_lines(health):
        print(line)
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


def status_dict(s: cluster_pb2.ClusterStatus, health: dict | None) -> dict:
    """`tactical status --json`: the ClusterStatus, with committee health, drift and each version's feature
    settings as objects (the wire carries them as JSON text)."""
    import json

    from tactical_engine.json_output import message_dict

    out = message_dict(s)
    out.pop("health_json")
    out["health"] = health
    for agent in out["agents"]:
        if agent["info"] is not None:
            agent["info"].pop("feature_references")  # each version's training histograms: not for people
            agent["info"]["feature_settings"] = {v: json.loads(text)
                                                 for v, text in agent["info"]["feature_settings"].items()}
    return out


def health_lines(health: dict | None) -> list[str]:
    """Committee health per version and the drift of each feature, for people."""
    from market.drift import MIN_ROWS

    if not health:
        return []
    lines = []
    for version, h in sorted(health["versions"].items(), key=lambda item: int(item[0])):
        mix = "; ".join(f"{agent} " + " ".join(f"{action} {share:.0%}" for action, share in shares.items())
                        for agent, shares in h["action_mix"].items())
        lines.append(f"  committee, version {version}, last {h['decisions']} decisions: agents disagree "
                     f"{h['disagreement_ratio']:.1%}, vote entropy {h['entropy_nats']:.2f} nats, Holds forced by "
                     f"low confidence {h['low_confidence_hold_ratio']:.1%}; votes: {mix}")
    drift = health.get("drift")
    if drift is None:
        lines.append(f"  input drift: not judged (no training reference for the active version, or fewer than "
                     f"{MIN_ROWS} decisions served yet)")
    else:
        worst = max(drift.values(), key=lambda d: d["psi"])["band"]
        lines.append(f"  input drift (PSI against the active version's training bars; < 0.1 stable, 0.1-0.25 "
                     f"moderate, > 0.25 shifted): {worst.upper() if worst != 'stable' else 'stable'}")
        lines += [f"    {feature:<24}{d['psi']:>7.3f}  {d['band']}" for feature, d in drift.items()]
    return lines
