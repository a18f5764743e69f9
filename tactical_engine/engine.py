"""The in-process engine: a model-store version's three ONNX actors and the coordinator's own decision code.

For backtests, research and tools that need decisions without a cluster. It reads requests with
the coordinator's decoder (the same validation, instruments, per-instrument bar history) and
writes decisions with the coordinator's decide_block, so for the same window and version it
answers exactly what the served path answers (tested), as the same Decision dataclass a Client
returns:

    from tactical_engine import Engine
    engine = Engine.load("state/models")                  # the newest version of the store
    d = engine.decide(window)                             # a (60, 7) float window
    d = engine.decide(bars=bars, instrument="EURUSD")     # the last bar of >= 92 bars
    with engine.stream("EURUSD", history) as stream:      # then one bar at a time
        d = stream.send(bar)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.serving.model_store import ModelStore
from agents.serving.runtime import ActorRunner
from coordinator.aggregation import Aggregate, AggregationRule, valid_votes
from coordinator.decisions import decide_block
from coordinator.inputs import Decoded, RequestDecoder
from market.bars import Bar, Bars
from tactical.config import AGENT_NAMES, Config, as_config
from tactical.errors import UserError
from tactical.v1 import decision_pb2
from tactical.wire import NO_HISTORY
from tactical_engine.api import Decision, DecisionRefused, Refusal
from tactical_engine.requests import Histories, Input, request_for


class Engine:
    """One model version's decisions in this process; see the module docstring."""

    def __init__(self, store: ModelStore, version: int, cfg: Config):
        self.cfg = cfg
        self.version = version
        self.runners = [ActorRunner(*store.read_artifact(version, name)) for name in AGENT_NAMES]
        self.rule = AggregationRule.from_config(cfg.aggregation)
        self.decoder = RequestDecoder(cfg)
        self.histories = Histories(cfg.features.min_bars)

    @classmethod
    def load(cls, model_store: str | Path | None = None, version: int | None = None,
             config: Config | Mapping[str, Any] | str | Path | None = None) -> Engine:
        """The engine of `version` (default: the newest) of a model store (default: paths.model_store)."""
        cfg = as_config(config)
        store = ModelStore(model_store or cfg.paths.model_store)
        versions = store.versions()
        chosen = versions[-1] if version is None and versions else version
        if chosen is None or chosen not in versions:
            raise UserError(f"no version {version if version is not None else ''} in the model store {store.root} "
                            f"(it has {versions or 'none'}; train one: tactical train)")
        return cls(store, chosen, cfg)

    # ------------------------------------------------------------------ decisions
    def decide(self, window: np.ndarray | None = None, *, bars: Bars | None = None, instrument: str = "") -> Decision:
        """One decision on a (60, 7) window, or on the last bar of `bars` (at least features.min_bars of them).

        Bad input raises DecisionRefused (INVALID_ARGUMENT) naming the problem.
        """
        if (window is None) == (bars is None):
            raise ValueError("give exactly one of window or bars")
        item = window if window is not None else bars
        answer = self.decide_many({instrument: item})[instrument]
        if isinstance(answer, Refusal):
            raise DecisionRefused(answer.code, answer.message)
        return answer

    def decide_many(self, items: Mapping[str, Input]) -> dict[str, Decision | Refusal]:
        """One decision per instrument: a window, the instrument's history (Bars) or its next Bar each.

        A bad item is a Refusal for that instrument; the others are decided. A Bar for an instrument
        whose history this engine no longer holds is decided after sending that history again.
        """
        answers = self._answer([request_for(item, name) for name, item in items.items()])
        refused = {name for name, d in zip(items, answers, strict=True)
                   if isinstance(d, Refusal) and d.reason == NO_HISTORY}
        resend = self.histories.resend(items, refused)
        if resend:
            self._answer([request_for(bars, name) for name, bars in resend.items()])
            again = iter(self._answer([request_for(items[name], name) for name in resend]))
            answers = [next(again) if name in resend else d for name, d in zip(items, answers, strict=True)]
        out = {}
        for (name, item), answer in zip(items.items(), answers, strict=True):
            if isinstance(answer, Decision):
                self.histories.sent(name, item)
            out[name] = answer
        return out

    def decide_windows(self, windows: np.ndarray, instrument: str = "") -> list[Decision]:
        """Decisions for many windows (N, 60, 7) of one instrument, in order."""
        items = [Decoded(f"window-{i}", instrument or "default", np.ascontiguousarray(w, dtype="<f4").tobytes())
                 for i, w in enumerate(self._checked(windows))]
        return [Decision.from_proto(d) for d in self._decide(items)]

    def stream(self, instrument: str, history: Bars) -> EngineStream:
        """A stream of one instrument's bars: `history` first (its decision is `.first`), then send(bar)."""
        return EngineStream(self, instrument, history)

    def aggregate(self, windows: np.ndarray, batch: int = 1024) -> Aggregate:
        """The rule's output for many windows (N, 60, 7) at once, without Decision objects: for backtests
        over long series. Invalid votes are left out, as everywhere."""
        windows = self._checked(windows)
        probs = np.empty((len(windows), len(self.runners), 3), dtype=np.float32)
        values = np.empty((len(windows), len(self.runners)), dtype=np.float32)
        for start in range(0, len(windows), batch):
            chunk = windows[start:start + batch]
            for a, runner in enumerate(self.runners):
                probs[start:start + len(chunk), a], values[start:start + len(chunk), a] = runner.infer(chunk)
        return self.rule(probs, valid_votes(probs, values))

    # ------------------------------------------------------------------ the coordinator's path, in process
    def _checked(self, windows: np.ndarray) -> np.ndarray:
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        expected = (self.cfg.features.window, len(self.runners[0].manifest.feature_names))
        if windows.ndim != 3 or windows.shape[1:] != expected or not np.isfinite(windows).all():
            raise DecisionRefused("INVALID_ARGUMENT", f"windows must be finite, (count, {expected[0]}, "
                                                      f"{expected[1]}); got shape {windows.shape}")
        return windows

    def _answer(self, requests: Sequence[decision_pb2.DecideRequest]) -> list[Decision | Refusal]:
        items = self.decoder.decode_batch(requests)
        decided = iter(self._decide([item for item in items if item.error is None]))
        return [Refusal(item.instrument, "INVALID_ARGUMENT", str(item.error), getattr(item.error, "reason", ""))
                if item.error is not None else Decision.from_proto(next(decided)) for item in items]

    def _decide(self, items: list[Decoded]) -> list[decision_pb2.Decision]:
        if not items:
            return []
        start = time.perf_counter()
        windows = np.frombuffer(b"".join(item.window for item in items), dtype="<f4").reshape(
            len(items), self.cfg.features.window, -1)
        probs = np.empty((len(items), len(self.runners), 3), dtype=np.float32)
        values = np.empty((len(items), len(self.runners)), dtype=np.float32)
        latencies = []
        for a, runner in enumerate(self.runners):
            probs[:, a], values[:, a] = runner.infer(windows)
            latencies.append((time.perf_counter() - start) * 1e3)
        answered = np.ones(len(self.runners), dtype=bool)
        return decide_block(items, self.version, AGENT_NAMES, probs, values, answered, [""] * len(self.runners),
                            latencies, self.rule, self.cfg.aggregation, (time.perf_counter() - start) * 1e3).decisions


class EngineStream:
    """One instrument's bars through an Engine: the history at once, then one bar at a time."""

    def __init__(self, engine: Engine, instrument: str, history: Bars):
        self.engine, self.instrument = engine, instrument
        self.first = engine.decide(bars=history, instrument=instrument)

    def send(self, bar: Bar) -> Decision:
        """The decision on the instrument's next bar (DecisionRefused for a bar out of order, repeated...)."""
        answer = self.engine.decide_many({self.instrument: bar})[self.instrument]
        if isinstance(answer, Refusal):
            raise DecisionRefused(answer.code, answer.message)
        return answer

    def __enter__(self) -> EngineStream:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to release in process (the same shape as a client's stream)."""

