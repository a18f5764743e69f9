"""Features benchmark: bars per second for the seven features over one million bars.

    python benchmarks/features.py [--bars 1000000] [--repeats 5]

Target (issue 2): at least 2,000,000 bars/s on the 2-core reference machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

from market.features import compute_features
from market.synthetic import synthetic_bars
from tactical.config import default_config

TARGET_BARS_PER_S = 2_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    cfg = default_config().features
    bars = synthetic_bars(args.bars, seed=0)
    compute_features(bars[:1000], cfg)  # warm caches and imports
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        compute_features(bars, cfg)
        times.append(time.perf_counter() - start)
    median, best = statistics.median(times), min(times)
    rate = args.bars / median
    print(f"{'bars':>10} {'repeats':>8} {'median ms':>10} {'best ms':>9} {'bars/s (median)':>16} {'target':>12} "
          f"{'ok':>4}")
    print(f"{args.bars:>10,} {args.repeats:>8} {median * 1e3:>10.1f} {best * 1e3:>9.1f} {rate:>16,.0f} "
          f"{TARGET_BARS_PER_S:>12,} {'yes' if rate >= TARGET_BARS_PER_S else 'NO':>4}")


if __name__ == "__main__":
    main()
