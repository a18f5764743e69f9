"""Model latency and memory: torch system forward vs the card, ONNX actors, runner process RSS.

ONNX actors are timed at batch 1, 32 and 500 (a DecideBatch of 500 instruments is one forward pass),
and fvg at batch 1 with two versions called in turn, as an agent does with a shadow version beside
the active one (each evicts the other's weights from the cache).

    python benchmarks/models.py [--iterations 3000]

Targets (issue 3): torch system forward (3 actors + critic, 1 thread, batch 1) p50 < 0.8 ms
(card: 2.21 ms mean, 6.93 ms p99); ONNX actor batch-1 p50 < 60 us; a process that imports the
runner and loads three actors < 100 MB resident.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import numpy as np


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    a = np.asarray(samples)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.mean())


def time_calls(fn, iterations: int, warmup: int = 200) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


RSS_PROBE = """
import sys
from agents.serving.model_store import ModelStore
from agents.serving.runtime import ActorRunner
store = ModelStore(sys.argv[1])
runners = [ActorRunner(*store.read_artifact(0, name)) for name in ("fvg", "momentum", "entry")]
assert "torch" not in sys.modules
for line in open("/proc/self/status"):
    if line.startswith("VmRSS"):
        print(int(line.split()[1]) / 1024)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3000)
    args = parser.parse_args()

    import torch

    from agents.serving.model_store import ModelStore
    from agents.serving.runtime import ActorRunner
    from tactical.config import AGENT_NAMES, default_config
    from training.system import TacticalMARLSystem
    from training.versions import default_model, ensure_default_version, publish

    torch.set_num_threads(1)
    cfg = default_config()
    model = default_model(cfg)
    rows = []
    for batch in (1, 32):
        x = torch.randn(batch, 60, 7)

        def forward(x: torch.Tensor = x) -> None:
            with torch.inference_mode():
                model(x, deterministic=True)

        p50, p99, mean = percentiles(time_calls(forward, args.iterations))
        rows.append((f"torch system forward (3 actors + critic), batch {batch}", batch, p50, p99, mean))

    with tempfile.TemporaryDirectory() as tmp:
        ensure_default_version(tmp, cfg)
        store = ModelStore(tmp)
        for name in AGENT_NAMES:
            runner = ActorRunner(*store.read_artifact(0, name))
            for batch in (1, 32, 500):
                w = np.random.default_rng(0).uniform(-1, 1, (batch, 60, 7)).astype(np.float32)
                calls = max(args.iterations * 32 // max(batch, 32), 20)
                p50, p99, mean = percentiles(time_calls(lambda r=runner, w=w: r.infer(w), calls, min(200, calls)))
                rows.append((f"ONNX Runtime actor {name}, batch {batch}", batch, p50, p99, mean))
        torch.manual_seed(1)
        shadow = publish(store, TacticalMARLSystem(cfg).eval(), source="benchmark: a second version")
        pair = [ActorRunner(*store.read_artifact(v, "fvg")) for v in (0, shadow)]
        w = np.random.default_rng(0).uniform(-1, 1, (1, 60, 7)).astype(np.float32)
        turn = iter(range(10**9))
        p50, p99, mean = percentiles(time_calls(lambda: pair[next(turn) % 2].infer(w), args.iterations))
        rows.append(("ONNX fvg, batch 1, two versions in turn (a shadow)", 1, p50, p99, mean))
        rss = float(subprocess.run([sys.executable, "-c", RSS_PROBE, tmp], capture_output=True, text=True,
                                   check=True).stdout)

    print(f"{'what':<52}{'p50 us':>9}{'p99 us':>9}{'mean us':>9}{'per sample us':>15}")
    for what, batch, p50, p99, mean in rows:
        print(f"{what:<52}{p50 * 1e6:>9.1f}{p99 * 1e6:>9.1f}{mean * 1e6:>9.1f}{p50 * 1e6 / batch:>15.1f}")
    print(f"{'card: in-process inference':<52}{'':>9}{6930:>9.1f}{2210:>9.1f}")
    torch_p50 = rows[0][2] * 1e3
    onnx_p50 = max(r[2] for r in rows if r[0].startswith("ONNX Runtime actor") and r[1] == 1) * 1e6
    print()
    print(f"{'target':<52}{'measured':>12}{'goal':>10}{'ok':>5}")
    for label, value, digits, target, met in (
            ("torch system forward p50, batch 1 (ms)", torch_p50, 3, "< 0.8", torch_p50 < 0.8),
            ("slowest ONNX actor p50, batch 1 (us)", onnx_p50, 1, "< 60", onnx_p50 < 60),
            ("runner process with three actors (MB resident)", rss, 1, "< 100", rss < 100)):
        print(f"{label:<52}{value:>12.{digits}f}{target:>10}{'yes' if met else 'NO':>5}")


if __name__ == "__main__":
    main()
