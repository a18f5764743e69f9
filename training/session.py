"""A training session as `tactical train` runs it: train, publish versions, stop cleanly on Ctrl-C.

Runs the same on one process and on every rank of a distributed job: each rank trains, rank 0
publishes model-store versions (ONNX artifacts + checkpoint) every `save_every` updates and at
the end, and prints the summary. The first Ctrl-C asks every rank to stop after the current
update (the stop is agreed over the ranks, then the model is published); a second one aborts.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.serving.model_store import ModelStore
from market.bars import Bars
from market.csv_loader import load_bars
from market.drift import reference_bins
from market.synthetic import configured, series_source
from tactical.config import Config, config_from_dict
from training.evaluation import PolicyScore
from training.mappo import TacticalMAPPOTrainer
from training.series import HOLDOUT
from training.versions import ensure_default_version, publish

log = logging.getLogger(__name__)


@dataclass
class SessionResult:
    first_update: int
    last_update: int
    interrupted: bool
    seconds: float
    versions: list[int] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    performance: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, PolicyScore] | None = None


class StopOnInterrupt:
    """While active, the first SIGINT only sets `requested`; the second raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopOnInterrupt:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupted: stopping after the current update and saving (Ctrl-C again to abort)")


def training_bars(cfg: Config, data: str | None, until_ms: int | None) -> Bars:
    """The bars to train on: a CSV or Parquet file or the configured synthetic series, cut before `until_ms`."""
    bars = load_bars(data) if data else configured(cfg.synthetic).bars
    if until_ms is not None:
        bars = bars[:int(np.searchsorted(bars.time, until_ms, side="left"))]
    return bars


def run_session(config: dict[str, Any], *, data: str | None = None, until_ms: int | None = None,
                updates: int | None = None, resume: str | None = None, save_every: int = 0, progress: bool = True,
                after_publish: Callable[[int], None] | None = None) -> SessionResult:
    """Train `updates` updates (default training.updates) and publish; see the module docstring.

    `until_ms`: train only on bars before this time (a backtest from then on is out of sample).
    `after_publish(version)` runs on rank 0 after each published version (`tactical train --push`).
    """
    cfg = config_from_dict(config)
    started = time.perf_counter()
    bars = training_bars(cfg, data, until_ms)
    trainer = TacticalMAPPOTrainer(cfg, bars=bars, progress=progress)
    split = trainer.series.split
    data_info = {"data": {"source": series_source(data, cfg.synthetic), "bars": len(bars),
                          "first_ms": int(bars.time[0]), "train_last_ms": int(bars.time[split - 1]),
                          "last_ms": int(bars.time[-1])}}
    if resume:
        trainer.load_checkpoint(resume)
    updates = cfg.training.updates if updates is None else updates
    first = trainer.updates_done + 1
    store = ModelStore(cfg.paths.model_store)
    if trainer.dist.is_main:
        ensure_default_version(store.root, cfg)  # every store holds the embedded default v0 beside what it trains
    origin = data or f"the synthetic series (seed {cfg.synthetic.seed})"
    source = (f"tactical train: {len(bars):,} bars of {origin}, seed {cfg.training.seed}, "
              f"{trainer.dist.world_size} rank(s)" + (f", resumed from {resume}" if resume else ""))
    result = SessionResult(first, first - 1, False, 0.0)
    reference = reference_bins(trainer.series.features[:split])  # what the coordinator's drift watch compares with

    def publish_version() -> None:
        if not trainer.dist.is_main:
            return
        version = publish(store, trainer.model, source=f"{source}, through update {trainer.updates_done}",
                          optimizer=trainer.optimizer, metrics=trainer.last_stats,
                          extra={"trainer": trainer.trainer_state()}, info=data_info,
                          value_norm=trainer.value_norm, feature_reference=reference)
        result.versions.append(version)
        log.info("published version %d (update %d) to %s", version, trainer.updates_done, store.root,
                 extra={"version": version, "update": trainer.updates_done})
        if after_publish is not None:
            after_publish(version)

    with StopOnInterrupt() as stop:
        def on_update(index: int, stats: dict[str, float]) -> bool:
            done_here = index - first + 1
            if save_every and done_here % save_every == 0 and done_here < updates and not stop.requested:
                publish_version()
            return not stop.requested

        trainer.train(updates, callback=on_update)
        result.interrupted = stop.requested
        publish_version()
    result.last_update = trainer.updates_done
    result.stats = trainer.last_stats
    result.performance = trainer.get_performance_stats()
    first_bar, last_bar = trainer.series.decision_bars(HOLDOUT)
    if trainer.dist.is_main and last_bar >= first_bar:
        result.evaluation = trainer.evaluate()
    result.seconds = time.perf_counter() - started
    if trainer.dist.is_main:
        print_summary(result, store.root)
    return result


def print_summary(result: SessionResult, store_root: object) -> None:
    p = result.performance
    stopped = " (stopped by Ctrl-C)" if result.interrupted else ""
    print(f"trained updates {result.first_update}-{result.last_update}{stopped} in {result.seconds:.1f} s: "
          f"{p['steps_per_second']:,.0f} env steps/s, update {p['update_ms_mean']:.0f} ms mean, "
          f"policy inference {p['inference_ms_mean']:.2f} ms mean / {p['inference_ms_p99']:.2f} ms p99 "
          f"(batch {p['inference_batch']})")
    if result.stats:
        s = result.stats
        print(f"last update: episode reward {s['episode_reward']:+.3f}, policy loss {s['policy_loss']:+.4f}, "
              f"value loss {s['value_loss']:.4f}, entropy {s['entropy']:.3f}, approx KL {s['approx_kl']:.5f}, "
              f"clip fraction {s['clip_fraction']:.3f}, explained variance {s['explained_variance']:.2f}")
    print(f"versions published to {store_root}: {', '.join(map(str, result.versions))}")
    if result.evaluation:
        e = result.evaluation
        print(f"held-out ({e['model'].bars:,} bars, same costs), total reward: "
              + ", ".join(f"{name} {score.total_reward:+.1f} ({score.trades} trades)" for name, score in e.items()))
