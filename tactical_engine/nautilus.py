"""NautilusTrader as a client: a Strategy that streams each bar of its instrument to a running cluster
and trades one unit towards each decision, and a backtest that runs it over a series of bars.

Needs the `nautilus` extra (nautilus_trader 1.221, the release for Python 3.11; it wants pandas < 3).

How it trades: the strategy collects the first features.min_bars bars as the instrument's history,
opens a tick stream (tactical_engine.Client.stream), and from then on sends every bar and turns the
decision into a target position of -1, 0 or +1 unit, with market orders (a flip is a close and an
open, as in Nautilus's own examples: version 1.221 misreports the realized P&L of a single order
that crosses zero). In Nautilus's bar-driven backtest a market order submitted in on_bar(t) fills
at once against the book, whose top is bar t's close: the same fill price as `tactical backtest
--fill close` (tested: the position after every bar, rebuilt from the fills, is the decision's).

Bars in this project carry their open time; Nautilus stamps a bar when it closes, so the adapter
adds one bar's spacing (the series' median spacing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from market.bars import Bar, Bars
from tactical_engine.api import Decision
from tactical_engine.remote import Client, TickStream

try:
    import pandas as pd
    from nautilus_trader.backtest.engine import BacktestEngine
    from nautilus_trader.config import BacktestEngineConfig, LoggingConfig, StrategyConfig
    from nautilus_trader.model.currencies import USD
    from nautilus_trader.model.data import Bar as NautilusBar
    from nautilus_trader.model.data import BarType
    from nautilus_trader.model.enums import AccountType, OmsType, OrderSide, TimeInForce
    from nautilus_trader.model.events import OrderFilled
    from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue
    from nautilus_trader.model.instruments import Equity
    from nautilus_trader.model.objects import Money, Price, Quantity
    from nautilus_trader.persistence.wranglers import BarDataWrangler
    from nautilus_trader.trading.strategy import Strategy
except ImportError as exc:  # the optional extra
    raise ImportError(f"the NautilusTrader adapter needs the nautilus extra: pip install -e '.[nautilus]' ({exc})") \
        from None

VENUE = Venue("SIM")


class TacticalStrategyConfig(StrategyConfig, frozen=True):
    """instrument_id/bar_type: Nautilus's; instrument: the name the cluster knows it by; coordinator: host:port."""

    instrument_id: InstrumentId
    bar_type: BarType
    instrument: str
    coordinator: str
    config_path: str | None = None  # the cluster's config file (TLS, features), for the client
    unit: Decimal = Decimal(1)  # quantity of one unit of target position
    backtest: bool = False  # historical bars (Nautilus's BacktestEngine): kept out of the cluster's live judging


class TacticalStrategy(Strategy):
    """Each bar to the cluster, each decision to a target position of one unit (see the module docstring)."""

    def __init__(self, config: TacticalStrategyConfig):
        super().__init__(config)
        self.client: Client | None = None
        self.stream: TickStream | None = None
        self.warmup: list[Bar] = []
        self.decisions: list[tuple[int, Decision | None]] = []  # (bar index, decision; None while warming up)
        self.order_bar: dict[str, int] = {}  # client order id -> the bar whose decision it executes
        self.fills: list[OrderFilled] = []

    def on_start(self) -> None:
        self.client = Client(self.config.coordinator, config=self.config.config_path, timeout=30.0)
        self.subscribe_bars(self.config.bar_type)

    def on_stop(self) -> None:
        if self.stream is not None:
            self.stream.close()
        if self.client is not None:
            self.client.close()

    def on_bar(self, bar: NautilusBar) -> None:
        index = len(self.decisions)
        ours = Bar(bar.ts_event // 1_000_000 - self._spacing_ms, bar.open.as_double(), bar.high.as_double(),
                   bar.low.as_double(), bar.close.as_double(), bar.volume.as_double())  # our bars carry the open time
        if self.stream is None:  # warming up: the cluster needs the instrument's history first
            self.warmup.append(ours)
            if len(self.warmup) < self.client.cfg.features.min_bars:
                self.decisions.append((index, None))
                return
            self.stream = self.client.stream(self.config.instrument, Bars.from_arrays(*zip(*self.warmup, strict=True)),
                                             backtest=self.config.backtest)
            decision = self.stream.first
        else:
            decision = self.stream.send(ours)
        self.decisions.append((index, decision))
        self._trade_to(decision.position * self.config.unit, index)

    @property
    def _spacing_ms(self) -> int:
        return int(self.config.bar_type.spec.timedelta.total_seconds() * 1000)

    def _trade_to(self, target: Decimal, index: int) -> None:
        current = self.portfolio.net_position(self.config.instrument_id)
        for order in self.cache.orders(instrument_id=self.config.instrument_id, strategy_id=self.id):
            if not order.is_closed:  # orders still working count as done
                current += (1 if order.side == OrderSide.BUY else -1) * order.leaves_qty.as_decimal()
        if target == current:
            return
        legs = [-current, target] if current != 0 and target * current < 0 else [target - current]
        for delta in legs:
            order = self.order_factory.market(instrument_id=self.config.instrument_id,
                                              order_side=OrderSide.BUY if delta > 0 else OrderSide.SELL,
                                              quantity=Quantity.from_str(str(abs(delta))),
                                              time_in_force=TimeInForce.GTC)
            self.order_bar[order.client_order_id.value] = index
            self.submit_order(order)

    def on_order_filled(self, event: OrderFilled) -> None:
        self.fills.append(event)

    def on_order_rejected(self, event: Any) -> None:  # a refused order is a bug here, never a silent gap
        raise RuntimeError(f"order rejected: {event}")

    def on_order_denied(self, event: Any) -> None:
        raise RuntimeError(f"order denied: {event}")


@dataclass
class NautilusResult:
    """What a backtest through Nautilus did, bar by bar, and what it earned (one unit, USD)."""

    closes: np.ndarray  # each bar's close
    decisions: list[Decision | None]  # per bar; None while warming up
    fills: list[tuple[int, int, float, float, float]]  # (decision bar, fill bar, signed quantity, price, fee)
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0))  # position after each bar, from the fills
    pnl: float = 0.0  # net of fees, marked at the last close
    fees: float = 0.0


def equity(symbol: str, price_precision: int, fee: float) -> Equity:
    """A plain USD instrument whose one unit is one share: P&L is the price difference, `fee` a share of notional."""
    return Equity(instrument_id=InstrumentId(Symbol(symbol), VENUE), raw_symbol=Symbol(symbol), currency=USD,
                  price_precision=price_precision, price_increment=Price(10 ** -price_precision, price_precision),
                  lot_size=Quantity.from_int(1), ts_event=0, ts_init=0, maker_fee=Decimal(str(fee)),
                  taker_fee=Decimal(str(fee)))


def run_backtest(bars: Bars, coordinator: str, *, instrument: str = "NAUTILUS", config_path: str | None = None,
                 fee: float = 0.0001, price_precision: int = 4) -> NautilusResult:
    """Nautilus's BacktestEngine over `bars`, TacticalStrategy asking the cluster at `coordinator` each bar (its
    requests marked as a backtest's: the cluster does not judge versions on them).

    `fee` is the share of notional paid per unit traded (training.transaction_cost's convention).
    """
    spacing_ms = int(np.median(np.diff(bars.time)))
    inst = equity(instrument.replace(".", "-"), price_precision, fee)
    bar_type = BarType.from_str(f"{inst.id}-{spacing_ms // 60_000}-MINUTE-LAST-EXTERNAL" if spacing_ms % 60_000 == 0
                                else f"{inst.id}-{spacing_ms // 1000}-SECOND-LAST-EXTERNAL")
    frame = pd.DataFrame({"open": bars.open, "high": bars.high, "low": bars.low, "close": bars.close,
                          "volume": bars.volume},
                         index=pd.to_datetime(bars.time + spacing_ms, unit="ms", utc=True))  # stamped at the close
    nautilus_bars = BarDataWrangler(bar_type, inst).process(frame.round(price_precision))
    engine = BacktestEngine(config=BacktestEngineConfig(trader_id="TACTICAL-001", run_analysis=False,
                                                        logging=LoggingConfig(log_level="ERROR")))
    try:
        engine.add_venue(venue=VENUE, oms_type=OmsType.NETTING, account_type=AccountType.MARGIN, base_currency=USD,
                         starting_balances=[Money(1_000_000, USD)], default_leverage=Decimal(1))
        engine.add_instrument(inst)
        engine.add_data(nautilus_bars)
        strategy = TacticalStrategy(TacticalStrategyConfig(instrument_id=inst.id, bar_type=bar_type,
                                                           instrument=instrument, coordinator=coordinator,
                                                           config_path=config_path, backtest=True))
        engine.add_strategy(strategy)
        engine.run()
        closes = np.array([b.close.as_double() for b in nautilus_bars])
        stamps = np.array([b.ts_init for b in nautilus_bars])
        fills = []
        for f in strategy.fills:
            sign = 1 if f.order_side == OrderSide.BUY else -1
            fills.append((strategy.order_bar[f.client_order_id.value], int(np.searchsorted(stamps, f.ts_event)),
                          sign * f.last_qty.as_double(), f.last_px.as_double(), f.commission.as_double()))
        account = engine.portfolio.account(VENUE)
        unrealized = engine.portfolio.unrealized_pnl(inst.id, price=nautilus_bars[-1].close)
        pnl = account.balance_total(USD).as_double() - 1_000_000 + (unrealized.as_double() if unrealized else 0.0)
    finally:
        engine.dispose()
    positions = np.zeros(len(closes))
    for _, k, quantity, _, _ in fills:
        positions[k:] += quantity
    return NautilusResult(closes, [d for _, d in strategy.decisions], fills, positions, pnl,
                          sum(f[4] for f in fills))
