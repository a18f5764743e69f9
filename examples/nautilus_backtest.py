"""NautilusTrader drives a running cluster: its BacktestEngine replays bars, the TacticalStrategy streams each
bar to the coordinator and trades one unit towards each decision.

    tactical up &                                                       # a cluster (or --target one)
    pip install -e '.[nautilus]'
    python examples/nautilus_backtest.py --synthetic 3000               # or --csv bars.csv

Prints what Nautilus did (orders, fills, P&L of one unit in USD, net of fees of training.transaction_cost
per unit of notional) beside `tactical backtest`'s accounting of the same decisions (fills at the decision
bar's close, compounded log returns), and checks, bar for bar, that the position Nautilus holds is the
decision the cluster answered.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--csv", help="bars from this CSV (time, open, high, low, close, volume)")
    source.add_argument("--synthetic", type=int, default=3000, metavar="N",
                        help="N bars of the config's synthetic market (default 3000)")
    parser.add_argument("--target", help="the coordinator (default: serving.coordinator_port on this machine)")
    parser.add_argument("--config", help="the cluster's config file")
    parser.add_argument("--instrument", default="NAUTILUS", help="the instrument's name on the cluster's side")
    args = parser.parse_args()

    from market.csv_loader import load_bars_csv
    from market.performance import backtest
    from market.synthetic import configured
    from tactical.config import load_config
    from tactical_engine.nautilus import run_backtest

    cfg = load_config(args.config)
    bars = load_bars_csv(args.csv) if args.csv else configured(cfg.replace(synthetic={"bars": args.synthetic})
                                                               .synthetic).bars
    target = args.target or cfg.serving.local_coordinator
    cost = cfg.training.transaction_cost
    result = run_backtest(bars, target, instrument=args.instrument, config_path=args.config, fee=cost)

    decided = np.array([d.position if d is not None else 0 for d in result.decisions], dtype=np.float64)
    first = next(i for i, d in enumerate(result.decisions) if d is not None)
    follows = np.array_equal(result.positions, decided)
    changes = int(np.count_nonzero(np.diff(np.concatenate(([0.0], decided)))))
    # the same decisions scored the simple way: one unit, filled at the decision bar's close, fees on notional
    simple = float(np.sum(decided[:-1] * np.diff(result.closes))
                   - cost * np.sum(np.abs(np.diff(np.concatenate(([0.0], decided)))) * result.closes))
    ours = backtest("model", decided[first:-1], bars.close[first:], bars.time[first:], cost)
    print(f"{len(bars):,} bars, decisions from the cluster at {target} on {len(bars) - first:,} of them "
          f"(the first {first} are the instrument's history), {changes} position changes")
    at_close = all(d == k and abs(price - result.closes[k]) < 1e-9 for d, k, _, price, _ in result.fills)
    print(f"nautilus: {len(result.fills)} fills, P&L of one unit {result.pnl:+.4f} USD after {result.fees:.4f} USD "
          f"of fees; every fill on its decision's bar at that bar's close: {at_close}")
    print(f"the same decisions, one unit filled at each decision bar's close, fees exact: {simple:+.4f} USD "
          f"(Nautilus keeps its account and fees in cents: difference {result.pnl - simple:+.4f})")
    print(f"tactical backtest's accounting of them: total return {ours.total_return:+.2%}, Sharpe {ours.sharpe:.2f}, "
          f"max drawdown {ours.max_drawdown:.2%}, {ours.trades} trades")
    print(f"position after every bar == the decision the cluster answered: {follows}")
    return 0 if follows else 1


if __name__ == "__main__":
    sys.exit(main())
