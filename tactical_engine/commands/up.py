"""`tactical up`: start the local cluster, supervise it, stop it cleanly."""

from __future__ import annotations

import argparse

from tactical_engine.commands import (
    add_config_option,
    add_logging_options,
    logging_arguments,
    require_seconds,
    setup_command_logging,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start the three agents and the coordinator on this machine",
                       description="Start the three agent servers (each pinned to a core, round-robin when there "
                                   "are fewer cores than agents) and the coordinator, wait until all report "
                                   "SERVING, print where they listen, and restart any that dies. Ctrl-C or "
                                   "SIGTERM stops the coordinator first (NOT_SERVING, in-flight calls drained, "
                                   "audit log flushed), then the agents. With an empty model store, version 0 "
                                   "(a freshly initialized, seeded model) is written and served.")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="stop by itself after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--no-restart", action="store_true", help="do not restart processes that die")
    add_config_option(p)
    add_logging_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import signal
    import time

    from tactical.config import AGENT_NAMES, load_config
    from tactical_engine.launcher import LocalCluster

    require_seconds("--duration", args.duration)
    cfg = load_config(args.config)
    setup_command_logging(args, "up")
    cluster = LocalCluster(cfg, args.config, restart=not args.no_restart, child_options=logging_arguments(args))

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
    try:
        print("starting the cluster...", flush=True)
        cluster.start(progress=lambda text: print(f"  {text}", flush=True))
        print(f"{'process':<16}{'address':<22}{'pid':>8}  {'core':<6}metrics")
        for name, child in zip(AGENT_NAMES, cluster.agents, strict=True):
            print(f"{'agent ' + name:<16}{child.address:<22}{child.proc.pid:>8}  {cluster.cores[name]:<6}"
                  f"{_metrics(child)}")
        print(f"{'coordinator':<16}{cluster.coordinator.address:<22}{cluster.coordinator.proc.pid:>8}  {'any':<6}"
              f"{_metrics(cluster.coordinator)}")
        print(f"all SERVING after {time.monotonic() - started:.1f} s; decisions at {cluster.coordinator.address} "
              f"(Ctrl-C to stop)", flush=True)
        while args.duration is None or time.monotonic() - started < args.duration:
            for event in cluster.supervise_once():
                print(event, flush=True)
            time.sleep(0.2)
    except StopRequested:
        pass
    finally:
        stopping.append(None)  # from here on a signal must not interrupt the clean stop
        print("stopping: coordinator first (drains in-flight calls), then the agents", flush=True)
        cluster.stop()
    print("stopped", flush=True)
    return 0


def _metrics(child) -> str:
    return f"http://{child.metrics}/metrics" if child.metrics else "-"
