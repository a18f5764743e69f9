"""`tactical rollback`: re-activate the version that was active before the current one."""

from __future__ import annotations

import argparse

from tactical_engine.commands import add_config_option, add_target_option, cluster_admin_token


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rollback", help="re-activate the previous model version",
                       description="Ask the coordinator to switch every decision back to the version active "
                                   "before the current one (each rollback goes one step further back). Refused "
                                   "unless every agent still holds that version. Needs the admin token.")
    add_target_option(p)
    add_config_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tactical.config import load_config
    from tactical_engine.client import TacticalClient

    cfg = load_config(args.config)
    with TacticalClient(args.target or cfg.serving.local_coordinator, cfg,
                        admin_token=cluster_admin_token(cfg)) as client:
        result = client.rollback()
    print(f"version {result.active_version} active again (was {result.previous_version})")
    return 0
