"""Walk-forward evaluation: train on a window of bars, decide on the bars after it, move on, stitch.

One time split decides what a user believes on one lucky or unlucky cut; walk-forward asks the
question again and again. Segment k trains on bars [k * step, k * step + train_bars) and decides
at the test_bars decision bars after them: the first is the window's last bar, whose return
(to the first bar after the window) is the first one no training reward saw, the split rule of
training.series. Features are causal, so decisions never see a later bar; the model of a segment
is either fresh (trained from its initial weights on its window alone) or continued (trained on
from the previous segment's model, which only saw earlier bars). Each segment's model is
published into the run's own model store and decides through the in-process engine (ONNX
actors and the serving rule), so what is scored is what would be served.

The out-of-sample segments are scored like a backtest (market.performance: same fills, the
training costs, the bars the whole series has per year), next to buy-and-hold, flat and random
votes on the same bars; each segment starts flat. Stitched together they give one equity
curve per policy, and a block bootstrap of the stitched per-bar P&L gives intervals for each
Sharpe ratio and for its difference to buy-and-hold.

A run lives in a directory: run.json (what identifies it: the data, the windows, the training
settings), models/ (v0, then segment k's model as version k + 1) and segments/ (each finished
segment's decisions, written atomically). Started again with the same settings it goes on from
the last finished segment; scoring options (fills, annualization, bootstrap) can change freely.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.serving.model_store import ModelStore
from coordinator.aggregation import AggregationRule
from market.bars import Bars
from market.bootstrap import SharpeIntervals, sharpe_intervals
from market.performance import BacktestReport, score_range, stitch
from market.windows import decision_range
from tactical.atomic import atomic_write_text, discard_tree
from tactical.config import Config
from tactical.errors import UserError
from tactical_engine.backtest import (
    BUY_AND_HOLD,
    MODEL,
    baseline_positions,
    local_decisions,
    pyplot,
    save_figure,
)
from tactical_engine.engine import Engine

RUN_FILE = "run.json"
# The config sections that change what a segment's model learns or decides: a run resumed under others is refused.
_TRAINING_SECTIONS = ("features", "model", "training", "aggregation")


class WalkForwardError(UserError, ValueError):
    """Walk-forward settings that cannot work on these bars, or a run directory of another run."""


@dataclass(frozen=True)
class Segment:
    index: int
    train_first: int  # first bar of the training window
    train_end: int  # one past its last bar
    first: int  # first decision bar: train_end - 1, whose return is the first after the window
    last: int  # last decision bar, inclusive

    @property
    def bars(self) -> int:
        return self.last - self.first + 1


def plan_segments(n_bars: int, cfg: Config, train_bars: int, test_bars: int, step: int) -> list[Segment]:
    """Every segment that fits the bars; WalkForwardError saying what does not fit."""
    need_train = cfg.features.min_bars + cfg.training.episode_length
    if train_bars < need_train:
        raise WalkForwardError(f"--train-bars {train_bars:,} is too few: one {cfg.training.episode_length}-step "
                               f"episode after {cfg.features.min_bars} bars of history needs {need_train}")
    if step < test_bars:
        raise WalkForwardError(f"--step {step:,} is below --test-bars {test_bars:,}: test segments would overlap "
                               f"and a bar would be scored twice")
    if train_bars + test_bars > n_bars:
        raise WalkForwardError(f"--train-bars {train_bars:,} and --test-bars {test_bars:,} need "
                               f"{train_bars + test_bars:,} bars (a window and the bars after it), the data has "
                               f"{n_bars:,}")
    segments = []
    for index, start in enumerate(range(0, n_bars - train_bars - test_bars + 1, step)):
        end = start + train_bars
        first, last = decision_range(n_bars, cfg.features.min_bars, first=end - 1, last=end + test_bars - 2)
        segments.append(Segment(index, start, end, first, last))
    return segments


@dataclass(frozen=True)
class SegmentResult:
    segment: Segment
    version: int  # in the run's model store
    positions: np.ndarray  # the model's, at decision bars first..last
    train_seconds: float
    updates_done: int  # the model's updates over its life (more than --updates when continued)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in d.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def bars_fingerprint(bars: Bars) -> str:
    """sha256 of every bar's time and values: a run resumed on other bars is refused."""
    digest = hashlib.sha256()
    for column in (bars.time, bars.open, bars.high, bars.low, bars.close, bars.volume):
        digest.update(np.ascontiguousarray(column).tobytes())
    return digest.hexdigest()


class WalkForwardRun:
    """A run directory: its identity (run.json), the model store of its segments, their finished decisions."""

    def __init__(self, directory: str | Path, cfg: Config, bars: Bars, *, source: str, train_bars: int,
                 test_bars: int, step: int, updates: int, continued: bool, restart: bool = False):
        self.dir = Path(directory)
        self.cfg, self.bars = cfg, bars
        self.segments = plan_segments(len(bars), cfg, train_bars, test_bars, step)
        self.updates, self.continued = updates, continued
        self.identity = {
            "source": source, "bars": len(bars), "bars_sha256": bars_fingerprint(bars),
            "train_bars": train_bars, "test_bars": test_bars, "step": step, "updates": updates, "continued": continued,
            "config": {section: cfg.to_dict()[section] for section in _TRAINING_SECTIONS},
        }
        del self.identity["config"]["training"]["updates"]  # the run's own "updates" above
        for key in ("publish", "early_stop"):  # how `tactical train` picks its versions: nothing a segment learns
            del self.identity["config"]["training"][key]
        self.identity = json.loads(json.dumps(self.identity))  # as run.json holds it (lists, not tuples)
        if restart and self.dir.exists():
            discard_tree(self.dir)
        self._check_identity()
        self.store = ModelStore(self.dir / "models")

    def _check_identity(self) -> None:
        path = self.dir / RUN_FILE
        try:
            stored = json.loads(path.read_text())
        except FileNotFoundError:
            if self.dir.exists() and any(self.dir.iterdir()):
                raise WalkForwardError(f"{self.dir} is not empty and holds no walk-forward run ({RUN_FILE} missing): "
                                       f"give another --run-dir") from None
            atomic_write_text(path, json.dumps(self.identity, indent=2, sort_keys=True))
            return
        except (OSError, ValueError) as exc:
            raise WalkForwardError(f"cannot read {path}: {exc}") from None
        ours, theirs = _flat(self.identity), _flat(stored)
        differ = [key for key in sorted(set(ours) | set(theirs)) if ours.get(key) != theirs.get(key)]
        if differ:
            shown = "; ".join(f"{key}: {theirs.get(key)!r} there, {ours.get(key)!r} now" for key in differ[:3])
            raise WalkForwardError(f"{self.dir} holds a run with other settings ({shown}"
                                   f"{'; ...' if len(differ) > 3 else ''}): give another --run-dir, or --restart to "
                                   f"discard it")

    def _segment_file(self, index: int) -> Path:
        return self.dir / "segments" / f"segment-{index:04d}.json"

    def finished(self) -> dict[int, SegmentResult]:
        """The segments already decided (a stopped run goes on after the last of them)."""
        done = {}
        for segment in self.segments:
            try:
                record = json.loads(self._segment_file(segment.index).read_text())
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                raise WalkForwardError(f"cannot read {self._segment_file(segment.index)}: {exc}; --restart to discard "
                                       f"the run") from None
            positions = np.asarray(record["positions"], dtype=np.float64)
            if positions.shape != (segment.bars,):
                raise WalkForwardError(f"{self._segment_file(segment.index)} holds {positions.size} decisions, "
                                       f"the segment has {segment.bars}: --restart to discard the run")
            done[segment.index] = SegmentResult(segment, int(record["version"]), positions,
                                                float(record["train_seconds"]), int(record["updates_done"]))
        return done

    def run_segment(self, segment: Segment, on_update: Callable[[int], None] | None = None) -> SegmentResult:
        """Train the segment's model on its window (or take it from the store: a run stopped after publishing),
        decide at its test bars, record the decisions atomically."""
        version = segment.index + 1
        started = time.perf_counter()
        if version not in self.store.versions():
            self._train(segment, version, on_update)
        train_seconds = time.perf_counter() - started
        engine = Engine(self.store, version, self.cfg)
        positions = local_decisions(engine, self.bars, self.cfg, segment.first, segment.last)
        updates_done = int(self.store.info(version).get("updates_done", self.updates))
        atomic_write_text(self._segment_file(segment.index), json.dumps({
            "segment": asdict(segment), "version": version, "train_seconds": round(train_seconds, 3),
            "updates_done": updates_done, "positions": positions.astype(int).tolist()}))
        return SegmentResult(segment, version, positions, train_seconds, updates_done)

    def _train(self, segment: Segment, version: int, on_update: Callable[[int], None] | None) -> None:
        from training.mappo import TacticalMAPPOTrainer
        from training.versions import ensure_default_version, publish

        # The whole window is training data (its test bars come after it), and the run keeps its own metrics.
        cfg = self.cfg.replace(training={"holdout_fraction": 0.0}, paths={"metrics": str(self.dir / "metrics.jsonl")})
        window = self.bars[segment.train_first:segment.train_end]
        trainer = TacticalMAPPOTrainer(cfg, bars=window, progress=False)
        if self.continued and segment.index > 0:
            trainer.load_checkpoint(self.store.path(version - 1))
        trainer.train(self.updates, callback=None if on_update is None else lambda i, _: on_update(i))
        ensure_default_version(self.store.root, cfg)
        last_ms = int(self.bars.time[segment.train_end - 1])
        publish(self.store, trainer.model, version=version, optimizer=trainer.optimizer, metrics=trainer.last_stats,
                extra={"trainer": trainer.trainer_state()}, value_norm=trainer.value_norm,
                source=f"walk-forward segment {segment.index}: {'continued' if self.continued else 'fresh'}, "
                       f"through update {trainer.updates_done}",
                info={"updates_done": trainer.updates_done,
                      "data": {"source": self.identity["source"], "bars": len(window),
                               "first_ms": int(self.bars.time[segment.train_first]), "train_last_ms": last_ms,
                               "last_ms": last_ms}})


@dataclass(frozen=True)
class WalkForwardReport:
    segments: list[dict[str, BacktestReport]]  # per segment, per policy
    stitched: dict[str, BacktestReport]  # per policy, over every segment's bars in order
    intervals: SharpeIntervals  # of the stitched per-bar P&L; differences to buy-and-hold


def score_walk_forward(results: list[SegmentResult], bars: Bars, cfg: Config, *, fill: str, periods_per_year: float,
                       seed: int, confidence: float = 0.95, samples: int = 2000,
                       block: int | None = None) -> WalkForwardReport:
    """Every segment and the stitched series: the model and the baselines (random votes seeded per segment
    from `seed`), the training costs, the given fill; bootstrap intervals of the stitched Sharpe ratios."""
    rule = AggregationRule.from_config(cfg.aggregation)
    per_segment = []
    for r in results:
        candidates = baseline_positions(r.positions, rule, np.random.default_rng([seed, r.segment.index]))
        per_segment.append(score_range(bars, r.segment.first, r.segment.last, candidates,
                                       cfg.training.transaction_cost, fill, periods_per_year))
    stitched = {name: stitch(name, [s[name] for s in per_segment], periods_per_year) for name in per_segment[0]}
    intervals = sharpe_intervals({name: report.pnl for name, report in stitched.items()}, periods_per_year,
                                 reference=BUY_AND_HOLD, confidence=confidence, samples=samples, block=block, seed=seed)
    return WalkForwardReport(per_segment, stitched, intervals)



def plot_walk_forward(report: WalkForwardReport, results: list[SegmentResult], bars: Bars, path: str) -> None:
    """The stitched equity curves of every policy, segment starts marked, and the model's positions, as an image."""
    import datetime as dt

    plt = pyplot()
    times = [dt.datetime.fromtimestamp(t / 1000, tz=dt.UTC)
             for r in results for t in bars.time[r.segment.first + 1:r.segment.last + 2]]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for name, stitched in report.stitched.items():
        ci = report.intervals.sharpe[name]
        top.plot(times, stitched.equity, linewidth=1.2 if name == MODEL else 0.8,
                 label=f"{name} ({stitched.total_return:+.1%}, Sharpe {ci.estimate:.2f} [{ci.low:.2f}, {ci.high:.2f}])")
    for r in results[1:]:
        start = dt.datetime.fromtimestamp(bars.time[r.segment.first + 1] / 1000, tz=dt.UTC)
        for axis in (top, bottom):
            axis.axvline(start, color="grey", linewidth=0.5, linestyle=":")
    top.set_ylabel("equity, out of sample (start = 1)")
    top.set_title(f"walk-forward: {len(results)} segments stitched; dotted lines: a new segment's model takes over")
    top.legend(loc="best", fontsize=8)
    top.grid(alpha=0.3)
    bottom.step(times, np.concatenate([r.positions for r in results]), where="pre", linewidth=0.6)
    bottom.set_ylabel("model position")
    bottom.set_yticks([-1, 0, 1], ["short", "flat", "long"])
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
