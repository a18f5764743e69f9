"""`tactical audit`: the latest decisions in the audit log and summary counts."""

from __future__ import annotations

import argparse

from tactical_engine.commands import CliError, add_config_option, flags_given, require_range


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="show the latest decisions of the audit log and summary counts",
                       description="Read the coordinator's audit log (SQLite, WAL; safe while the cluster runs) "
                                   "and print the latest decisions with their votes, then counts by action and "
                                   "by model version, and the degraded share.")
    p.add_argument("--db", default=None, help="audit log file (overrides paths.audit_log)")
    p.add_argument("--last", type=int, default=10, help="how many recent decisions to show (default 10)")
    p.add_argument("--request-id", default=None, metavar="ID", help="only decisions of requests with this id "
                   "(none: an error, exit 2)")
    p.add_argument("--trace", default=None, metavar="TRACE_ID",
                   help="only decisions of this W3C trace (the 32 hex digits of the traceparent the client sent)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_config_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import datetime as dt
    import re
    from pathlib import Path

    from coordinator.audit import latest, summary
    from tactical.config import load_config
    from tactical_engine.json_output import print_json

    require_range("--last", args.last, 1)
    if args.trace is not None and not re.fullmatch(r"[0-9a-fA-F]{32}", args.trace):
        raise CliError(f"--trace: a W3C trace id is 32 hex digits, got {args.trace!r}")
    cfg = load_config(args.config)
    path = Path(args.db or cfg.paths.audit_log)
    if not path.exists():
        raise CliError(f"no audit log at {path} (has the coordinator run with this config?)")
    rows = latest(path, args.last, request_id=args.request_id, trace_id=args.trace)
    if (args.request_id or args.trace) and not rows:
        raise CliError(f"no logged decision in {path} matches "
                       f"{flags_given(('--request-id', args.request_id), ('--trace', args.trace))}")
    counts = summary(path)
    if args.json:
        by_version = {"none" if k is None else str(k): n for k, n in counts["by_version"].items()}
        print_json({"summary": {**counts, "by_version": by_version}, "latest": rows})
        return 0
    print(f"{'time (UTC)':<24}{'request':<18}{'action':<7}{'conf':>6}{'version':>8}{'ms':>7}  votes")
    for r in rows:
        stamp = dt.datetime.fromtimestamp(r["time_ms"] / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:23]
        votes = " ".join(f"{v['agent']}={v['action'] if v['ok'] else 'none'}" for v in r["votes"])
        flag = ("  DEGRADED" if r["degraded"] else "") + ("  BACKTEST" if r["backtest"] else "")
        flag += f"  trace {r['traceparent'][3:35]}" if r["traceparent"] else ""
        version = "-" if r["model_version"] is None else r["model_version"]
        confidence = "-" if r["confidence"] is None else f"{r['confidence']:.3f}"
        print(f"{stamp:<24}{r['request_id'][:17]:<18}{r['action']:<7}{confidence:>6}{version:>8}"
              f"{r['latency_ms'] or 0:>7.2f}  {votes}{flag}")
    total = counts["decisions"]
    share = counts["degraded"] / total if total else 0.0
    print(f"the whole log: {total} decisions; degraded {counts['degraded']} ({share:.1%}); "
          f"from backtests {counts['backtest']}; by action "
          + ", ".join(f"{k} {v}" for k, v in counts["by_action"].items())
          + "; by model version " + ", ".join(f"{'none' if k is None else k}: {v}"
                                              for k, v in counts["by_version"].items()))
    return 0
