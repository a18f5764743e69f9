"""`tactical coordinator`: run the coordinator (for clusters spread over several machines)."""

from __future__ import annotations

import argparse

from tactical.config import AGENT_NAMES
from tactical_engine.commands import (
    CliError,
    add_config_option,
    add_logging_options,
    require_range,
    setup_command_logging,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("coordinator", help="run the coordinator process",
                       description="Serve decisions: validate requests, fan each window out to the three agents "
                                   "over long-lived streams with a deadline, aggregate their votes, answer, and "
                                   "append every decision to the audit log. Holds the active model version. "
                                   "Stops cleanly on SIGTERM/Ctrl-C. `tactical up` runs it for you.")
    p.add_argument("--host", default=None, help="bind address (overrides serving.host)")
    p.add_argument("--port", type=int, default=None,
                   help="port, 0 for any free one (overrides serving.coordinator_port)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="Prometheus endpoint port, 0 for none (overrides serving.metrics_port)")
    p.add_argument("--agents", default=None, metavar="fvg=HOST:PORT,momentum=HOST:PORT,entry=HOST:PORT",
                   help="where the agents listen; name an agent several times for replicas, which share its "
                        "decisions round-robin (default: serving.host and serving.agents.*.port)")
    p.add_argument("--state", default=None, help="directory of the active-version state (overrides "
                                                 "paths.coordinator_state)")
    p.add_argument("--audit", default=None, help="audit log SQLite file (overrides paths.audit_log)")
    p.add_argument("--no-audit", action="store_true",
                   help="do not keep an audit log (also when paths.audit_log is empty)")
    p.add_argument("--reuse-port", action="store_true",
                   help="share the port with other coordinators started so (SO_REUSEPORT; sets serving.reuse_port): "
                        "the kernel spreads connections over them; give them the same --state, whose active "
                        "version they all follow. Each also listens alone at unix-abstract:tactical-PORT-PID "
                        "(local, plaintext) for health and status. Default: a port in use is an error")
    add_config_option(p)
    add_logging_options(p)
    p.set_defaults(handler=run)


def parse_agents(text: str) -> dict[str, list[str]]:
    """NAME=HOST:PORT items; a name given several times is an agent with replicas."""
    agents: dict[str, list[str]] = {}
    for item in text.split(","):
        name, sep, address = item.strip().partition("=")
        if not sep or not address or ":" not in address:
            raise CliError(f"--agents: expected NAME=HOST:PORT, got {item.strip()!r}")
        agents.setdefault(name, []).append(address)
    if set(agents) != set(AGENT_NAMES):
        raise CliError(f"--agents: give exactly {', '.join(AGENT_NAMES)}; got {', '.join(sorted(agents))}")
    return agents


def run(args: argparse.Namespace) -> int:
    import asyncio

    from coordinator.server import run_coordinator
    from tactical.config import load_config
    from tactical.process import follow_launcher
    from tactical.rpc import admin_token

    require_range("--port", args.port, 0, 65535)
    require_range("--metrics-port", args.metrics_port, 0, 65535)
    follow_launcher()
    cfg = load_config(args.config, {"serving": {"reuse_port": True}} if args.reuse_port else None)
    setup_command_logging(args, "coordinator")
    if args.agents:
        agents = parse_agents(args.agents)
    else:
        agents = {name: [f"{cfg.serving.host}:{cfg.serving.agents[name].port}"] for name in AGENT_NAMES}
    asyncio.run(run_coordinator(
        cfg, host=args.host or cfg.serving.host,
        port=cfg.serving.coordinator_port if args.port is None else args.port, agents=agents,
        state_dir=args.state or cfg.paths.coordinator_state,
        admin_token=admin_token(cfg, create=True),
        audit_path=None if args.no_audit else (args.audit or cfg.paths.audit_log or None),
        metrics_port=cfg.serving.metrics_port if args.metrics_port is None else args.metrics_port))
    return 0
