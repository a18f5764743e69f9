"""`tactical decide`: ask the running cluster for one decision and show every agent's vote."""

from __future__ import annotations

import argparse

from tactical_engine.commands import (
    CliError,
    add_config_option,
    add_target_option,
    refuse_unused_seed,
    require_range,
    require_seconds,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("decide", help="ask the cluster for one decision (from a CSV, a saved window or synthetic bars)",
                       description="Send one Decide request to the coordinator and print the decision with each "
                                   "agent's vote, the model version and the latency. Input: the last bars of a "
                                   "CSV (--csv), a saved (60, 7) float32 window (--window FILE.npy), or bars of "
                                   "the config's synthetic market (the default).")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--csv", metavar="FILE",
                     help="send the last bars of this CSV or Parquet file (time, open, high, low, close, volume)")
    src.add_argument("--window", metavar="FILE.npy", help="send this (60, 7) feature window")
    src.add_argument("--synthetic", action="store_true",
                     help="send bars of the market the config's synthetic: section describes (the default)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the synthetic bars (default: the config's synthetic.seed)")
    p.add_argument("--request-id", default="", help="id echoed in the decision and the audit log")
    p.add_argument("--instrument", default="", help="what the decision is for, e.g. EURUSD (default: 'default')")
    p.add_argument("--traceparent", default=None, metavar="00-TRACE_ID-SPAN_ID-FLAGS",
                   help="W3C trace context sent as `traceparent` metadata and kept in the decision's audit row")
    add_target_option(p)
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    add_config_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from market.csv_loader import load_bars
    from market.synthetic import configured
    from tactical.actions import action_label
    from tactical.config import load_config
    from tactical.wire import window_values
    from tactical_engine.client import TacticalClient, version_text

    require_range("--seed", args.seed, 0)
    refuse_unused_seed(args, "csv", "window")
    require_seconds("--timeout", args.timeout)
    cfg = load_config(args.config, {"synthetic": {"seed": args.seed}} if args.seed is not None else None)
    need = cfg.features.min_bars
    window = bars = None
    if args.window:
        try:
            with open(args.window, "rb") as f:
                if f.read(6) != b"\x93NUMPY":
                    raise CliError(f"{args.window} is not a .npy array (write the {cfg.features.window} x 7 float32 "
                                   f"window with numpy.save)")
            window = window_values(np.load(args.window))
        except (OSError, ValueError, EOFError) as exc:  # WireError is a ValueError too; EOFError: empty file
            raise CliError(f"cannot read window file {args.window}: {exc or 'empty file'}") from None
    elif args.csv:
        series = load_bars(args.csv)
        if len(series) < need:
            raise CliError(f"{args.csv} has {len(series)} bars; a decision needs at least {need}")
        bars = series[len(series) - need:]
    else:
        bars = configured(cfg.replace(synthetic={"bars": need}).synthetic).bars
    target = args.target or cfg.serving.local_coordinator
    with TacticalClient(target, cfg, timeout=args.timeout) as client:
        start = time.perf_counter()
        d = client.decide(window=window, bars=bars, request_id=args.request_id, instrument=args.instrument,
                          traceparent=args.traceparent)
        round_trip_ms = (time.perf_counter() - start) * 1e3
    if args.json:
        from tactical_engine.json_output import message_dict, print_json

        print_json({**message_dict(d), "round_trip_ms": round(round_trip_ms, 3)})
        return 0
    p = d.probabilities
    print(f"decision {action_label(d.action)}  confidence {d.confidence:.3f}  "
          f"(short {p[0]:.3f}, hold {p[1]:.3f}, long {p[2]:.3f})")
    version = version_text(d.model_version if d.HasField("model_version") else None)
    print(f"instrument {d.instrument}; model version {version}; coordinator {d.latency_ms:.2f} ms, round trip "
          f"{round_trip_ms:.2f} ms{'; DEGRADED' if d.degraded else ''}")
    if d.reason:
        print(f"reason: {d.reason}")
    print(f"{'agent':<10}{'vote':<7}{'short':>7}{'hold':>7}{'long':>7}{'value':>8}{'latency':>10}")
    for v in d.votes:
        if v.ok:
            print(f"{v.agent:<10}{action_label(v.action):<7}{v.probabilities[0]:>7.3f}{v.probabilities[1]:>7.3f}"
                  f"{v.probabilities[2]:>7.3f}{v.value:>8.3f}{v.latency_ms:>8.2f} ms")
        else:
            print(f"{v.agent:<10}{'-':<7}  no vote: {v.error}")
    return 0
