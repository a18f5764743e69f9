"""Audit-log overhead: decision latency with the audit writer on and off, same cluster setup.

    python benchmarks/audit_overhead.py [--seconds 5] [--rounds 3]

Runs the real local cluster with the audit log, then without, alternating `rounds` times to
spread machine noise evenly, under one client stream and 8 concurrent streams. Target
(issue 6): the audit log moves the decision p99 by no more than 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flush-ms", type=float, default=None, help="audit flush interval (default: the config's)")
    args = parser.parse_args()

    from tactical.config import load_config
    from tactical.launcher import LocalCluster, write_isolated_config
    from tactical.loadgen import run_load

    results: dict[tuple[str, int], list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for round_ in range(args.rounds):
            for audit in (True, False):
                directory = tmp / ("audit-on" if audit else "audit-off")
                directory.mkdir(exist_ok=True)
                if not audit:
                    sections = {"paths": {"audit_log": ""}}
                else:
                    sections = {"serving": {"audit_flush_ms": args.flush_ms}} if args.flush_ms else {}
                path = write_isolated_config(directory, **sections)
                cfg = load_config(path)
                cluster = LocalCluster(cfg, str(path))
                cluster.start()
                try:
                    for streams in (1, 8):
                        r = asyncio.run(run_load(cluster.coordinator.address, cfg.serving, streams=streams,
                                                 seconds=args.seconds))
                        results.setdefault(("on" if audit else "off", streams), []).append(r)
                finally:
                    cluster.stop()

    print(f"{'audit':<7}{'streams':>8}{'decisions/s':>13}{'p50 ms':>9}{'p99 ms':>9}   (median over {args.rounds} rounds)")
    p99 = {}
    for (audit, streams), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        rate = statistics.median(r.rate for r in runs)
        p50 = statistics.median(r.percentile(50) for r in runs)
        p99[(audit, streams)] = statistics.median(r.percentile(99) for r in runs)
        print(f"{audit:<7}{streams:>8}{rate:>13,.0f}{p50:>9.2f}{p99[(audit, streams)]:>9.2f}")
    print()
    for streams in (1, 8):
        change = p99[("on", streams)] / p99[("off", streams)] - 1
        print(f"p99 change from the audit log, {streams} stream(s): {change:+.1%} (target <= +10%): "
              f"{'yes' if change <= 0.10 else 'NO'}")


if __name__ == "__main__":
    main()
