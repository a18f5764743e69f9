"""`tactical replay`: what a model version would have done on the traffic the cluster served."""

from __future__ import annotations

import argparse

from tactical_engine.commands import CliError, add_config_option, flags_given, require_range, version_number


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="recompute a version's decisions over the audit log's traffic (what if)",
                       description="Read the windows the agents saw from the audit log (kept for "
                                   "serving.audit_window_days), check each against its stored sha256 (a row that "
                                   "does not match is reported and left out), recompute VERSION's decisions in "
                                   "process (ONNX, the coordinator's aggregation rule) and report how often they "
                                   "agree with what was served, and the what-if P&L: each decision on an "
                                   "instrument's bars scored on its next served bar, net of "
                                   "training.transaction_cost, against what was served. Replaying the version "
                                   "that served reproduces every decision that was not degraded.")
    p.add_argument("--version", type=version_number, required=True, help="the model-store version to replay")
    p.add_argument("--from", dest="from_", metavar="TIME", help="first decision time (ISO 8601, UTC if no zone)")
    p.add_argument("--to", metavar="TIME", help="decisions before this time")
    p.add_argument("--instrument", default=None, help="only this instrument's decisions")
    p.add_argument("--db", default=None, help="audit log file (overrides paths.audit_log)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_config_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from agents.serving.model_store import ModelStore
    from coordinator.traffic import read_traffic
    from market.csv_loader import parse_time_ms
    from tactical.actions import ACTION_LABELS
    from tactical.config import load_config
    from tactical_engine.engine import Engine
    from tactical_engine.json_output import print_json
    from tactical_engine.whatif import bar_pnl, replay_actions, scoreable

    require_range("--version", args.version, 0)
    cfg = load_config(args.config)
    path = Path(args.db or cfg.paths.audit_log)
    if not path.exists():
        raise CliError(f"no audit log at {path} (has the coordinator run with this config?)")
    store = ModelStore(cfg.paths.model_store)
    if args.version not in store.versions():
        raise CliError(f"version {args.version} is not in the model store {store.root} "
                       f"(it has {store.versions() or 'no versions'})")
    bounds = {}
    for flag, value in (("--from", args.from_), ("--to", args.to)):
        if value is not None:
            try:
                bounds[flag] = parse_time_ms(value)
            except ValueError as exc:
                raise CliError(f"{flag}: {exc}") from None
    if len(bounds) == 2 and bounds["--from"] >= bounds["--to"]:
        raise CliError(f"--from {args.from_} is not before --to {args.to}")
    traffic = read_traffic(path, start_ms=bounds.get("--from"), end_ms=bounds.get("--to"),
                           instrument=args.instrument, shape=(cfg.features.window, 7))
    if not len(traffic) and not traffic.tampered and not traffic.without_window:
        asked = flags_given(("--from", args.from_), ("--to", args.to), ("--instrument", args.instrument))
        raise CliError(f"no logged decisions in {path}" + (f" match {asked}" if asked else ""))
    actions, combined = replay_actions(Engine(store, args.version, cfg), traffic.windows)
    clean = ~traffic.degraded & (traffic.version >= 0)
    same = actions == traffic.action
    scored = scoreable(traffic)
    cost = cfg.training.transaction_cost
    replayed_pnl, served_pnl = bar_pnl(actions, scored, cost), bar_pnl(traffic.action, scored, cost)
    by_version = {int(v): int((traffic.version == v).sum()) for v in np.unique(traffic.version)}
    own = clean & (traffic.version == args.version)
    report = {
        "version": args.version, "audit_log": str(path), "decisions": len(traffic), "served_by_version": by_version,
        "tampered": traffic.tampered, "without_window": traffic.without_window,
        "agreement": float(same[clean].mean()) if clean.any() else None,
        "served_by_this_version": int(own.sum()),
        "reproduced": int((same & own).sum()),
        "max_probability_difference": float(np.abs(combined[own] - traffic.probabilities[own]).max())
        if own.any() else None,
        "scored_bars": len(scored.rows), "transaction_cost": cost,
        "served_log_pnl": float(served_pnl.sum()), "replayed_log_pnl": float(replayed_pnl.sum()),
        "replayed_actions": {ACTION_LABELS[a]: int((actions == a).sum()) for a in (1, 2, 3)},
    }
    if args.json:
        print_json(report)
        return 0
    print(f"replayed version {args.version} over {len(traffic):,} logged decision{'s' * (len(traffic) != 1)} "
          f"of {path} (served by version(s) "
          + ", ".join(f"{'none' if v < 0 else v}: {n:,}" for v, n in by_version.items()) + ")")
    for row in traffic.tampered[:10]:
        print(f"  TAMPERED, left out: {row}")
    if len(traffic.tampered) > 10:
        print(f"  ... and {len(traffic.tampered) - 10} more tampered rows")
    if traffic.without_window:
        print(f"  {traffic.without_window:,} decisions without a kept window (older than serving.audit_window_days, "
              f"or not kept) left out")
    if report["agreement"] is not None:
        print(f"agreement with what was served (decisions that were not degraded): {report['agreement']:.1%}")
    if own.any():
        print(f"decisions version {args.version} served itself: {report['reproduced']:,} of {int(own.sum()):,} "
              f"reproduced exactly (largest probability difference {report['max_probability_difference']:.1e})")
    print(f"what if, over {len(scored.rows):,} scored bars (each decision on its instrument's next served bar, cost "
          f"{cost:g} per unit): served {served_pnl.sum():+.4f} log P&L, version {args.version} "
          f"{replayed_pnl.sum():+.4f}")
    return 0
