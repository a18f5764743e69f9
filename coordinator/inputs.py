"""Turn DecideRequests into the window bytes sent to the agents, validating everything.

A window request is checked (shape, size, finiteness) and forwarded as the client's own bytes.
A bars request is checked (count, time order, OHLC sanity, volume) and turned into features
over the last window + warm-up bars, which gives exactly the rows a long series would give; the
bars also become the instrument's history. A bar request appends one new bar to that history
(market.live.BarHistory) and takes the window it gives. Errors are WireError or BarDataError,
both ValueErrors naming the problem (and, for bars, the instrument and the bar).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from market.bars import BarDataError, Bars, validate_bars
from market.live import BarHistory
from tactical.config import Config
from tactical.v1 import decision_pb2
from tactical.wire import F32, MAX_REQUEST_ID, WireError, decode_bars, decode_window, instrument_name


@dataclass
class Decoded:
    """One request, ready for the agents (what decisions.Asked holds, and its window), or the error refusing it."""

    request_id: str
    instrument: str
    window: bytes = b""
    bar_time: int = 0  # the last bar's time for bar(s) requests, else 0
    close: float = math.nan  # the last bar's close for bar(s) requests, else NaN
    backtest: bool = False  # historical bars replayed (DecideRequest.backtest): not scored live
    error: ValueError | None = None


class RequestDecoder:
    def __init__(self, cfg: Config):
        self.features = cfg.features
        self.max_bars = cfg.serving.max_bars
        self.history = BarHistory(cfg.features, cfg.serving.max_instruments, cfg.serving.max_bar_gap_ms)
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid():x}-"

    def decode(self, request: decision_pb2.DecideRequest) -> Decoded:
        """One request; raises WireError / BarDataError for bad input."""
        item = self._identify(request)
        kind = request.WhichOneof("input")
        if kind == "bar":
            b = request.bar
            slot = self.history.check(item.instrument, b.time_ms)
            times, ohlcv = np.array([b.time_ms]), np.array([[b.open, b.high, b.low, b.close, b.volume]])
            for error in self.history.validate([item.instrument], times, ohlcv).values():
                raise error
            item.window = self.history.append([item.instrument], [slot], times, ohlcv)[0].tobytes()
            item.bar_time, item.close = b.time_ms, b.close
        else:
            item.window, item.bar_time, item.close = self._window(request, kind, item.instrument)
        return item

    def decode_batch(self, requests: Sequence[decision_pb2.DecideRequest]) -> list[Decoded]:
        """Every item, each with its window or its error; the new bars' windows computed in one call."""
        items, ticks = [], []
        seen: set[str] = set()
        for request in requests:
            try:
                item = self._identify(request)
                kind = request.WhichOneof("input")
                if kind == "bar":
                    if item.instrument in seen:
                        raise WireError(f"instrument {item.instrument} has two items in this batch; one bar each")
                    b = request.bar
                    ticks.append((item, self.history.check(item.instrument, b.time_ms), b))
                    item.bar_time, item.close = b.time_ms, b.close
                else:
                    item.window, item.bar_time, item.close = self._window(request, kind, item.instrument)
                seen.add(item.instrument)
            except (WireError, BarDataError) as exc:
                item = Decoded(request.request_id[:MAX_REQUEST_ID], request.instrument[:64], backtest=request.backtest,
                               error=exc)
            items.append(item)
        if ticks:
            names = [item.instrument for item, _, _ in ticks]
            times = np.array([b.time_ms for _, _, b in ticks], dtype=np.int64)
            ohlcv = np.array([[b.open, b.high, b.low, b.close, b.volume] for _, _, b in ticks], dtype=np.float64)
            bad = self.history.validate(names, times, ohlcv)
            for k, error in bad.items():
                ticks[k][0].error = error
            good = [k for k in range(len(ticks)) if k not in bad]
            windows = [] if not good else self.history.append(
                [names[k] for k in good], [ticks[k][1] for k in good], times[good], ohlcv[good])
            for k, window in zip(good, windows, strict=True):
                ticks[k][0].window = window.tobytes()
        return items

    def _identify(self, request: decision_pb2.DecideRequest) -> Decoded:
        if len(request.request_id) > MAX_REQUEST_ID:
            raise WireError(f"request_id is {len(request.request_id)} characters, at most {MAX_REQUEST_ID}")
        return Decoded(request.request_id or f"{self._prefix}{next(self._ids)}", instrument_name(request.instrument),
                       backtest=request.backtest)

    def _window(self, request: decision_pb2.DecideRequest, kind: str | None,
                instrument: str) -> tuple[bytes, int, float]:
        """(window bytes, time and close of the last bar or 0 and NaN) of a window or bars request."""
        if kind == "window":
            decode_window(request.window, self.features.window)
            return request.window.data, 0, math.nan
        if kind == "bars":
            n, need = len(request.bars.bars), self.features.min_bars
            if n < need:
                raise WireError(f"too few bars: need at least {need} ({self.features.window}-bar window + "
                                f"{self.features.warmup_bars} bars of feature warm-up), got {n}")
            if n > self.max_bars:
                raise WireError(f"too many bars: at most {self.max_bars} per request, got {n}")
            time, ohlcv = decode_bars(request.bars)
            bars = Bars(time, *ohlcv.T)
            validate_bars(bars)
            rows = self.history.seed(instrument, bars)
            return np.ascontiguousarray(rows, dtype=F32).tobytes(), int(bars.time[-1]), float(bars.close[-1])
        raise WireError("the request carries neither a window, bars nor a bar")
