"""`tactical features`: compute the seven features over bars and summarize them."""

from __future__ import annotations

import argparse
import time

from tactical_engine.commands import add_config_option, refuse_unused_seed, require_range


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="compute the seven bar features and print a summary",
                       description="Compute the seven bar features (fair value gaps, momentum, volume; see the "
                                   "README) over a CSV of bars or the synthetic market of the config's "
                                   "synthetic: section, print per-feature statistics and the speed, optionally "
                                   "save them.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--csv", metavar="FILE",
                     help="bars from a CSV or Parquet file (time, open, high, low, close, volume)")
    src.add_argument("--synthetic", metavar="N", type=int, default=None,
                     help="N synthetic bars (default when no --csv: the config's synthetic.bars)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the synthetic bars (default: the config's synthetic.seed)")
    p.add_argument("--out", metavar="FILE.npy", help="save the (N, 7) float32 feature matrix")
    add_config_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from market.csv_loader import load_bars
    from market.features import compute_features
    from market.synthetic import configured
    from tactical.config import load_config
    from tactical.wire import FEATURE_NAMES

    require_range("--synthetic", args.synthetic, 1)
    require_range("--seed", args.seed, 0)
    refuse_unused_seed(args, "csv")
    synthetic = {key: value for key, value in (("bars", args.synthetic), ("seed", args.seed)) if value is not None}
    cfg = load_config(args.config, {"synthetic": synthetic})
    if args.csv:
        bars, source = load_bars(args.csv), args.csv
    else:
        bars, source = configured(cfg.synthetic).bars, f"the config's synthetic market (seed {cfg.synthetic.seed})"
    start = time.perf_counter()
    features = compute_features(bars, cfg.features)
    elapsed = time.perf_counter() - start
    print(f"{len(bars):,} bars from {source}: features in {elapsed * 1000:.1f} ms "
          f"({len(bars) / max(elapsed, 1e-9):,.0f} bars/s)")
    print(f"{'feature':<24}{'min':>9}{'mean':>9}{'max':>9}{'nonzero':>10}")
    for i, name in enumerate(FEATURE_NAMES):
        col = features[:, i]
        print(f"{name:<24}{col.min():>9.3f}{col.mean():>9.3f}{col.max():>9.3f}{np.count_nonzero(col) / len(col):>9.1%}")
    if args.out:
        from tactical.atomic import atomic_open

        with atomic_open(args.out, "wb") as f:
            np.save(f, features)
        print(f"saved {features.shape} to {args.out}")
    return 0
