"""`tactical promote`: activate the shadow version when the promotion gate passes on its live record."""

from __future__ import annotations

import argparse

from tactical_engine.commands import (
    CliError,
    add_config_option,
    add_targets_option,
    cluster_admin_token,
    coordinator_targets,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("promote", help="activate the shadow version if it beat the active one live",
                       description="Read the shadow's live record (`tactical shadow status`) and apply the "
                                   "promotion gate to it: better (it earned more on the bars both were scored on) "
                                   "or significant (the paired 95% interval of the per-bar difference is above "
                                   "zero). When it passes, the shadow is activated on every coordinator together "
                                   "and stops being a shadow; else nothing changes and the command exits 1 with "
                                   "the numbers.")
    p.add_argument("--gate", choices=("better", "significant"), default=None,
                   help="the policy (default: serving.promotion_gate, or better when that is off)")
    p.add_argument("--force", action="store_true", help="activate the shadow whatever its record")
    add_targets_option(p)
    add_config_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from agents.serving.model_store import ModelStore
    from tactical.config import load_config
    from tactical_engine.client import coordinator_clients
    from tactical_engine.commands.shadow import show
    from tactical_engine.rollout import RolloutError, describe, rollout
    from tactical_engine.shadowing import shadow_record

    cfg = load_config(args.config)
    token = cluster_admin_token(cfg)
    policy = "off" if args.force else args.gate or (cfg.serving.promotion_gate if cfg.serving.promotion_gate != "off"
                                                    else "better")
    with coordinator_clients(coordinator_targets(args.target, cfg), cfg, token) as clients:
        report = clients[0].shadow()
        record = shadow_record(report)
        if record is None:
            raise CliError("no shadow version to promote (start one: tactical shadow --version V)")
        show(report, False)
        if not record.passes(policy):
            why = "has no paired record yet (fewer than 2 scored bars)" if record.difference is None else (
                f"does not pass the gate ({policy})")
            print(f"tactical promote: the shadow {why}; nothing changed", file=sys.stderr)
            return 1
        try:
            result = rollout(clients, ModelStore(cfg.paths.model_store), record.shadow_version, cfg, token,
                             gate="off")
        except RolloutError as exc:
            print(f"tactical promote: {exc}", file=sys.stderr)
            return 1
    how = "the gate skipped (--force)" if args.force else f"gate {policy} on its live record"
    print(f"promoted: version {result.version} active {describe(result.switch)} ({how})")
    return 0
