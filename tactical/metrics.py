"""Prometheus metrics for the server processes: counted cheaply on the request path, shaped at scrape time.

The request path only increments plain Python counters and bucket counts (a bisect and an
addition: a few hundred nanoseconds); a collector turns them into metric families when Prometheus
scrapes. That keeps the decision latency what it is without metrics (benchmarks/metrics_overhead.py).
The HTTP endpoint (prometheus_client's, a thread of its own) also exports the process collectors:
resident memory, CPU seconds, open files, garbage collection.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, start_http_server
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tactical.errors import UserError

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
INFERENCE_BUCKETS_S = (0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Histogram:
    """Bucket counts and a sum, updated in the hot path; rendered as a Prometheus histogram at scrape."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]):
        self.bounds = list(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += times
        self.sum += value * times
        self.count += times

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, out = 0, []
        for bound, n in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            cumulative += n
            out.append((bound, cumulative))
        return out


def histogram_family(name: str, documentation: str, histograms: dict[tuple[str, ...], Histogram],
                     labels: Sequence[str] = ()) -> HistogramMetricFamily:
    """One histogram family from histograms keyed by their label values."""
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    for values, h in histograms.items():
        family.add_metric(list(values), h.buckets(), h.sum)
    return family


class CallbackCollector(Collector):
    """A collector whose families come from a function, called at every scrape."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]):
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


def serve_metrics(host: str, port: int, collect: Callable[[], Iterable[Metric]]) -> str | None:
    """Start the endpoint (0: none) with our families and the process collectors; return its address."""
    if not port:
        return None
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(CallbackCollector(collect))
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise MetricsError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} (port in use?)") from None
    return f"{host}:{server.server_port}"


class MetricsError(UserError, OSError):
    """The metrics endpoint cannot start; the message names the address."""
