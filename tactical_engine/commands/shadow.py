"""`tactical shadow`: score a candidate version beside the active one on live traffic, without serving it."""

from __future__ import annotations

import argparse

from tactical_engine.commands import (
    CliError,
    add_config_option,
    add_targets_option,
    cluster_admin_token,
    coordinator_targets,
    require_range,
    version_number,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shadow", help="run a version as a shadow beside the active one and score both live",
                       description="`tactical shadow --version V` stages V on every agent and makes it the shadow: "
                                   "every window also goes to V in the same message to each agent, clients get "
                                   "the active version's decision only, V's decision is recorded beside it in the "
                                   "audit log, and when an instrument's next bar arrives both are scored on what "
                                   "the market did (net of training.transaction_cost). `tactical shadow status` "
                                   "shows both records and the paired interval; `tactical promote` activates the "
                                   "shadow when the promotion gate passes on that evidence; `--stop` ends it.")
    p.add_argument("action", nargs="?", choices=("status",), help="status: show the shadow's record")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--version", type=version_number, help="the model-store version to shadow")
    what.add_argument("--stop", action="store_true", help="stop shadowing")
    p.add_argument("--json", action="store_true", help="status as JSON")
    add_targets_option(p)
    add_config_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from agents.serving.model_store import ModelStore
    from tactical.config import load_config
    from tactical_engine.client import TacticalClient, coordinator_clients
    from tactical_engine.rollout import stage
    from tactical_engine.shadowing import shadow_record

    require_range("--version", args.version, 0)
    if (args.action == "status") == (args.version is not None or args.stop):
        raise CliError("give one of: status, --version V, --stop")
    cfg = load_config(args.config)
    targets = coordinator_targets(args.target, cfg)
    if args.action == "status":
        with TacticalClient(targets[0], cfg) as client:
            return show(client.shadow(), args.json)
    token = cluster_admin_token(cfg)
    store = ModelStore(cfg.paths.model_store)
    with coordinator_clients(targets, cfg, token) as clients:
        running = clients[0].shadow()
        if args.stop:
            if not running.HasField("shadow_version"):
                print(f"no shadow was running on {', '.join(targets)}")
                return 0
            show(running, False)
            for client in clients:
                client.set_shadow(None)
            print(f"stopped shadow version {running.shadow_version} on {', '.join(targets)} (its record above is "
                  f"not kept)")
            return 0
        staged = stage(clients, store, args.version, cfg, token)
        for client in clients:
            report = client.set_shadow(args.version)
    replaced = shadow_record(running)
    if replaced is not None:
        print(f"replaced shadow version {replaced.shadow_version} and its record ({replaced.decisions:,} decisions, "
              f"{replaced.bars:,} bars scored beside version {replaced.active_version}); a new record starts")
    print(f"version {args.version} shadows active version {report.active_version} on {', '.join(targets)} "
          f"(agents: {', '.join(staged)}); see `tactical shadow status`")
    return 0


def show(report, as_json: bool) -> int:
    """Print the shadow's record (or that there is none)."""
    import dataclasses
    import datetime as dt

    from tactical_engine.json_output import print_json
    from tactical_engine.shadowing import shadow_record

    record = shadow_record(report)
    if as_json:
        print_json(None if record is None else dataclasses.asdict(record))
        return 0
    if record is None:
        print("no shadow version (start one: tactical shadow --version V)")
        return 0
    since = dt.datetime.fromtimestamp(record.since_ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    print(f"shadow version {record.shadow_version} beside active version {record.active_version} since {since} UTC: "
          f"{record.decisions:,} decisions, same action "
          f"{'-' if record.agreement is None else format(record.agreement, '.1%')}; {record.bars:,} bars scored (each "
          f"decision on its instrument's next bar, cost {record.transaction_cost:g} per unit)")
    print(f"{'':<10}{'log P&L':>10}{'Sharpe/bar':>12}{'hit rate':>10}")
    for name, r in (("active", record.active), ("shadow", record.shadow)):
        hit = "-" if r.hit_rate is None else f"{r.hit_rate:.1%}"
        print(f"{name:<10}{r.log_pnl:>+10.4f}{r.sharpe_per_bar:>12.3f}{hit:>10}")
    d = record.difference
    if d is None:
        print("no paired interval yet (fewer than 2 scored bars)")
    else:
        print(f"shadow minus active, per bar: {d.estimate:+.2e}, 95% interval [{d.low:+.2e}, {d.high:+.2e}] "
              f"(paired block bootstrap): " + ("the shadow is better" if d.low > 0 else "the shadow is worse"
                                               if d.high < 0 else "no significant difference"))
    return 0
