"""Metrics overhead: decision latency with the Prometheus endpoints on (and scraped) and off, side by side.

    python benchmarks/metrics_overhead.py [--slices 20] [--slice-seconds 1] [--scrape-seconds 1]

Two real local clusters run at once (benchmarks/paired.py), identical but for the metrics
endpoints: on, every process exports /metrics and a scraper reads all four endpoints every
--scrape-seconds (Prometheus' usual interval is 15 s or more: this is harsher); off, no endpoint.
Load alternates between them in slices with 1 client stream, then 32. Both clusters count in
the request path (committee health and drift serve `tactical status` too); what that counting
costs per decision is measured in-process below the table, with the real classes.
Target (issue 16): the decision p99 moves by no more than +3% at 1 and at 32 streams.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

STREAMS = (1, 32)
TARGET = 0.03


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics_on(directory: Path) -> dict:
    return {"serving": {"metrics_port": free_port(),
                        "agents": {name: {"port": 0, "metrics_port": free_port()} for name in ("fvg", "momentum",
                                                                                                "entry")}}}


def scraper(interval_s: float, counts: dict):
    """A Prometheus stand-in: GET every endpoint of the 'on' cluster each interval."""

    def start(clusters: dict):
        stop = threading.Event()
        endpoints = [child.metrics for child in clusters["on"].children]

        def loop():
            while not stop.wait(interval_s):
                for address in endpoints:
                    body = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read()
                    counts["scrapes"] += 1
                    counts["bytes"] += len(body)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        return lambda: (stop.set(), thread.join())

    return start


def counting_cost_us(agents: int = 3, repeats: int = 50_000) -> float:
    """Microseconds the request path spends per single decision on metrics and committee health (folding the
    queued blocks into the rings included: here every FOLD_AT decisions, as when nobody scrapes)."""
    from coordinator.committee import CommitteeWatch
    from coordinator.metrics import CoordinatorMetrics
    from tactical.config import AGENT_NAMES
    from tactical.v1 import decision_pb2

    metrics = CoordinatorMetrics(AGENT_NAMES)
    watch = CommitteeWatch(AGENT_NAMES, 5000, 7)
    decisions = [decision_pb2.Decision(action=2, latency_ms=1.2)]
    answered, voted = np.ones(agents, dtype=bool), np.ones((1, agents), dtype=bool)
    probabilities = np.tile([0.2, 0.5, 0.3], (1, agents, 1))
    combined, hold_reason = np.array([[0.2, 0.5, 0.3]]), np.zeros(1, dtype=np.int64)
    window = np.zeros((60, 7), dtype="<f4").tobytes()
    errors, latencies = [""] * agents, [0.9] * agents
    start = time.perf_counter()
    for _ in range(repeats):
        metrics.count(decisions, 1, answered, voted, errors, latencies)
        watch.observe(1, voted, probabilities, combined, hold_reason, window)
    return (time.perf_counter() - start) / repeats * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=20, help="load slices per cluster and stream count")
    parser.add_argument("--slice-seconds", type=float, default=1.0)
    parser.add_argument("--scrape-seconds", type=float, default=1.0, help="scrape interval of the 'on' cluster")
    args = parser.parse_args()

    from paired import run_paired

    counts = {"scrapes": 0, "bytes": 0}
    result = run_paired({"on": metrics_on, "off": lambda directory: {}}, STREAMS, slices=args.slices,
                        slice_seconds=args.slice_seconds, while_running=scraper(args.scrape_seconds, counts))
    print(result.table("metrics", ("on", "off"), STREAMS))
    print(f"\n{counts['scrapes']} scrapes of the 'on' cluster's 4 endpoints, "
          f"{counts['bytes'] / max(counts['scrapes'], 1) / 1024:.1f} KiB each")
    cost = counting_cost_us()
    print(f"counting in the request path (both clusters): {cost:.1f} us per decision, "
          f"{cost / 1000 / result.p('off', 1, 50):.1%} of the 1-stream p50")
    print(result.verdicts("on", "off", STREAMS, TARGET, "with metrics on and scraped"))


if __name__ == "__main__":
    main()
