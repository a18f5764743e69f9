"""`tactical rollback`: re-activate the version that was active before the current one."""

from __future__ import annotations

import argparse

from tactical_engine.commands import add_config_option, add_targets_option, cluster_admin_token, coordinator_targets


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rollback", help="re-activate the previous model version",
                       description="Ask the coordinator to switch every decision back to the version active "
                                   "before the current one (each rollback goes one step further back). Refused "
                                   "unless every agent still holds that version. With several coordinators "
                                   "(repeated --target, or serving.coordinators) all go back together, and only "
                                   "if they would all go back to the same version. Exits 1 naming the coordinator "
                                   "and the reason when it cannot. Needs the admin token.")
    add_targets_option(p)
    add_config_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from tactical.config import load_config
    from tactical_engine.client import coordinator_clients
    from tactical_engine.rollout import RolloutError, describe, rollback

    cfg = load_config(args.config)
    token = cluster_admin_token(cfg)
    with coordinator_clients(coordinator_targets(args.target, cfg), cfg, token) as clients:
        try:
            result = rollback(clients)
        except RolloutError as exc:
            print(f"tactical rollback: {exc}", file=sys.stderr)
            return 1
    print(f"version {result.version} active again {describe(result)}")
    return 0
