"""Live scores: every decision on an instrument's bars is scored when that instrument's next bar arrives.

The position a decision sets is held from its bar's close to the next bar's close; it earns
position x log(next close / close), less the transaction cost per unit of position changed. The
active version's scores since its activation feed the guard (its drawdown); while a shadow version
runs, its decision on the same window is scored the same way on the same bar, so the two are
paired bar for bar (`tactical shadow status`). Only decisions with a price count (requests that
carried bars); a bar decided again (a history resent) replaces the earlier decision unscored.

Runs on the request path (a dictionary lookup and a few float operations per priced decision),
only while a shadow runs or the guard watches drawdown.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field


@dataclass
class _Held:
    """An instrument's last priced decision: its bar, and the positions in force after it and before it."""

    bar_time: int
    close: float
    version: int | None
    position: float
    before: float
    shadow: float | None  # the shadow's position after this bar's decision (None: no shadow then)
    shadow_before: float


@dataclass
class ShadowScores:
    version: int
    active: int | None  # the active version it is paired with: a record compares the shadow with one version
    since_ms: int
    decisions: int = 0
    agreed: int = 0
    active_pnl: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100_000))
    shadow_pnl: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100_000))


class LiveScores:
    def __init__(self, cost: float, max_instruments: int):
        self.cost = cost
        self.max_instruments = max_instruments
        self._held: dict[str, _Held] = {}
        self.shadow: ShadowScores | None = None
        self.active: int | None = None  # the version the drawdown below is of
        self.scored = 0  # bars scored for it since its activation
        self.cumulative = 0.0  # its summed log P&L since then
        self.peak = 0.0

    def start_shadow(self, version: int | None, active: int | None) -> None:
        """A new record (none: `version` None) of shadow `version` paired with `active`."""
        self.shadow = None if version is None else ShadowScores(version, active, int(time.time() * 1000))

    def activated(self, version: int | None) -> None:
        """A new active version: its drawdown starts from zero."""
        self.active, self.scored, self.cumulative, self.peak = version, 0, 0.0, 0.0

    @property
    def drawdown(self) -> float:
        """The active version's drawdown since its activation, as a share of equity."""
        return 1.0 - math.exp(self.cumulative - self.peak)

    def observe(self, instrument: str, bar_time: int, close: float, version: int | None, position: float,
                shadow_position: float | None) -> None:
        """One priced decision (positions -1, 0, +1); scores the instrument's previous one."""
        held = self._held.get(instrument)
        if held is not None and bar_time > held.bar_time and held.close > 0:
            change = math.log(close / held.close)
            pnl = held.position * change - self.cost * abs(held.position - held.before)
            if held.version == self.active and held.version is not None:
                self.scored += 1
                self.cumulative += pnl
                self.peak = max(self.peak, self.cumulative)
            s = self.shadow
            if s is not None and held.shadow is not None and held.version == s.active:
                s.active_pnl.append(pnl)
                s.shadow_pnl.append(held.shadow * change - self.cost * abs(held.shadow - held.shadow_before))
        if held is not None and bar_time < held.bar_time:
            return  # an older bar: nothing to score, nothing to replace
        if held is not None and bar_time == held.bar_time:  # the same bar decided again: it replaces
            before, shadow_before = held.before, held.shadow_before
        else:
            before = held.position if held is not None else 0.0
            shadow_before = (held.shadow if held.shadow is not None else held.position) if held is not None else 0.0
        if held is None and len(self._held) >= self.max_instruments:
            del self._held[next(iter(self._held))]  # the instrument seen longest ago
        self._held[instrument] = _Held(bar_time, close, version, position, before, shadow_position,
                                       shadow_before if shadow_position is not None else 0.0)
