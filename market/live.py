"""Live bar streams: what the engine keeps of each instrument so that one new bar is enough to decide.

A feature row depends on its bar and the `features.warmup_bars` bars before it, no more (the
features are causal with bounded look-back; tested on random series). So per instrument the
engine keeps the last warmup + 1 bars and the current window's feature rows: a new bar's row is
computed from those bars and appended, and the window is, row for row, the one a computation
over the whole series gives. Many instruments' new rows are computed in one call: their bar
blocks are concatenated, and each block's last row depends only on its own block.

Instruments are bounded in number (the least recently used is forgotten; its next bar is then
refused until its history is sent again). Numpy only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from market.bars import BarDataError, Bars, bar_stamp, validate_bars
from market.features import compute_features
from tactical.config import FeatureConfig
from tactical.wire import N_FEATURES, NO_HISTORY


class NoHistory(BarDataError):
    """A new bar for an instrument with no history here: the client should send the history again."""

    reason = NO_HISTORY


class BarHistory:
    """Each instrument's last warmup + 1 bars and its current window, for up to `capacity` instruments."""

    def __init__(self, features: FeatureConfig, capacity: int, max_gap_ms: int = 0):
        self.features = features
        self.capacity = capacity
        self.max_gap_ms = max_gap_ms  # 0: any gap
        self.keep = features.warmup_bars + 1
        self._slots: OrderedDict[str, int] = OrderedDict()  # least recently used first
        self._free = list(range(capacity - 1, -1, -1))
        self._time = np.zeros((capacity, self.keep), dtype=np.int64)  # untouched pages cost no memory
        self._ohlcv = np.zeros((capacity, self.keep, 5), dtype=np.float64)
        self._window = np.zeros((capacity, features.window, N_FEATURES), dtype=np.float32)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, instrument: str) -> bool:
        return instrument in self._slots

    def seed(self, instrument: str, bars: Bars) -> np.ndarray:
        """Make (validated) `bars`, at least features.min_bars of them, the instrument's history; return the
        window of its last bar (computed from the last min_bars bars, as from the whole series)."""
        need = self.features.min_bars
        if len(bars) < need:
            raise BarDataError(f"instrument {instrument}: {len(bars)} bars of history, a window needs {need}")
        tail = bars[len(bars) - need:]
        window = compute_features(tail, self.features)[-self.features.window:]
        slot = self._slot(instrument)
        self._time[slot] = tail.time[-self.keep:]
        self._ohlcv[slot] = np.column_stack([getattr(tail, f)[-self.keep:] for f in ("open", "high", "low", "close",
                                                                                      "volume")])
        self._window[slot] = window
        return window

    def check(self, instrument: str, time_ms: int) -> int:
        """Why the instrument's next bar, at `time_ms`, is refused (BarDataError naming it and the bar), else its
        slot. Its prices and volume are checked by `validate`."""
        slot = self._slots.get(instrument)
        where = f"instrument {instrument}, bar at {bar_stamp(time_ms)}"
        if slot is None:
            raise NoHistory(f"{where}: no history for this instrument here: send its last {self.features.min_bars} "
                               f"bars first (a restarted coordinator keeps none, and it keeps at most "
                               f"{self.capacity} instruments, forgetting the least recently used)")
        last = int(self._time[slot, -1])
        if time_ms == last:
            raise BarDataError(f"{where}: repeats the last bar (bars must be new, in time order)")
        if time_ms < last:
            raise BarDataError(f"{where}: is before the last bar ({bar_stamp(last)}): bars must come in time order")
        if self.max_gap_ms and time_ms - last > self.max_gap_ms:
            raise BarDataError(f"{where}: {(time_ms - last) / 1000:,.0f} s after the last bar ({bar_stamp(last)}), "
                               f"more than serving.max_bar_gap_ms ({self.max_gap_ms} ms): send its history again")
        return slot

    @staticmethod
    def validate(instruments: Sequence[str], times: np.ndarray, ohlcv: np.ndarray) -> dict[int, BarDataError]:
        """The OHLCV checks of market.bars for many instruments' next bars at once: {index: error} of the bad ones."""
        errors: dict[int, BarDataError] = {}
        left = np.arange(len(instruments))
        while left.size:  # one vectorized pass; again over the rest after each bad bar (rare)
            block = ohlcv[left]
            try:
                validate_bars(Bars(left, *block.T), name_of=lambda i, left=left: (
                    f"instrument {instruments[left[i]]}, bar at {bar_stamp(int(times[left[i]]))}"))
                break
            except BarDataError as exc:
                errors[int(left[exc.bar])] = exc
                left = np.delete(left, exc.bar)
        return errors

    def append(self, instruments: Sequence[str], slots: Sequence[int], times: np.ndarray,
               ohlcv: np.ndarray) -> np.ndarray:
        """Append each instrument's checked next bar (times (k,), ohlcv (k, 5)); return their windows (k, 60, 7).

        The k new feature rows are computed in one call over the k bar blocks concatenated.
        """
        slots = np.asarray(slots, dtype=np.int64)
        self._time[slots, :-1] = self._time[slots, 1:]
        self._time[slots, -1] = times
        self._ohlcv[slots, :-1] = self._ohlcv[slots, 1:]
        self._ohlcv[slots, -1] = ohlcv
        block = self._ohlcv[slots].reshape(-1, 5)
        series = Bars(self._time[slots].reshape(-1), block[:, 0], block[:, 1], block[:, 2], block[:, 3], block[:, 4])
        rows = compute_features(series, self.features).reshape(len(slots), self.keep, N_FEATURES)[:, -1]
        self._window[slots, :-1] = self._window[slots, 1:]
        self._window[slots, -1] = rows
        for instrument in instruments:
            self._slots.move_to_end(instrument)
        return self._window[slots]

    def _slot(self, instrument: str) -> int:
        slot = self._slots.get(instrument)
        if slot is None:
            if not self._free:
                _, oldest = self._slots.popitem(last=False)
                self._free.append(oldest)
                self.evicted += 1
            slot = self._free.pop()
            self._slots[instrument] = slot
        self._slots.move_to_end(instrument)
        return slot
