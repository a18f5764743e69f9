"""`tactical up`: start the local cluster, supervise it, stop it cleanly."""

from __future__ import annotations

import argparse

from tactical_engine.commands import (
    add_config_option,
    add_logging_options,
    logging_arguments,
    require_range,
    require_seconds,
    setup_command_logging,
)

MAX_COORDINATORS = 64


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start the three agents and the coordinator on this machine",
                       description="Start the three agent servers (each pinned to a core, round-robin when there "
                                   "are fewer cores than agents) and the coordinator (or several: --coordinators), "
                                   "wait until all report SERVING, print where they listen, and restart any that "
                                   "dies. Ctrl-C or SIGTERM stops the coordinators first (NOT_SERVING, in-flight "
                                   "calls drained, audit log flushed), then the agents. With an empty model store, "
                                   "version 0 (a freshly initialized, seeded model) is written and served.")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="stop by itself after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--no-restart", action="store_true", help="do not restart processes that die")
    p.add_argument("--coordinators", type=int, default=1, metavar="N",
                   help=f"coordinator processes, 1 to {MAX_COORDINATORS} (default 1). Several share the coordinator "
                        "port (SO_REUSEPORT: the kernel spreads client connections over them; a stream stays on "
                        "one), the agents, the active version (a rollout or rollback through any switches all) and "
                        "the audit log; each gets its own metrics port (serving.metrics_port, then the next ones "
                        "the config leaves unused) and is reached alone, for health and status, at the local "
                        "address printed. More than one only helps with cores to spare (README, Performance)")
    add_config_option(p)
    add_logging_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import signal
    import time

    from tactical.config import load_config
    from tactical_engine.launcher import LocalCluster

    require_seconds("--duration", args.duration)
    require_range("--coordinators", args.coordinators, 1, MAX_COORDINATORS)
    cfg = load_config(args.config)
    setup_command_logging(args, "up")
    cluster = LocalCluster(cfg, args.config, restart=not args.no_restart, child_options=logging_arguments(args),
                           coordinators=args.coordinators)

    class StopRequested(Exception):
        """Raised by the first Ctrl-C/SIGTERM, so it also interrupts a start or restart that is waiting."""

    stopping = []

    def request_stop(signum, frame):
        if not stopping:  # later signals must not interrupt the clean stop
            stopping.append(signum)
            raise StopRequested

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    started = time.monotonic()
    shared = args.coordinators > 1
    try:
        print("starting the cluster...", flush=True)
        cluster.start(progress=lambda text: print(f"  {text}", flush=True))
        _print_processes(cluster)
        print(f"all SERVING after {time.monotonic() - started:.1f} s; decisions at {cluster.coordinator.address}"
              + (f" ({len(cluster.coordinators)} coordinators share it)" if shared else "") + " (Ctrl-C to stop)",
              flush=True)
        while args.duration is None or time.monotonic() - started < args.duration:
            for event in cluster.supervise_once():
                print(event, flush=True)
            time.sleep(0.2)
    except StopRequested:
        pass
    finally:
        stopping.append(None)  # from here on a signal must not interrupt the clean stop
        print(f"stopping: {'coordinators' if shared else 'coordinator'} first (drains in-flight calls), then the "
              f"agents", flush=True)
        cluster.stop()
    print("stopped", flush=True)
    return 0


def _print_processes(cluster) -> None:
    """One row per process: where it listens, pid, core, metrics, and, for coordinators sharing the port,
    where each is reached alone."""
    from tactical.config import AGENT_NAMES

    shared = len(cluster.coordinators) > 1
    print(f"{'process':<16}{'address':<22}{'pid':>8}  {'core':<6}{'metrics':<38}" + ("alone at" if shared else ""))
    rows = [(f"agent {name}", child, cluster.cores[name]) for name, child in zip(AGENT_NAMES, cluster.agents,
                                                                                 strict=True)]
    for name, child, core in rows + [(child.name, child, "any") for child in cluster.coordinators]:
        alone = child.own_address if child.shares_port else "-"
        print((f"{name:<16}{child.address:<22}{child.proc.pid:>8}  {core:<6}{_metrics(child):<38}"
               + (alone if shared else "")).rstrip())


def _metrics(child) -> str:
    return f"http://{child.metrics}/metrics" if child.metrics else "-"
