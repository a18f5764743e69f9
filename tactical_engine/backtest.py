"""Backtests: walk the bars in time order, take the engine's decision at every bar, score it.

Decisions come from the in-process engine (the coordinator's path without the network: a
version's ONNX actors and the same rule) or from a running cluster over gRPC, sending each
bar's trailing bars so that the served path itself, feature computation included, is what
gets tested. A decision at bar t sets the position held to bar t + 1, filled at bar t's close or
bar t + 1's open (market.performance). The model is scored side by side with buy-and-hold,
always-flat and random votes, on the same bars, fills and costs, annualized with the bars the
whole series has per year.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coordinator.aggregation import AggregationRule
from market.bars import Bars
from market.features import compute_features
from market.performance import FILL_CLOSE, BacktestReport, bars_per_year, score_range
from market.windows import all_windows, decision_range
from tactical.actions import Action, to_positions
from tactical.atomic import atomic_open
from tactical.config import Config
from tactical.errors import UserError
from tactical_engine.engine import Engine

MODEL, BUY_AND_HOLD, FLAT, RANDOM = "model", "buy and hold", "flat", "random votes"


class BacktestError(UserError, ValueError):
    """A backtest that cannot run (no bars in the range, too little history...)."""


@dataclass
class BacktestResult:
    reports: dict[str, BacktestReport]
    first_bar: int
    last_bar: int  # inclusive: the last decision bar
    bars: Bars
    positions: np.ndarray  # the model's
    versions: Counter = field(default_factory=Counter)  # model version -> decisions
    latencies_ms: list[float] = field(default_factory=list)  # remote only, client-measured
    degraded: int = 0


def decision_bars(bars: Bars, cfg: Config, from_ms: int | None, to_ms: int | None) -> tuple[int, int]:
    """First and last bar (inclusive) to decide at within --from/--to (market.windows.decision_range)."""
    n = len(bars)
    after = 0 if from_ms is None else int(np.searchsorted(bars.time, from_ms))
    until = None if to_ms is None else int(np.searchsorted(bars.time, to_ms, side="right")) - 1
    first, last = decision_range(n, cfg.features.min_bars, first=after, last=until)
    if last < first:
        raise BacktestError(f"no bar to decide at: {n} bars, a decision needs {cfg.features.min_bars} bars of "
                            f"history and one bar after it, within the --from/--to range")
    return first, last


def local_decisions(engine: Engine, bars: Bars, cfg: Config, first: int, last: int) -> np.ndarray:
    """Positions from the in-process engine, for decision bars first..last."""
    windows = all_windows(compute_features(bars, cfg.features), cfg.features.window)
    offset = cfg.features.window - 1  # window i ends at bar i + offset
    return to_positions(engine.aggregate(windows[first - offset:last - offset + 1]).actions).astype(np.float64)


async def _remote(target: str, cfg: Config, bars: Bars, first: int, last: int, streams: int,
                  progress: Callable[[int], None] | None, result: BacktestResult, as_live: bool) -> np.ndarray:
    import grpc

    from tactical.rpc import aio_channel
    from tactical.v1 import decision_pb2, decision_pb2_grpc
    from tactical.wire import encode_bars

    need = cfg.features.min_bars
    positions = np.zeros(last - first + 1)
    chunks = np.array_split(np.arange(first, last + 1), streams)

    async def walk(stub, chunk: np.ndarray, instrument: str) -> None:
        call = stub.DecideStream()
        for t in chunk.tolist():
            request = decision_pb2.DecideRequest(request_id=f"backtest-{t}", instrument=instrument,
                                                 bars=encode_bars(bars[t + 1 - need:t + 1]), backtest=not as_live)
            started = asyncio.get_running_loop().time()
            await call.write(request)
            d = await call.read()
            if d is grpc.aio.EOF or d.HasField("error"):
                raise BacktestError(f"the cluster refused the decision at bar {t}: "
                                    f"{'stream closed' if d is grpc.aio.EOF else d.error.message}")
            result.latencies_ms.append((asyncio.get_running_loop().time() - started) * 1e3)
            result.versions[d.model_version] += 1
            result.degraded += d.degraded
            positions[t - first] = Action(d.action).position
            if progress is not None:
                progress(1)
        await call.done_writing()

    async with aio_channel(target, cfg.serving) as channel:
        stub = decision_pb2_grpc.DecisionServiceStub(channel)
        # each stream its own instrument: its bars arrive in order, as a live feed's would
        await asyncio.gather(*(walk(stub, chunk, f"backtest-{k + 1}") for k, chunk in enumerate(chunks) if len(chunk)))
    return positions


def remote_decisions(target: str, cfg: Config, bars: Bars, first: int, last: int, result: BacktestResult,
                     streams: int = 4, progress: Callable[[int], None] | None = None, as_live: bool = False
                     ) -> np.ndarray:
    """Positions from a running cluster (bars sent over DecideStream, `streams` at a time). The requests are
    marked as a backtest's (DecideRequest.backtest: the cluster judges no version on them) unless `as_live`
    (a staging cluster fed a recorded stream as if it were the market)."""
    return asyncio.run(_remote(target, cfg, bars, first, last, streams, progress, result, as_live))


def baseline_positions(model: np.ndarray, rule: AggregationRule, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The model's positions and the three baselines' over the same bars: buy-and-hold, flat, random votes."""
    n = len(model)
    return {MODEL: model, BUY_AND_HOLD: np.ones(n), FLAT: np.zeros(n),
            RANDOM: rule.random_positions(rng, n).astype(np.float64)}


def score(result: BacktestResult, cfg: Config, seed: int, *, fill: str = FILL_CLOSE,
          periods_per_year: float | None = None) -> None:
    """Fill result.reports: the model and the three baselines on the same bars and costs, annualized with
    `periods_per_year` (default: what the whole series has, market.performance.bars_per_year)."""
    rule = AggregationRule.from_config(cfg.aggregation)
    candidates = baseline_positions(result.positions, rule, np.random.default_rng(seed))
    per_year = bars_per_year(result.bars.time) if periods_per_year is None else periods_per_year
    result.reports = score_range(result.bars, result.first_bar, result.last_bar, candidates,
                                 cfg.training.transaction_cost, fill, per_year)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or a BacktestError saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BacktestError("--plot needs matplotlib: pip install -e '.[plot]'") from None
    return plt


def check_plot_path(path: str) -> None:
    """Refuse a plot file that cannot be written before the backtest runs, not after it."""
    pyplot()
    from matplotlib.backend_bases import FigureCanvasBase

    file = Path(path)
    formats = FigureCanvasBase.get_supported_filetypes()
    if file.suffix.lower()[1:] not in formats:
        raise BacktestError(f"--plot {path}: give a file name ending in one of .{', .'.join(sorted(formats))}")
    if file.is_dir():
        raise BacktestError(f"--plot {path}: is a directory")
    if not file.parent.is_dir():
        raise BacktestError(f"--plot {path}: no directory {file.parent}")
    if not os.access(file.parent, os.W_OK):
        raise BacktestError(f"--plot {path}: the directory {file.parent} is not writable")


def plot(result: BacktestResult, path: str) -> None:
    """Equity curves of every policy and the model's positions, as an image (PNG, SVG, PDF...; needs matplotlib)."""
    plt = pyplot()
    import datetime as dt

    times = [dt.datetime.fromtimestamp(t / 1000, tz=dt.UTC)
             for t in result.bars.time[result.first_bar + 1:result.last_bar + 2]]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for name, report in result.reports.items():
        top.plot(times, report.equity, label=f"{name} ({report.total_return:+.1%})",
                 linewidth=1.2 if name == MODEL else 0.8)
    top.set_ylabel("equity (start = 1)")
    top.legend(loc="best")
    top.grid(alpha=0.3)
    bottom.step(times, result.positions, where="pre", linewidth=0.6)
    bottom.set_ylabel("model position")
    bottom.set_yticks([-1, 0, 1], ["short", "flat", "long"])
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path: str) -> None:
    """Write a figure atomically (never half an image at `path`) and close it; BacktestError naming the problem."""
    plt = pyplot()
    file = Path(path)
    try:
        if not file.parent.is_dir():  # gone while the run went on: say so rather than create it again
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        with atomic_open(file, "wb") as f:
            fig.savefig(f, format=file.suffix[1:].lower(), dpi=110)
    except OSError as exc:  # the directory went away, a full disk...
        raise BacktestError(f"--plot: cannot write {path}: {exc.strerror or exc}") from None
    except RuntimeError as exc:  # a backend that needs an external tool (pgf: xelatex)
        raise BacktestError(f"--plot: matplotlib cannot write {path}: {str(exc).splitlines()[0]}") from None
    finally:
        plt.close(fig)
