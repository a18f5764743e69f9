"""The overhead benchmarks' verdicts (benchmarks/paired.py): a p99 change is judged with an interval over
resampled slice pairs, so a few stalls in one variant's slices make a verdict undecided, not a false "met"
or "NOT met"."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def paired_module():
    spec = importlib.util.spec_from_file_location("paired", BENCHMARKS / "paired.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("paired", module)
    spec.loader.exec_module(module)
    return module


def run(slices_on: list[np.ndarray], slices_off: list[np.ndarray]):
    """A Paired result as run_paired would leave it for one stream count."""
    result = paired_module().Paired()
    for name, slices in (("on", slices_on), ("off", slices_off)):
        result.latencies_ms[(name, 1)] = np.concatenate(slices).tolist()
        result.slice_sizes[(name, 1)] = [len(s) for s in slices]
        result.seconds[(name, 1)] = float(len(slices))
    return result


def test_a_steady_slowdown_past_the_target_is_not_met_and_none_is_met():
    rng = np.random.default_rng(0)
    base = [rng.gamma(9.0, 0.4, 300) for _ in range(20)]
    slower = run([s * 1.25 for s in base], base)
    change = slower.change("on", "off", 1)
    assert abs(change.estimate - 0.25) < 1e-9
    assert abs(change.low - 0.25) < 1e-9 and abs(change.high - 0.25) < 1e-9  # every slice pair says +25%
    assert slower.verdicts("on", "off", [1], 0.10, "x").endswith("p50 change +25.0% [+25.0%, +25.0%]")
    assert ": NOT met;" in slower.verdicts("on", "off", [1], 0.10, "x")
    same = run(base, [s.copy() for s in base])
    assert ": met;" in same.verdicts("on", "off", [1], 0.10, "x")


def test_stalls_in_a_few_slices_leave_the_verdict_undecided():
    rng = np.random.default_rng(1)
    base = [rng.gamma(9.0, 0.4, 300) for _ in range(20)]
    stalled = [s.copy() for s in base]
    for k in (3, 11, 17):  # three slices of one variant caught a stall: their worst 25 latencies are 3x
        stalled[k][np.argsort(stalled[k])[-25:]] *= 3.0
    result = run(stalled, base)
    change = result.change("on", "off", 1)
    assert change.estimate > 0.10  # the pooled p99 alone would call it a miss
    assert change.low <= 0.10 < change.high
    assert "undecided: the interval spans the target" in result.verdicts("on", "off", [1], 0.10, "x")
    assert abs(result.change("on", "off", 1, q=50).estimate) < 1e-9  # the p50 did not move


def test_the_interval_is_seeded():
    rng = np.random.default_rng(2)
    a = [rng.gamma(9.0, 0.4, 200) for _ in range(10)]
    b = [rng.gamma(9.0, 0.4, 200) for _ in range(10)]
    assert run(a, b).change("on", "off", 1) == run(a, b).change("on", "off", 1)
