"""`tactical rollout`: stage a model version on every agent of a running cluster, then activate it."""

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
    p = sub.add_parser("rollout", help="stage a model version on every agent, then activate it",
                       description="Upload a version's ONNX artifacts to the three agents (each verifies checksum, "
                                   "model, signature and a probe inference before keeping it), then tell the "
                                   "coordinator to switch every decision to it at once. With several coordinators "
                                   "(repeated --target, or serving.coordinators), every agent of every coordinator "
                                   "is staged once, the version is prepared on every coordinator, then all switch "
                                   "together, and the window between the first and the last switch is printed; if "
                                   "one cannot switch, none does. If any agent refuses, nothing is activated and "
                                   "the command exits 1 naming the agent and the reason. "
                                   "Needs the admin token ($TACTICAL_ADMIN_TOKEN, serving.admin_token or "
                                   "paths.admin_token_file).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--version", type=version_number, help="a version of the model store (paths.model_store)")
    src.add_argument("--checkpoint", metavar="FILE",
                     help="a training checkpoint (a file, or a version directory holding checkpoint.pt): "
                          "published as a new model-store version, then rolled out")
    src.add_argument("--latest", action="store_true", help="the newest version of the model store")
    p.add_argument("--gate", choices=("off", "better", "significant"), default=None,
                   help="the promotion gate: compare the version with the active one on recent served bars before "
                        "anything is staged; better: it must earn more; significant: the paired 95%% interval of "
                        "its per-bar P&L difference must be above zero (default: serving.promotion_gate)")
    p.add_argument("--eval-data", metavar="FILE", default=None,
                   help="compare on the bars of this CSV or Parquet file instead of the audit log's recent traffic "
                        "(the audit log is read locally: paths.audit_log)")
    p.add_argument("--force", action="store_true", help="skip the promotion gate")
    add_targets_option(p)
    add_config_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from agents.serving.model_store import ModelStore
    from tactical.config import load_config
    from tactical_engine.client import coordinator_clients
    from tactical_engine.rollout import RolloutError, describe, rollout

    require_range("--version", args.version, 0)
    cfg = load_config(args.config)
    store = ModelStore(cfg.paths.model_store)
    token = cluster_admin_token(cfg)
    if args.checkpoint:
        from training.versions import publish_checkpoint

        version = publish_checkpoint(store, args.checkpoint)
        print(f"published {args.checkpoint} as version {version} in {store.root}")
    elif args.latest:
        version = store.latest()
        if version is None:
            raise CliError(f"the model store {store.root} holds no versions")
    else:
        version = args.version
    if version not in store.versions():
        raise CliError(f"version {version} is not in the model store {store.root} "
                       f"(it has {store.versions() or 'no versions'})")
    with coordinator_clients(coordinator_targets(args.target, cfg), cfg, token) as clients:
        try:
            result = rollout(clients, store, version, cfg, token, gate="off" if args.force else args.gate,
                             eval_data=args.eval_data)
        except RolloutError as exc:  # the gate or an agent refused, or the activation failed: exit 1, nothing changed
            print(f"tactical rollout: {exc}", file=sys.stderr)
            return 1
    staged = ", ".join(f"{name} ({'already held' if already else 'staged'})" for name, already in result.staged.items())
    print("promotion gate skipped (--force)" if args.force else result.verdict.describe())
    print(f"version {result.version} active {describe(result.switch)} after {result.seconds:.2f} s; agents: {staged}")
    return 0
