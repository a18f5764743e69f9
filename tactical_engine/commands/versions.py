"""`tactical versions`: the model store's versions and what the running cluster holds and uses."""

from __future__ import annotations

import argparse

from tactical_engine.commands import add_config_option, add_target_option, cluster_admin_token


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("versions", help="list model versions: in the store, on each agent, and the active one",
                       description="List the model store's versions (source, creation time, training metrics, "
                                   "the held-out validation score `tactical train` gave it, the best one marked) "
                                   "and, unless --offline, the running cluster's active version, activation "
                                   "history and each agent's loaded and stored versions (needs the admin token). "
                                   "The best is the version with the highest held-out Sharpe ratio that beat flat, "
                                   "among those scored on the same bars as the newest scored one.")
    p.add_argument("--offline", action="store_true", help="only the model store; do not ask the cluster")
    p.add_argument("--store", metavar="DIR", help="the model store to list (overrides paths.model_store)")
    p.add_argument("--json", action="store_true",
                   help="print JSON: {model_store, best: version or null, store: [version.json + best: true/false, "
                        "...], cluster: {...} or null}")
    add_target_option(p)
    add_config_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from agents.serving.model_store import ModelStore, best_version
    from tactical.config import load_config
    from tactical_engine.client import TacticalClient, active_version_text
    from training.selection import describe

    cfg = load_config(args.config, {"paths": {"model_store": args.store}} if args.store else None)
    store = ModelStore(cfg.paths.model_store)
    best = best_version(store)
    listing = None
    if not args.offline:
        with TacticalClient(args.target or cfg.serving.local_coordinator, cfg,
                            admin_token=cluster_admin_token(cfg)) as client:
            listing = client.list_versions()
    if args.json:
        from tactical_engine.json_output import message_dict, print_json

        print_json({"model_store": str(store.root), "best": best,
                    "store": [{**store.info(v), "best": v == best} for v in store.versions()],
                    "cluster": message_dict(listing) if listing is not None else None})
        return 0
    print(f"model store {store.root} (best: {f'v{best}' if best is not None else 'none'}):")
    for version in store.versions():
        info = store.info(version)
        metrics = info.get("metrics") or {}
        shown = ", ".join(f"{k.replace('_', ' ')} {metrics[k]:.4g}" for k in ("update", "episode_reward",
                                                                             "explained_variance") if k in metrics)
        print(f"{'*' if version == best else ' '} v{version:<5} {info.get('created', '?'):<22} "
              f"{info.get('source', '')}" + (f"; {shown}" if shown else ""))
        if info.get("validation"):
            print(f"          held out: {describe(info['validation'])}" + ("  <- best" if version == best else ""))
    if not store.versions():
        print("  (empty)")
    if listing is None:
        return 0
    print(f"cluster: active version {active_version_text(listing)}; earlier: {list(listing.history) or 'none'}")
    for agent in listing.agents:
        if agent.error:
            print(f"  agent {agent.agent}: {agent.error}")
        else:
            print(f"  agent {agent.agent}: loaded {list(agent.loaded_versions)}, stored {list(agent.stored_versions)}")
    return 0

