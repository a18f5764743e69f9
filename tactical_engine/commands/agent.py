"""`tactical agent`: run one agent server (for clusters spread over several machines)."""

from __future__ import annotations

import argparse

from tactical.config import AGENT_NAMES
from tactical_engine.commands import add_config_option, add_logging_options, require_range, setup_command_logging


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="run one agent server process",
                       description="Serve one agent's actor over gRPC with ONNX Runtime on one core. Loads the "
                                   "versions in its own store, imports the newest ones it lacks from the model "
                                   "store, and reports SERVING once a version is loaded. Stops cleanly on "
                                   "SIGTERM/Ctrl-C. `tactical up` runs three of these for you.")
    p.add_argument("--name", required=True, choices=AGENT_NAMES, help="which agent to serve")
    p.add_argument("--host", default=None, help="bind address (overrides serving.host)")
    p.add_argument("--port", type=int, default=None,
                   help="port, 0 for any free one (overrides serving.agents.NAME.port)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="Prometheus endpoint port, 0 for none (overrides serving.agents.NAME.metrics_port)")
    p.add_argument("--core", type=int, default=None,
                   help="CPU core to pin to, -1 for none (overrides serving.agents.NAME.core)")
    p.add_argument("--store", default=None,
                   help="this agent's own version store (default: paths.agent_store/NAME)")
    p.add_argument("--bootstrap-from", default=None, metavar="MODEL_STORE",
                   help="import missing versions from this model store at start (default: paths.model_store)")
    p.add_argument("--no-bootstrap", action="store_true", help="serve only what the agent's own store holds")
    add_config_option(p)
    add_logging_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from agents.serving.server import run_agent
    from tactical.config import load_config
    from tactical.process import follow_launcher
    from tactical.rpc import admin_token
    from tactical_engine.launcher import ensure_model_store

    require_range("--port", args.port, 0, 65535)
    require_range("--core", args.core, -1)
    require_range("--metrics-port", args.metrics_port, 0, 65535)
    follow_launcher()
    cfg = load_config(args.config)
    setup_command_logging(args, "agent", agent=args.name)
    endpoint = cfg.serving.agents[args.name]
    bootstrap = None if args.no_bootstrap else (args.bootstrap_from or cfg.paths.model_store)
    if bootstrap is not None and args.bootstrap_from is None:
        ensure_model_store(bootstrap, args.config)
    asyncio.run(run_agent(
        args.name, cfg, host=args.host or cfg.serving.host,
        port=endpoint.port if args.port is None else args.port,
        core=endpoint.core if args.core is None else args.core,
        store_root=args.store or str(Path(cfg.paths.agent_store) / args.name), bootstrap_root=bootstrap,
        admin_token=admin_token(cfg, create=True),
        metrics_port=endpoint.metrics_port if args.metrics_port is None else args.metrics_port))
    return 0
