"""Paired A/B runs of real local clusters that differ in one setting, for the overhead benchmarks.

Every variant runs at once, identical but for its config sections (and launcher options); load
alternates between them in short slices (one client stream count at a time), so all see the
same machine conditions, and the latencies of all slices are pooled per variant and stream
count, as is the CPU each process (and the client) used during them. On a shared, noisy machine
that is what makes a few-percent difference measurable: the ratio of two pooled percentiles,
measured side by side, not two absolute numbers taken an hour apart.

Even so a p99 of a few thousand latencies moves by tens of percent between identical runs (a
handful of stalls make it). So a verdict carries an interval: slice k of one variant ran right
beside slice k of the other, and resampling those pairs (the same draw for both) shows how far the
p99 change would move had the run caught other stalls. A target is met only when the interval's
upper end is within it, and missed only when its lower end is past it.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from market.bootstrap import Interval

CLIENT = "client"  # the load generator's own CPU in Paired.cpu_s
CONFIDENCE = 0.90  # of a verdict's interval: each end is a one-sided 95% bound
RESAMPLES = 1000


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Paired:
    """Pooled client latencies (ms), load seconds, and CPU seconds per process over `cpu_wall_s` (the slices
    with their warm-ups and connection setups), per (variant, streams)."""

    latencies_ms: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    seconds: dict[tuple[str, int], float] = field(default_factory=dict)
    cpu_s: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    cpu_wall_s: dict[tuple[str, int], float] = field(default_factory=dict)
    slice_sizes: dict[tuple[str, int], list[int]] = field(default_factory=dict)  # latencies each slice added

    def p(self, variant: str, streams: int, q: float) -> float:
        return float(np.percentile(self.latencies_ms[(variant, streams)], q))

    def table(self, label: str, variants: Sequence[str], streams_list: Sequence[int]) -> str:
        lines = [f"{label:<9}{'streams':>8}{'decisions':>11}{'per s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"]
        for streams in streams_list:
            for name in variants:
                lat = self.latencies_ms[(name, streams)]
                lines.append(f"{name:<9}{streams:>8}{len(lat):>11,}{len(lat) / self.seconds[(name, streams)]:>9,.0f}"
                             f"{self.p(name, streams, 50):>9.2f}{self.p(name, streams, 90):>9.2f}"
                             f"{self.p(name, streams, 99):>9.2f}")
        return "\n".join(lines)

    def cpu_table(self, variants: Sequence[str], streams_list: Sequence[int]) -> str:
        """CPU microseconds per decision of each process (and the client), over the slices (warm-ups included), and
        of all together: on cores the load keeps busy, a variant's latency moves with that sum (a closed loop's
        latency is its streams over the throughput the CPU allows)."""
        processes = list(self.cpu_s[(variants[0], streams_list[0])])
        lines = [f"{'CPU us per decision':<22}" + "".join(f"{name:>16}" for name in [*processes, "all"])]
        for streams in streams_list:
            for variant in variants:
                cpu, n = self.cpu_s[(variant, streams)], len(self.latencies_ms[(variant, streams)])
                lines.append(f"{variant + ', ' + str(streams) + ' stream(s)':<22}"
                             + "".join(f"{cpu[name] / n * 1e6:>16,.0f}" for name in processes)
                             + f"{sum(cpu.values()) / n * 1e6:>16,.0f}")
        return "\n".join(lines)

    def change(self, on: str, off: str, streams: int, q: float = 99, seed: int = 0) -> Interval:
        """The relative change of the pooled q-th percentile from `off` to `on`, with a CONFIDENCE interval from
        resampling slice pairs (the same slices drawn for both variants: each pair ran side by side)."""
        a, b = self._slices(on, streams), self._slices(off, streams)
        if len(a) != len(b):
            raise ValueError(f"{on} ran {len(a)} slices and {off} {len(b)}: they are not pairs")
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, len(a), size=(RESAMPLES, len(a)))
        changes = [np.percentile(np.concatenate([a[i] for i in draw]), q)
                   / np.percentile(np.concatenate([b[i] for i in draw]), q) - 1 for draw in draws]
        tail = (1 - CONFIDENCE) / 2 * 100
        low, high = np.percentile(changes, [tail, 100 - tail])
        return Interval(self.p(on, streams, q) / self.p(off, streams, q) - 1, float(low), float(high))

    def _slices(self, variant: str, streams: int) -> list[np.ndarray]:
        pooled = np.asarray(self.latencies_ms[(variant, streams)])
        return np.split(pooled, np.cumsum(self.slice_sizes[(variant, streams)])[:-1])

    def verdicts(self, on: str, off: str, streams_list: Sequence[int], target: float, what: str) -> str:
        """Per stream count: the p99 change from `off` to `on` and its interval against the target (met, NOT met,
        or undecided when the interval spans it), and the p50 change, which a few stalls do not move."""
        lines = []
        for streams in streams_list:
            p99, p50 = self.change(on, off, streams), self.change(on, off, streams, q=50)
            verdict = ("met" if p99.high <= target else "NOT met" if p99.low > target
                       else "undecided: the interval spans the target")
            lines.append(f"p99 change {what}, {streams} stream(s): {p99.estimate:+.1%}, {CONFIDENCE:.0%} interval "
                         f"[{p99.low:+.1%}, {p99.high:+.1%}] over resampled slice pairs (target <= +{target:.0%}): "
                         f"{verdict}; p50 change {p50.estimate:+.1%} [{p50.low:+.1%}, {p50.high:+.1%}]")
        return "\n".join(lines)


def run_paired(variants: Mapping[str, Callable[[Path], dict]], streams_list: Sequence[int], *, slices: int,
               slice_seconds: float, while_running: Callable[[dict], Callable[[], None]] | None = None,
               cluster_options: Mapping[str, Mapping[str, Any]] | None = None,
               load_options: Callable[[int], Mapping[str, Any]] | None = None) -> Paired:
    """Start one cluster per variant (`variants[name](directory)` gives its config sections, `cluster_options[name]`
    more LocalCluster arguments), load them in alternating slices (`load_options(streams)`: more run_load
    arguments), stop them. `while_running(clusters)` may start something beside the load and returns how to stop
    it."""
    from loadgen import run_load
    from tactical.config import load_config
    from tactical_engine.launcher import LocalCluster, write_isolated_config

    result = Paired()
    with tempfile.TemporaryDirectory() as tmp:
        clusters: dict = {}
        stop_beside = None
        try:
            for name, sections in variants.items():
                directory = Path(tmp) / name
                directory.mkdir()
                cfg = load_config(write_isolated_config(directory, **sections(directory)))
                clusters[name] = LocalCluster(cfg, str(directory / "config.yaml"), log_dir=directory / "logs",
                                              **(cluster_options or {}).get(name, {}))
                clusters[name].start()
            stop_beside = while_running(clusters) if while_running else None
            for streams in streams_list:
                for _ in range(slices):
                    for name, cluster in clusters.items():
                        began, before = time.perf_counter(), _cpu(cluster)
                        r = asyncio.run(run_load(cluster.coordinator.address, cluster.cfg.serving, streams=streams,
                                                 seconds=slice_seconds, warmup_s=0.1,
                                                 **(load_options(streams) if load_options else {})))
                        cpu = result.cpu_s.setdefault((name, streams), {})
                        for process, seconds in _cpu(cluster).items():
                            cpu[process] = cpu.get(process, 0.0) + seconds - before[process]
                        result.cpu_wall_s[(name, streams)] = (result.cpu_wall_s.get((name, streams), 0.0)
                                                              + time.perf_counter() - began)
                        result.latencies_ms.setdefault((name, streams), []).extend(r.latencies_ms)
                        result.slice_sizes.setdefault((name, streams), []).append(len(r.latencies_ms))
                        result.seconds[(name, streams)] = result.seconds.get((name, streams), 0.0) + r.elapsed_s
        finally:
            if stop_beside is not None:
                stop_beside()
            for cluster in clusters.values():
                cluster.stop()
    return result


def _cpu(cluster) -> dict[str, float]:
    """CPU seconds so far of each serving process and of this one (the load generator)."""
    return {**{child.name: cpu_seconds(child.proc.pid) for child in cluster.children}, CLIENT: time.process_time()}
