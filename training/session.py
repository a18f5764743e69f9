"""A training session as `tactical train` runs it: train, judge and publish candidates, stop cleanly on Ctrl-C.

Runs the same on one process and on every rank of a distributed job: each rank trains; every
`save_every` updates and at the end, rank 0 scores the model on the held-out tail and, as the
publish policy says (training/selection.py), publishes it as a model-store version (ONNX
artifacts + checkpoint + its score in version.json) or skips it; it prints the summary. The
first Ctrl-C asks every rank to stop after the current update (the stop is agreed over the
ranks, then the model is judged); a second one aborts. An early stop is agreed the same way.
"""

from __future__ import annotations

import datetime as dt
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
from tactical.errors import UserError
from training.mappo import TacticalMAPPOTrainer
from training.selection import IMPROVED, Candidate, Selection, describe, resolve_policy
from training.series import HOLDOUT
from training.versions import ensure_default_version, publish

log = logging.getLogger(__name__)


@dataclass
class SessionResult:
    first_update: int
    last_update: int
    interrupted: bool
    seconds: float
    policy: str  # the publish policy that ran: every or improved
    versions: list[int] = field(default_factory=list)  # published, in order
    candidates: list[Candidate] = field(default_factory=list)  # every save point's verdict, in order
    best: Candidate | None = None  # the candidate with the best held-out score, if one beat flat
    stopped_early: bool = False
    stats: dict[str, float] = field(default_factory=dict)
    performance: dict[str, float] = field(default_factory=dict)


class SelectionError(UserError, ValueError):
    """Settings under which candidates cannot be judged (no held-out bars to score them on)."""


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
        log.warning("interrupted: stopping after the current update, then judging and publishing it as the policy "
                    "says (Ctrl-C again to abort)")


def training_bars(cfg: Config, data: str | None, until_ms: int | None) -> Bars:
    """The bars to train on: a CSV or Parquet file or the configured synthetic series, cut before `until_ms`."""
    bars = load_bars(data) if data else configured(cfg.synthetic).bars
    if until_ms is not None:
        bars = bars[:int(np.searchsorted(bars.time, until_ms, side="left"))]
    return bars


def run_session(config: dict[str, Any], *, data: str | None = None, until_ms: int | None = None,
                updates: int | None = None, resume: str | None = None, save_every: int = 0, progress: bool = True,
                after_publish: Callable[[int], None] | None = None) -> SessionResult:
    """Train `updates` updates (default training.updates), judging and publishing candidates; see the module docstring.

    `until_ms`: train only on bars before this time (a backtest from then on is out of sample).
    `after_publish(version)` runs on rank 0 after each published version (`tactical train --push`);
    with it, publish policy `auto` is `improved`. Early stop (training.early_stop) needs `save_every`.
    """
    cfg = config_from_dict(config)
    started = time.perf_counter()
    bars = training_bars(cfg, data, until_ms)
    trainer = TacticalMAPPOTrainer(cfg, bars=bars, progress=progress)
    split = trainer.series.split
    data_info = {"data": {"source": series_source(data, cfg.synthetic), "bars": len(bars),
                          "first_ms": int(bars.time[0]), "train_last_ms": int(bars.time[split - 1]),
                          "last_ms": int(bars.time[-1])}}
    policy = resolve_policy(cfg.training.publish, pushing=after_publish is not None)
    first_bar, last_bar = trainer.series.decision_bars(HOLDOUT)
    scored = last_bar >= first_bar
    if not scored and (policy == IMPROVED or cfg.training.early_stop):
        needs = "publish policy improved" if policy == IMPROVED else "early stop"
        raise SelectionError(f"{needs} judges candidates on the held-out tail, and {len(bars):,} bars with "
                             f"training.holdout_fraction {cfg.training.holdout_fraction} leave no held-out bar to "
                             f"decide at: raise the fraction, or publish every candidate unjudged (--publish every)")
    if resume:
        trainer.load_checkpoint(resume)
    updates = cfg.training.updates if updates is None else updates
    first = trainer.updates_done + 1
    store = ModelStore(cfg.paths.model_store)
    selection = Selection(policy, cfg.training.early_stop)
    if trainer.dist.is_main:
        ensure_default_version(store.root, cfg)  # every store holds the embedded default v0 beside what it trains
        if resume and scored:
            selection.resume_from(trainer.updates_done, trainer.validate())
            _log_resumed(selection, trainer.updates_done)
    origin = data or f"the synthetic series (seed {cfg.synthetic.seed})"
    source = (f"tactical train: {len(bars):,} bars of {origin}, seed {cfg.training.seed}, "
              f"{trainer.dist.world_size} rank(s)" + (f", resumed from {resume}" if resume else ""))
    result = SessionResult(first, first - 1, False, 0.0, policy)
    reference = reference_bins(trainer.series.features[:split])  # what the coordinator's drift watch compares with

    def save_point() -> None:
        """Rank 0 scores the model on the held-out tail and publishes it if the policy says so."""
        if not trainer.dist.is_main:
            return
        candidate = selection.judge(trainer.updates_done, trainer.validate() if scored else None)
        _log_candidate(candidate)
        if not candidate.publish:
            return
        candidate.version = publish(store, trainer.model, source=f"{source}, through update {trainer.updates_done}",
                                    optimizer=trainer.optimizer, metrics=trainer.last_stats,
                                    extra={"trainer": trainer.trainer_state()},
                                    info={**data_info, **candidate.record(policy)},
                                    value_norm=trainer.value_norm, feature_reference=reference)
        result.versions.append(candidate.version)
        log.info("published version %d (update %d) to %s", candidate.version, trainer.updates_done, store.root,
                 extra={"version": candidate.version, "update": trainer.updates_done})
        if after_publish is not None:
            after_publish(candidate.version)

    with StopOnInterrupt() as stop:
        def on_update(index: int, stats: dict[str, float]) -> bool:
            done_here = index - first + 1
            if save_every and done_here % save_every == 0 and done_here < updates and not stop.requested:
                save_point()
            return not (stop.requested or selection.should_stop)

        trainer.train(updates, callback=on_update)
        result.interrupted, result.stopped_early = stop.requested, selection.should_stop
        if not result.stopped_early:  # else its save point judged the last model already
            save_point()
    result.last_update = trainer.updates_done
    result.candidates, result.best = selection.candidates, selection.best
    result.stats = trainer.last_stats
    result.performance = trainer.get_performance_stats()
    result.seconds = time.perf_counter() - started
    if trainer.dist.is_main:
        print_summary(result, store.root, selection)
    return result


def _log_resumed(selection: Selection, update: int) -> None:
    """What a resumed session's candidates are judged against: the model it resumed from, if that beats flat."""
    if selection.resumed is None:
        log.info("the resumed model (update %d) does not beat flat on the held-out bars: candidates are judged "
                 "against flat", update, extra={"update": update})
        return
    record = selection.resumed.validation.record()
    log.info("the resumed model (update %d), held out: %s; candidates are judged against it", update,
             describe(record), extra={"update": update, "validation_sharpe": record["model"]["sharpe"]})


def _log_candidate(candidate: Candidate) -> None:
    """One line per candidate: its held-out numbers against the baselines, and the verdict."""
    verdict = f"{candidate.reason}: {'published' if candidate.publish else 'skipped'}"
    if candidate.validation is None:
        log.info("update %d: %s", candidate.update, verdict, extra={"update": candidate.update})
        return
    record = candidate.validation.record()
    model = record["model"]
    log.info("update %d, held out: %s; %s", candidate.update, describe(record), verdict,
             extra={"update": candidate.update, "validation_sharpe": model["sharpe"],
                    "validation_return": model["total_return"], "validation_trades": model["trades"],
                    "beats_flat": record["beats_flat"], "beats_buy_and_hold": record["beats_buy_and_hold"],
                    "improved": candidate.improved, "publish": candidate.publish})


def print_summary(result: SessionResult, store_root: object, selection: Selection) -> None:
    p = result.performance
    stopped = (" (stopped by Ctrl-C)" if result.interrupted else
               f" (stopped early: {selection.stale} candidates in a row without held-out improvement)"
               if result.stopped_early else "")
    print(f"trained updates {result.first_update}-{result.last_update}{stopped} in {result.seconds:.1f} s: "
          f"{p['steps_per_second']:,.0f} env steps/s, update {p['update_ms_mean']:.0f} ms mean, "
          f"policy inference {p['inference_ms_mean']:.2f} ms mean / {p['inference_ms_p99']:.2f} ms p99 "
          f"(batch {p['inference_batch']})")
    if result.stats:
        s = result.stats
        print(f"last update: episode reward {s['episode_reward']:+.3f}, policy loss {s['policy_loss']:+.4f}, "
              f"value loss {s['value_loss']:.4f}, entropy {s['entropy']:.3f}, approx KL {s['approx_kl']:.5f}, "
              f"clip fraction {s['clip_fraction']:.3f}, explained variance {s['explained_variance']:.2f}")
    scored = [c for c in result.candidates if c.validation is not None]
    if scored:
        v = scored[0].validation
        print(f"held-out validation: {v.model.bars:,} bars from {_utc(v.first_ms)} to {_utc(v.last_ms)} UTC, "
              f"net of {v.transaction_cost * 1e4:g} bp per unit traded, Sharpe annualized at "
              f"{v.model.periods_per_year:,.0f} bars a year; {len(scored)} candidate(s) scored")
        if result.best is not None:
            print(f"best: update {result.best.update} (v{result.best.version}), "
                  f"{describe(result.best.validation.record())}")
        elif selection.resumed is not None:
            print(f"best: none; no candidate beat the resumed model (update {selection.resumed.update}, "
                  f"{describe(selection.resumed.validation.record())})")
        else:
            print("best: none; no candidate beat flat (always Hold) on the held-out bars")
    else:
        print("held-out validation: none (no held-out bars: training.holdout_fraction)")
    published = ", ".join(f"v{c.version} (update {c.update})" for c in result.candidates if c.version is not None)
    print(f"published to {store_root} (publish policy {result.policy}): {published or 'nothing'}")
    skipped: dict[str, list[int]] = {}
    for c in result.candidates:
        if not c.publish:
            skipped.setdefault(c.reason, []).append(c.update)
    if skipped:
        print("skipped: " + "; ".join(f"update{'s' if len(u) > 1 else ''} {', '.join(map(str, u))}: {reason}"
                                      for reason, u in skipped.items()))


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M")
