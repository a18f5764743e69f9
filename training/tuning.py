"""Hyperparameter search with Optuna over the card's hyperparameters.

Each trial trains a fresh system for a fixed number of updates with sampled learning rate,
gamma, GAE lambda, clip, entropy coefficient, value loss coefficient, dropout and temperature
init, reporting the episode reward after every update to a median pruner. The objective is the
mean training episode reward of the trial's last updates: the held-out tail stays unseen, for
the final evaluation. Studies live in shared storage (SQLite by default; a PostgreSQL URL or a
journal file lets workers on several machines run one study) and resume where they stopped.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml

from tactical.atomic import atomic_write_text
from tactical.config import Config
from training.mappo import TacticalMAPPOTrainer
from training.series import TradingSeries

log = logging.getLogger(__name__)

# The card's entropy coefficient decays 10:1 (0.01 -> 0.001); trials keep that ratio.
ENTROPY_DECAY = 0.1
OBJECTIVE_WINDOW = 3  # the objective averages the episode reward of this many last updates


def suggest_overrides(trial: optuna.Trial) -> dict[str, dict[str, Any]]:
    """One sample of the search space, as nested config overrides."""
    entropy = trial.suggest_float("entropy_coef_start", 1e-4, 5e-2, log=True)
    return {
        "training": {
            "learning_rate": trial.suggest_float("learning_rate", 3e-5, 1e-3, log=True),
            "gamma": trial.suggest_float("gamma", 0.9, 0.999),
            "gae_lambda": trial.suggest_float("gae_lambda", 0.8, 0.99),
            "clip_epsilon": trial.suggest_float("clip_epsilon", 0.1, 0.35),
            "entropy_coef_start": entropy,
            "entropy_coef_end": entropy * ENTROPY_DECAY,
            "value_loss_coef": trial.suggest_float("value_loss_coef", 0.25, 1.0),
        },
        "model": {
            "dropout": trial.suggest_float("dropout", 0.0, 0.4),
            "temperature_init": trial.suggest_float("temperature_init", 0.5, 2.0),
        },
    }


def overrides_from_params(params: dict[str, float]) -> dict[str, dict[str, Any]]:
    """The overrides of a finished trial, rebuilt from its recorded parameters."""
    return suggest_overrides(optuna.trial.FixedTrial(params))


def open_storage(spec: str) -> str | optuna.storages.BaseStorage:
    """A database URL as is; a path ending in .log or .journal as a journal file; any other path as SQLite."""
    if "://" in spec:
        return spec
    path = Path(spec).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".log", ".journal"):
        backend = optuna.storages.journal.JournalFileBackend(str(path))
        return optuna.storages.journal.JournalStorage(backend)
    return f"sqlite:///{path}"


def make_objective(base: Config, series: TradingSeries, updates: int,
                   progress: bool = True) -> Callable[[optuna.Trial], float]:
    """The objective: train `updates` updates with the trial's hyperparameters, report, maybe prune."""

    def objective(trial: optuna.Trial) -> float:
        cfg = base.replace(**suggest_overrides(trial))
        trainer = TacticalMAPPOTrainer(cfg, series=series, progress=progress, log_metrics=False)
        trainer.progress_label = f"trial {trial.number}"
        rewards: list[float] = []
        pruned = False

        def report(update: int, stats: dict[str, float]) -> bool:
            nonlocal pruned
            rewards.append(stats["episode_reward"])
            trial.report(sum(rewards[-OBJECTIVE_WINDOW:]) / len(rewards[-OBJECTIVE_WINDOW:]), step=update)
            pruned = trial.should_prune()
            return not pruned

        trainer.train(updates, callback=report)
        if pruned:
            raise optuna.TrialPruned(f"pruned after update {len(rewards)}")
        return sum(rewards[-OBJECTIVE_WINDOW:]) / len(rewards[-OBJECTIVE_WINDOW:])

    return objective


def run_study(base: Config, *, trials: int, storage: str, study_name: str, updates: int,
              series: TradingSeries, startup_trials: int = 3, warmup_updates: int = 2,
              progress: bool = True) -> optuna.Study:
    """Create or resume the study and run `trials` more trials in this process."""
    # ERROR: a trial stopped by Ctrl-C would otherwise log a traceback; `announce` reports every trial.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(
        storage=open_storage(storage), study_name=study_name, direction="maximize", load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_updates),
    )

    def announce(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = f"{trial.value:+.4f}" if trial.value is not None else "-"
        log.info("trial %d: %s, objective %s, %s", trial.number, trial.state.name.lower(), value,
                 ", ".join(f"{k}={v:.4g}" for k, v in trial.params.items()),
                 extra={"trial": trial.number, "state": trial.state.name.lower(), "objective": trial.value,
                        "params": trial.params})

    study.optimize(make_objective(base, series, updates, progress), n_trials=trials, callbacks=[announce])
    return study


def write_best_config(study: optuna.Study, base: Config, path: str | Path) -> Config:
    """Write the base config with the best trial's hyperparameters as a complete YAML (atomically)."""
    best = study.best_trial
    cfg = base.replace(**overrides_from_params(best.params))
    header = (f"# Best parameters of Optuna study '{study.study_name}': trial {best.number}, "
              f"objective {best.value:+.6f} (mean episode reward of the last {OBJECTIVE_WINDOW} updates).\n"
              f"# Written {dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ}. "
              f"Use it with: tactical train --config {Path(path).name}\n")
    atomic_write_text(path, header + yaml.safe_dump(cfg.shareable_dict(), sort_keys=False))
    return cfg
