"""`tactical backtest`: decisions at every bar, held to the next, against buy-and-hold, flat and random."""

from __future__ import annotations

import argparse

from tactical_engine.commands import CliError, add_config_option, require_range, version_number


def add_scoring_options(p: argparse.ArgumentParser) -> None:
    """--fill and --periods-per-year, as backtest and evaluate spell them."""
    p.add_argument("--fill", choices=("close", "next-open"), default="close",
                   help="fill each decision at the close of the bar it was taken at (default; what training "
                        "assumes) or at the next bar's open (a decision that needs time to reach the market)")
    p.add_argument("--periods-per-year", type=float, metavar="N",
                   help="bars a year to annualize the Sharpe ratio with (default: read off the series, bar count "
                        "over calendar span; give it for a series of only a few weeks)")


def ensure_version_zero(store, cfg) -> None:
    """Write the embedded default (v0) into a model store without it, so that it can be scored like any version."""
    if 0 not in store.versions():
        from training.versions import ensure_default_version

        ensure_default_version(store.root, cfg)


def annual_text(annual: float | None, width: int) -> str:
    """An annual return for a table: '-' for spans under a year, '>9999%' past that."""
    if annual is None:
        return f"{'-':>{width}}"
    return f"{annual:>{width}.1%}" if abs(annual) < 1e4 else f"{'>9999%':>{width}}"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backtest", help="walk bars in time order, decide at every bar, report returns and risk",
                       description="Walk the bars in time order, take the engine's decision at every bar and hold "
                                   "the position until the next bar, filled at the decision bar's close or the "
                                   "next bar's open (--fill), with transaction costs (training."
                                   "transaction_cost). Reports total return, annual return (spans of a year or "
                                   "more), annualized Sharpe (with the bars the series has per year: bar count "
                                   "over calendar span; --periods-per-year overrides), max drawdown, win rate per "
                                   "trade, trades, exposure and turnover, next to buy-and-hold, always-flat and "
                                   "random votes. "
                                   "Decisions come from the in-process engine (a model-store version's ONNX actors "
                                   "and the serving rule) or, with --target, from a running cluster over gRPC. "
                                   "Train with --until DATE and backtest --from DATE for out-of-sample results.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="FILE",
                     help="bars from a CSV file (pandas' to_csv() layout too) or a Parquet file (needs pyarrow)")
    src.add_argument("--synthetic", action="store_true", help="the synthetic series of the config's synthetic: section")
    p.add_argument("--from", dest="from_", metavar="TIME", help="first decision bar at or after this time (ISO 8601)")
    p.add_argument("--to", metavar="TIME", help="last decision bar at or before this time (ISO 8601)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", type=version_number,
                       help="model-store version to run in process (default: the newest; 0 is the embedded "
                            "default, written into the store if missing)")
    which.add_argument("--target", metavar="HOST:PORT",
                       help="ask this running coordinator instead (its active version), sending bars over gRPC "
                            "on instruments backtest-1..N. They are marked as a backtest's: audited as such and "
                            "kept out of what judges versions live (live scores, a shadow's record, the guard, "
                            "drift, the promotion gate's evaluation set)")
    p.add_argument("--streams", type=int, default=4, help="concurrent gRPC streams with --target (default 4)")
    p.add_argument("--as-live", action="store_true",
                   help="with --target: send the bars as live traffic, judged like the market's (a staging "
                        "cluster fed a recorded stream: its live scores, shadow, guard and gate see them)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-votes baseline (default 0)")
    add_scoring_options(p)
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw equity curves and positions (needs matplotlib; .svg, .pdf and the like work too)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_config_option(p)
    p.set_defaults(handler=run)


_FILL_WORDS = {"close": "decision bar's close", "next-open": "next bar's open"}


def _time(text: str | None, flag: str) -> int | None:
    from market.csv_loader import parse_time_ms

    if text is None:
        return None
    try:
        return parse_time_ms(text)
    except ValueError as exc:
        raise CliError(f"{flag}: {exc}") from None


def stamp(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M")


def _sample_notes(store, versions: dict[int, int], source: str, first_ms: int) -> list[str]:
    """In or out of sample, per model version used, from what the version recorded of its training bars."""
    notes, stored = [], set(store.versions())
    for version in sorted(versions):
        if version not in stored:
            notes.append(f"version {version} is not in the local model store {store.root}: cannot tell whether "
                         f"these bars are in or out of its sample")
            continue
        trained = store.info(version).get("data", {})
        recorded = trained.get("source")
        # versions trained before synthetic series were told apart recorded just "synthetic"
        same_bars = recorded == source or (recorded == "synthetic" and source.startswith("synthetic"))
        if not trained:  # the embedded default, or published without a record of its bars
            continue
        if not same_bars:
            notes.append(f"version {version} was trained on other bars ({recorded}): "
                         f"neither in nor out of sample in the time-split sense")
        elif trained.get("train_last_ms") is not None:
            train_last = int(trained["train_last_ms"])
            if first_ms <= train_last:
                notes.append(f"WARNING: in sample. Version {version} trained on bars through {stamp(train_last)}; "
                             f"backtest --from after that for out-of-sample results")
            else:
                notes.append(f"out of sample: version {version} trained on bars through {stamp(train_last)}")
    return notes


def run(args: argparse.Namespace) -> int:
    import math

    import numpy as np

    from agents.serving.model_store import ModelStore
    from market.csv_loader import load_bars
    from market.synthetic import configured, series_source
    from tactical.config import load_config
    from tactical.progress import progress_bar
    from tactical_engine.backtest import (
        BacktestResult,
        check_plot_path,
        decision_bars,
        local_decisions,
        plot,
        remote_decisions,
        score,
    )

    require_range("--version", args.version, 0)
    require_range("--streams", args.streams, 1)
    require_range("--seed", args.seed, 0)
    require_range("--periods-per-year", args.periods_per_year, 1)
    if args.as_live and not args.target:
        raise CliError("--as-live is for bars sent to a cluster: give --target HOST:PORT")
    if args.plot:
        check_plot_path(args.plot)
    from_ms, to_ms = _time(args.from_, "--from"), _time(args.to, "--to")
    if from_ms is not None and to_ms is not None and from_ms > to_ms:
        raise CliError(f"--from {args.from_} is after --to {args.to}")
    cfg = load_config(args.config)
    bars = load_bars(args.data) if args.data else configured(cfg.synthetic).bars
    first, last = decision_bars(bars, cfg, from_ms, to_ms)
    result = BacktestResult({}, first, last, bars, np.zeros(0))
    notes = []
    store = ModelStore(cfg.paths.model_store)
    if args.target:
        with progress_bar(last - first + 1, "decisions", "bar", enabled=not args.json) as bar:
            result.positions = remote_decisions(args.target, cfg, bars, first, last, result, args.streams, bar.update,
                                                as_live=args.as_live)
        source = f"cluster {args.target}, version(s) {dict(result.versions)}"
    else:
        from tactical_engine.engine import Engine

        if args.version == 0:
            ensure_version_zero(store, cfg)
        version = args.version if args.version is not None else store.latest()
        if version is None:
            raise CliError(f"no version in the model store {store.root}: train one (tactical train), or score the "
                           f"untrained embedded default with --version 0")
        if version not in store.versions():
            raise CliError(f"no version {version} in the model store {store.root} (train one: tactical train)")
        result.positions = local_decisions(Engine(store, version, cfg), bars, cfg, first, last)
        result.versions[version] = last - first + 1
        source = f"in-process engine, model version {version}"
    notes += _sample_notes(store, result.versions, series_source(args.data, cfg.synthetic), int(bars.time[first]))
    score(result, cfg, args.seed, fill=args.fill, periods_per_year=args.periods_per_year)
    if args.plot:
        plot(result, args.plot)
        notes.append(f"plot written to {args.plot}")
    if args.json:
        from tactical_engine.json_output import print_json

        print_json({"source": source, "from": stamp(int(bars.time[first])), "to": stamp(int(bars.time[last])),
                    "decisions": last - first + 1, "fill": args.fill,
                    "reports": [r.summary() for r in result.reports.values()], "notes": notes})
        return 0
    print(f"backtest over {last - first + 1:,} bars, {stamp(int(bars.time[first]))} to "
          f"{stamp(int(bars.time[last + 1]))} UTC; decisions from the {source}; "
          f"cost {cfg.training.transaction_cost:g} per unit traded, fills at the {_FILL_WORDS[args.fill]}; "
          f"Sharpe annualized with {next(iter(result.reports.values())).periods_per_year:,.0f} bars a year")
    print(f"{'policy':<14}{'total':>9}{'annual':>10}{'Sharpe':>8}{'max DD':>8}{'win rate':>9}{'trades':>8}"
          f"{'exposure':>9}{'turnover':>9}")
    for r in result.reports.values():
        annual = annual_text(r.annual_return, 10)
        win = f"{r.win_rate:>9.1%}" if math.isfinite(r.win_rate) else f"{'-':>9}"
        print(f"{r.name:<14}{r.total_return:>9.2%}{annual}{r.sharpe:>8.2f}{r.max_drawdown:>8.2%}{win}{r.trades:>8}"
              f"{r.exposure:>9.1%}{r.turnover:>9.3f}")
    if result.latencies_ms:
        lat = np.asarray(result.latencies_ms)
        print(f"served decisions: p50 {np.percentile(lat, 50):.2f} ms, p99 {np.percentile(lat, 99):.2f} ms "
              f"(client-measured), {result.degraded} degraded")
    for note in notes:
        print(note)
    return 0
