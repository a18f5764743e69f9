"""Turn a DecideRequest into the window bytes sent to the agents, validating everything.

A window request is checked (shape, size, finiteness) and forwarded as the client's own bytes.
A bars request is checked (count, time order, OHLC sanity, volume) and turned into features
over the last window + warm-up bars, which gives exactly the rows a long series would give.
Errors are WireError or BarDataError, both ValueErrors naming the problem.
"""

from __future__ import annotations

import itertools
import os

import numpy as np

from market.bars import Bars, validate_bars
from market.features import compute_features
from tactical.config import Config
from tactical.v1 import decision_pb2
from tactical.wire import F32, MAX_REQUEST_ID, WireError, decode_bars, decode_window


class RequestDecoder:
    def __init__(self, cfg: Config):
        self.features = cfg.features
        self.max_bars = cfg.serving.max_bars
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid():x}-"

    def request_id(self, request: decision_pb2.DecideRequest) -> str:
        """The client's id, or one made up here."""
        if len(request.request_id) > MAX_REQUEST_ID:
            raise WireError(f"request_id is {len(request.request_id)} characters, at most {MAX_REQUEST_ID}")
        return request.request_id or f"{self._prefix}{next(self._ids)}"

    def window(self, request: decision_pb2.DecideRequest) -> tuple[bytes, int]:
        """(window bytes, time of the last bar or 0)."""
        kind = request.WhichOneof("input")
        if kind == "window":
            decode_window(request.window, self.features.window)
            return request.window.data, 0
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
            rows = compute_features(bars[n - need:], self.features)[-self.features.window:]
            return np.ascontiguousarray(rows, dtype=F32).tobytes(), int(bars.time[-1])
        raise WireError("the request carries neither a window nor bars")
