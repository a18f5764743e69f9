"""`tactical tune`: an Optuna study over the card's hyperparameters; writes the best as a config file."""

from __future__ import annotations

import argparse
from pathlib import Path

from tactical_engine.commands import (
    CliError,
    add_config_option,
    add_logging_options,
    require_range,
    setup_command_logging,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="search hyperparameters with Optuna and write the best as a config file",
        description="Run N Optuna trials over learning rate, gamma, GAE lambda, clip, entropy coefficient, value "
                    "loss coefficient, dropout and temperature init. Each trial trains --updates updates; a median "
                    "pruner stops trials whose episode reward trails. The study is stored (SQLite by default) and "
                    "resumes on the next run; workers on several machines can share one study through a "
                    "PostgreSQL URL or a journal file. The best trial is written as a complete config YAML.",
    )
    add_config_option(p)
    p.add_argument("--trials", type=int, default=10, metavar="N", help="trials to run in this process (default 10)")
    p.add_argument("--storage", metavar="URL",
                   help="study storage: a database URL (sqlite:///..., postgresql://...), a journal file "
                        "(*.log, *.journal) or an SQLite file path (overrides paths.study_storage)")
    p.add_argument("--study", default="tactical-marl", metavar="NAME",
                   help="study name; an existing study of that name is resumed (default tactical-marl)")
    p.add_argument("--updates", type=int, metavar="N", help="updates per trial (overrides training.updates)")
    p.add_argument("--data", metavar="FILE",
                   help="tune on the bars of this CSV or Parquet file (overrides the synthetic series of "
                        "the config's synthetic: section)")
    p.add_argument("--out", metavar="YAML",
                   help="where to write the best config (default: <study>.best.yaml beside paths.study_storage)")
    p.add_argument("--startup-trials", type=int, default=3, metavar="N",
                   help="trials that run to the end before the median pruner acts (default 3)")
    p.add_argument("--warmup-updates", type=int, default=2, metavar="N",
                   help="updates of each trial the pruner never cuts (default 2)")
    add_logging_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tactical.config import load_config

    require_range("--trials", args.trials, 1)
    require_range("--updates", args.updates, 1)
    require_range("--startup-trials", args.startup_trials, 0)
    require_range("--warmup-updates", args.warmup_updates, 0)
    overrides: dict = {}
    if args.updates is not None:
        overrides["training"] = {"updates": args.updates}
    if args.storage:
        overrides["paths"] = {"study_storage": args.storage}
    cfg = load_config(args.config, overrides)
    setup_command_logging(args, "tune")

    import optuna
    import sqlalchemy.exc

    from market.csv_loader import load_bars
    from training.series import TradingSeries
    from training.tuning import run_study, write_best_config

    series = TradingSeries.from_bars(load_bars(args.data), cfg) if args.data else TradingSeries.synthetic(cfg)
    storage = cfg.paths.study_storage
    out = Path(args.out) if args.out else _default_out(storage, args.study)
    try:
        study = run_study(cfg, trials=args.trials, storage=storage, study_name=args.study,
                          updates=cfg.training.updates, series=series, startup_trials=args.startup_trials,
                          warmup_updates=args.warmup_updates)
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
        raise CliError(f"study storage {storage}: {str(exc).splitlines()[0]}") from None
    except ImportError as exc:  # a database URL whose driver is not installed
        raise CliError(f"study storage {storage}: {str(exc).splitlines()[0]} (a PostgreSQL URL needs a driver: "
                       f"pip install psycopg2-binary)") from None
    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not finished:
        raise CliError(f"study '{args.study}' has no completed trial yet (all pruned or failed): run more trials")
    write_best_config(study, cfg, out)
    best = study.best_trial
    print(f"study '{args.study}' in {storage}: {len(study.trials)} trials, {len(finished)} completed; "
          f"best trial {best.number}, objective {best.value:+.4f}")
    print(f"best parameters written to {out} (use: tactical train --config {out})")
    return 0


def _default_out(storage: str, study: str) -> Path:
    directory = Path(storage).parent if "://" not in storage else Path(".")
    return directory / f"{study}.best.yaml"
