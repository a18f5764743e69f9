"""`tactical evaluate --walk-forward`: train on each window, test on the bars after it, stitch, with intervals."""

from __future__ import annotations

import argparse

from tactical_engine.commands import (
    CliError,
    add_config_option,
    add_logging_options,
    require_range,
    setup_command_logging,
)
from tactical_engine.commands.backtest import add_scoring_options, annual_text, stamp


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="walk-forward evaluation: train on each window, test on the next, with confidence intervals",
        description="Walk-forward evaluation. Segment k trains a model on bars [k*step, k*step + train-bars) (fresh, "
                    "or continued from the previous segment's model with --continue) and decides at the test-bars "
                    "bars after that window, which no training saw. The out-of-sample segments are stitched and "
                    "scored against buy-and-hold, flat and random votes on the same bars, at the training costs "
                    "(training.transaction_cost): total return, Sharpe ratio with a block-bootstrap confidence "
                    "interval, its difference to buy-and-hold's with an interval, max drawdown, trades; then a "
                    "table per segment. The run lives in --run-dir: started again with the same settings it goes on "
                    "from the last finished segment. Overrides: --updates training.updates, --seed training.seed "
                    "(also seeds the random votes and the bootstrap), --data the config's synthetic: section.")
    p.add_argument("--walk-forward", action="store_true", required=True,
                   help="rolling windows: train on each, test on the bars after it (the evaluation this command runs)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="FILE",
                     help="bars from a CSV file (pandas' to_csv() layout too) or a Parquet file (needs pyarrow)")
    src.add_argument("--synthetic", action="store_true",
                     help="the synthetic series of the config's synthetic: section (the default)")
    p.add_argument("--train-bars", type=int, required=True, metavar="N", help="bars in each training window")
    p.add_argument("--test-bars", type=int, required=True, metavar="M",
                   help="decisions tested after each window (its out-of-sample segment)")
    p.add_argument("--step", type=int, metavar="S",
                   help="bars the window moves from one segment to the next (default: --test-bars, so the test "
                        "segments follow each other; larger leaves bars between them out)")
    p.add_argument("--updates", type=int, metavar="N", help="training updates per segment (overrides training.updates)")
    p.add_argument("--continue", dest="continued", action="store_true",
                   help="train each segment's model on from the previous segment's (weights, optimizer, value "
                        "statistics) instead of from scratch; it still never sees a bar after its window")
    p.add_argument("--seed", type=int, metavar="S", help="training, random-votes and bootstrap seed (overrides "
                                                           "training.seed)")
    add_scoring_options(p)
    p.add_argument("--confidence", type=float, default=0.95, help="confidence of the intervals (default 0.95)")
    p.add_argument("--samples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--block-bars", type=int, metavar="B",
                   help="bootstrap block length in bars (default: n^(1/3) of the n stitched bars; longer when "
                        "positions are held longer than that)")
    p.add_argument("--run-dir", metavar="DIR",
                   help="where the run keeps its models and finished segments (default: walk-forward/ beside "
                        "paths.model_store)")
    p.add_argument("--restart", action="store_true", help="discard what --run-dir holds and start over")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw the stitched equity curves and the model's positions (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_config_option(p)
    add_logging_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from market.csv_loader import load_bars
    from market.performance import bars_per_year
    from market.synthetic import configured, series_source
    from tactical.config import load_config
    from tactical.progress import progress_bar
    from tactical_engine.backtest import check_plot_path
    from tactical_engine.walk_forward import WalkForwardRun, plot_walk_forward, score_walk_forward

    for flag, value, minimum in (("--train-bars", args.train_bars, 1), ("--test-bars", args.test_bars, 2),
                                 ("--step", args.step, 1), ("--updates", args.updates, 1), ("--seed", args.seed, 0),
                                 ("--samples", args.samples, 100), ("--block-bars", args.block_bars, 1),
                                 ("--periods-per-year", args.periods_per_year, 1)):
        require_range(flag, value, minimum)
    if not 0 < args.confidence < 1:
        raise CliError(f"--confidence must be between 0 and 1, got {args.confidence}")
    if args.plot:
        check_plot_path(args.plot)
    training = {key: value for key, value in (("updates", args.updates), ("seed", args.seed)) if value is not None}
    cfg = load_config(args.config, {"training": training})
    setup_command_logging(args, "evaluate")
    log = logging.getLogger("tactical.evaluate")
    bars = load_bars(args.data) if args.data else configured(cfg.synthetic).bars
    source = series_source(args.data, cfg.synthetic)
    run_dir = Path(args.run_dir) if args.run_dir else Path(cfg.paths.model_store).parent / "walk-forward"
    step = args.test_bars if args.step is None else args.step
    wf = WalkForwardRun(run_dir, cfg, bars, source=source, train_bars=args.train_bars, test_bars=args.test_bars,
                        step=step, updates=cfg.training.updates, continued=args.continued, restart=args.restart)
    if args.block_bars is not None and args.block_bars > sum(s.bars for s in wf.segments):
        raise CliError(f"--block-bars {args.block_bars} is longer than the {sum(s.bars for s in wf.segments):,} "
                       f"out-of-sample bars")
    done = wf.finished()
    updates, total = cfg.training.updates, len(wf.segments)
    try:
        with progress_bar(total, "walk-forward", "segment", initial=len(done)) as bar:
            for segment in wf.segments:
                if segment.index in done:
                    continue
                k = segment.index + 1
                log.info("segment %d/%d: training %d updates on bars %s to %s", k, total, updates,
                         stamp(int(bars.time[segment.train_first])), stamp(int(bars.time[segment.train_end - 1])),
                         extra={"segment": k})
                result = wf.run_segment(segment, lambda update, k=k: bar.set_postfix_str(
                    f"segment {k}: update {update}/{updates}"))
                done[segment.index] = result
                bar.update(1)
                log.info("segment %d/%d done: trained in %.0f s, %s decisions, %s in a position", k, total,
                         result.train_seconds, f"{segment.bars:,}", f"{int((result.positions != 0).sum()):,}",
                         extra={"segment": k, "train_s": round(result.train_seconds, 1)})
    except KeyboardInterrupt:
        log.warning("stopped with %d of %d segments finished in %s; the same command goes on from segment %d",
                    len(done), total, run_dir, len(done) + 1)
        raise
    results = [done[s.index] for s in wf.segments]
    per_year = bars_per_year(bars.time) if args.periods_per_year is None else args.periods_per_year
    report = score_walk_forward(results, bars, cfg, fill=args.fill, periods_per_year=per_year,
                                seed=cfg.training.seed, confidence=args.confidence, samples=args.samples,
                                block=args.block_bars)
    if args.plot:
        plot_walk_forward(report, results, bars, args.plot)
    settings = {"source": source, "run_dir": str(run_dir), "train_bars": args.train_bars,
                "test_bars": args.test_bars, "step": step, "updates": cfg.training.updates,
                "continued": args.continued, "fill": args.fill, "cost": cfg.training.transaction_cost,
                "periods_per_year": per_year, "seed": cfg.training.seed}
    if args.json:
        _print_json(report, results, bars, settings, args.plot)
    else:
        _print_text(report, results, bars, settings, args.plot)
    return 0


def _print_json(report, results, bars, settings: dict, plot: str | None) -> None:
    from tactical_engine.backtest import BUY_AND_HOLD
    from tactical_engine.json_output import print_json

    ci = report.intervals
    policies = []
    for name, stitched in report.stitched.items():
        row = stitched.summary()
        sharpe = ci.sharpe[name]
        row["sharpe_interval"] = [sharpe.low, sharpe.high]
        if name in ci.difference:
            d = ci.difference[name]
            row["sharpe_minus_buy_and_hold"] = {"estimate": d.estimate, "interval": [d.low, d.high]}
        policies.append(row)
    segments = [{"index": r.segment.index, "version": r.version, "train_ms": round(r.train_seconds * 1000),
                 "updates_done": r.updates_done,
                 "train_from": stamp(int(bars.time[r.segment.train_first])),
                 "train_to": stamp(int(bars.time[r.segment.train_end - 1])),
                 "first_decision": stamp(int(bars.time[r.segment.first])),
                 "last_decision": stamp(int(bars.time[r.segment.last])),
                 "decisions": r.segment.bars,
                 "reports": [rep.summary() for rep in reports.values()]}
                for r, reports in zip(results, report.segments, strict=True)]
    print_json({**settings, "out_of_sample_bars": sum(r.segment.bars for r in results),
                "bootstrap": {"confidence": ci.confidence, "block_bars": ci.block, "samples": ci.samples,
                              "seed": ci.seed, "reference": BUY_AND_HOLD},
                "policies": policies, "segments": segments, "plot": plot})


def _print_text(report, results, bars, s: dict, plot: str | None) -> None:
    from tactical_engine.backtest import BUY_AND_HOLD, MODEL, RANDOM

    ci = report.intervals
    pct = f"{ci.confidence:.0%}"
    first, last = results[0].segment, results[-1].segment
    print(f"walk-forward on {s['source']}: {len(results)} segments, each training on {s['train_bars']:,} bars "
          f"({'continued from the previous model' if s['continued'] else 'fresh model'}, {s['updates']} updates) and "
          f"testing the next {s['test_bars']:,}, step {s['step']:,}; run in {s['run_dir']}")
    print(f"out of sample: {sum(r.segment.bars for r in results):,} decisions, {stamp(int(bars.time[first.first]))} to "
          f"{stamp(int(bars.time[last.last + 1]))} UTC, stitched; cost {s['cost']:g} per unit traded, fills at the "
          f"{'decision bar close' if s['fill'] == 'close' else 'next bar open'}; Sharpe annualized with "
          f"{s['periods_per_year']:,.0f} bars a year; {pct} intervals from a block bootstrap "
          f"({ci.samples:,} resamples of {ci.block}-bar blocks, seed {ci.seed})")
    print()
    print(f"{'policy':<14}{'total':>9}{'annual':>9}{'Sharpe':>8}{pct + ' interval':>19}{'minus buy&hold':>16}"
          f"{pct + ' interval':>19}{'max DD':>8}{'trades':>8}")
    for name, r in report.stitched.items():
        sharpe = ci.sharpe[name]
        if name in ci.difference:
            d = ci.difference[name]
            diff, diff_ci = f"{d.estimate:>+16.2f}", f"{f'[{d.low:+.2f}, {d.high:+.2f}]':>19}"
        else:
            diff, diff_ci = f"{'-':>16}", f"{'':>19}"
        print(f"{name:<14}{r.total_return:>+9.2%}{annual_text(r.annual_return, 9)}{sharpe.estimate:>8.2f}"
              f"{f'[{sharpe.low:.2f}, {sharpe.high:.2f}]':>19}{diff}{diff_ci}{r.max_drawdown:>8.2%}{r.trades:>8}")
    d = ci.difference[MODEL]
    verdict = ("above buy-and-hold's" if d.low > 0 else "below buy-and-hold's" if d.high < 0
               else "not distinguishable from buy-and-hold's")
    print(f"the model's Sharpe ratio is {verdict} at {pct} confidence (difference {d.estimate:+.2f}, interval "
          f"[{d.low:+.2f}, {d.high:+.2f}])")
    print()
    print(f"{'segment':<8}{'trained on':<38}{'tested on':<38}{'model':>9}{'buy&hold':>10}{'random':>9}"
          f"{'Sharpe':>8}{'trades':>8}{'train s':>9}")
    for r, reports in zip(results, report.segments, strict=True):
        seg, model = r.segment, reports[MODEL]
        trained = f"{stamp(int(bars.time[seg.train_first]))} to {stamp(int(bars.time[seg.train_end - 1]))}"
        tested = f"{stamp(int(bars.time[seg.first]))} to {stamp(int(bars.time[seg.last + 1]))}"
        print(f"{seg.index + 1:<8}{trained:<38}{tested:<38}"
              f"{model.total_return:>+9.2%}{reports[BUY_AND_HOLD].total_return:>+10.2%}"
              f"{reports[RANDOM].total_return:>+9.2%}{model.sharpe:>8.2f}{model.trades:>8}"
              f"{r.train_seconds:>9.0f}")
    if plot:
        print(f"plot written to {plot}")
