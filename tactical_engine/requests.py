"""Requests from Python inputs, and each instrument's history as a client keeps it to send again.

One input kind per shape: a (60, 7) window of features, a `Bars` series (at least
features.min_bars: the instrument's history; its last bar is decided), or one `Bar` (the
instrument's next bar). A client that sends bars keeps each instrument's last min_bars bars, so
that when the engine it talks to has none (a restarted coordinator, a forgotten instrument:
Error.reason NO_HISTORY) it sends that history again by itself and then the bar.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from market.bars import Bar, Bars
from tactical.v1 import common_pb2, decision_pb2
from tactical.wire import encode_bars, encode_window

Input = np.ndarray | Bars | Bar


def request_for(item: Input, instrument: str = "", request_id: str = "",
                backtest: bool = False) -> decision_pb2.DecideRequest:
    """The DecideRequest of one input (see the module docstring); `backtest`: historical bars, not live traffic."""
    request = decision_pb2.DecideRequest(request_id=request_id, instrument=instrument, backtest=backtest)
    if isinstance(item, Bar):
        request.bar.CopyFrom(common_pb2.Bar(time_ms=item.time_ms, open=item.open, high=item.high, low=item.low,
                                            close=item.close, volume=item.volume))
    elif isinstance(item, Bars):
        request.bars.CopyFrom(encode_bars(item))
    else:
        request.window.CopyFrom(encode_window(item))
    return request


class Histories:
    """The last `keep` bars of each instrument this client sent bars for."""

    def __init__(self, keep: int):
        self.keep = keep
        self._bars: dict[str, Bars] = {}

    def sent(self, instrument: str, item: Input) -> None:
        """Remember what was just decided on: a history replaces the one kept, a bar extends it."""
        if isinstance(item, Bars):
            self._bars[instrument] = item[max(0, len(item) - self.keep):]
        elif isinstance(item, Bar) and instrument in self._bars:
            grown = self._bars[instrument].append(item)
            self._bars[instrument] = grown[max(0, len(grown) - self.keep):]

    def history(self, instrument: str) -> Bars | None:
        return self._bars.get(instrument)

    def resend(self, items: Mapping[str, Input], refused: set[str]) -> dict[str, Bars]:
        """The histories to send again for the bars refused for lack of history (those this client knows)."""
        return {name: self._bars[name] for name in refused if isinstance(items[name], Bar) and name in self._bars}
