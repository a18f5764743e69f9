"""Audit-log overhead: decision latency with the audit log on and off, measured side by side.

    python benchmarks/audit_overhead.py [--slices 30] [--slice-seconds 1]

Two real local clusters run at once, identical but for the audit log (on: the packaged
setting; off: paths.audit_log empty). Load alternates between them in short slices (one
client stream, then 8 concurrent streams), so both see the same machine conditions; the
latencies of all slices are pooled per cluster. Target (issue 6): the audit log moves the
decision p99 by no more than 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=30, help="load slices per cluster and stream count")
    parser.add_argument("--slice-seconds", type=float, default=1.0)
    parser.add_argument("--flush-ms", type=float, default=None,
                        help="serving.audit_flush_ms of the audited cluster (default: the packaged setting)")
    parser.add_argument("--audit-dir", default=None, help="directory of the audit log (default: a temporary one)")
    args = parser.parse_args()

    from loadgen import run_load
    from tactical.config import load_config
    from tactical_engine.launcher import LocalCluster, write_isolated_config

    latencies: dict[tuple[str, int], list[float]] = {}
    seconds: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        clusters = {}
        try:
            audit_on = {"serving": {"audit_flush_ms": args.flush_ms}} if args.flush_ms else {}
            if args.audit_dir:
                audit_on["paths"] = {"audit_log": str(Path(args.audit_dir) / "audit.sqlite")}
            for name, sections in (("on", audit_on), ("off", {"paths": {"audit_log": ""}})):
                directory = Path(tmp) / name
                directory.mkdir()
                cfg = load_config(write_isolated_config(directory, **sections))
                clusters[name] = LocalCluster(cfg, str(directory / "config.yaml"))
                clusters[name].start()
            for streams in (1, 8):
                for _ in range(args.slices):
                    for name, cluster in clusters.items():
                        r = asyncio.run(run_load(cluster.coordinator.address, cluster.cfg.serving, streams=streams,
                                                 seconds=args.slice_seconds, warmup_s=0.1))
                        latencies.setdefault((name, streams), []).extend(r.latencies_ms)
                        seconds[(name, streams)] = seconds.get((name, streams), 0.0) + r.elapsed_s
        finally:
            for cluster in clusters.values():
                cluster.stop()

    print(f"{'audit':<7}{'streams':>8}{'decisions':>11}{'per s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}")
    p99 = {}
    for streams in (1, 8):
        for name in ("on", "off"):
            lat = np.asarray(latencies[(name, streams)])
            p99[(name, streams)] = np.percentile(lat, 99)
            print(f"{name:<7}{streams:>8}{len(lat):>11,}{len(lat) / seconds[(name, streams)]:>9,.0f}"
                  f"{np.percentile(lat, 50):>9.2f}{np.percentile(lat, 90):>9.2f}{p99[(name, streams)]:>9.2f}")
    print()
    for streams in (1, 8):
        change = p99[("on", streams)] / p99[("off", streams)] - 1
        print(f"p99 change from the audit log, {streams} stream(s): {change:+.1%} (target <= +10%): "
              f"{'yes' if change <= 0.10 else 'NO'}")


if __name__ == "__main__":
    main()
