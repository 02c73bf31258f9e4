"""The decision core: model output + market snapshot + risk book -> enter, close or nothing.

Plain Python, no Nautilus: the strategy calls it once per symbol and grid step, and the
property tests drive it directly over random paths.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from trading.strategy import guardrails as g
from trading.strategy.config import Limits
from trading.strategy.risk import OpenPosition, RiskBook

MIN_VOL_BP = 0.5  # sizing divides by vol_bp; a frozen market must not give infinite size


@dataclass(slots=True)
class Book:
    """A symbol's top of book and last tick time."""

    bid: float = math.nan
    ask: float = math.nan
    bid_size: float = 0.0
    ask_size: float = 0.0
    last_ts_ns: int = 0

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2

    @property
    def spread_bp(self) -> float:
        return (self.ask - self.bid) / self.mid * 1e4

    @property
    def microprice(self) -> float:
        depth = self.bid_size + self.ask_size
        if depth <= 0:
            return self.mid
        return (self.bid * self.ask_size + self.ask * self.bid_size) / depth

    @property
    def l1_depth_usd(self) -> float:
        return self.bid * self.bid_size + self.ask * self.ask_size


class Vwap:
    """Volume-weighted average trade price over a trailing window."""

    def __init__(self, window_s: float) -> None:
        self._window_ns = int(window_s * 1e9)
        self._trades: deque[tuple[int, float, float]] = deque()
        self._pq = 0.0
        self._q = 0.0

    def add(self, ts_ns: int, price: float, qty: float) -> None:
        self._trades.append((ts_ns, price * qty, qty))
        self._pq += price * qty
        self._q += qty  # old trades leave in value(): one eviction per decision, not per trade

    def _evict(self, now_ns: int) -> None:
        trades, edge = self._trades, now_ns - self._window_ns
        while trades and trades[0][0] <= edge:
            _, pq, q = trades.popleft()
            self._pq -= pq
            self._q -= q
        if not trades:
            self._pq = self._q = 0.0

    def value(self, now_ns: int) -> float | None:
        self._evict(now_ns)
        return self._pq / self._q if self._q > 0 else None


@dataclass(frozen=True, slots=True)
class Signal:
    """The model's answer for one symbol at one grid step."""

    state: int
    action: int  # -1 SELL, 0 HOLD, +1 BUY
    confidence: float
    exp_edge_bp: float
    drift_score: float
    vol_bp: float
    inference_ms: float = 0.0
    drift_limit: float = 0.0  # the model's calibrated drift threshold (see check_drift)


@dataclass(frozen=True, slots=True)
class Enter:
    side: int
    qty: float
    price: float  # the touch it will take (ask for a buy, bid for a sell)


@dataclass(frozen=True, slots=True)
class Close:
    reason: str  # hold, flip, kill, session_end


@dataclass(frozen=True, slots=True)
class Venue:
    """What the exchange imposes on one symbol."""

    lot_size: float
    min_qty: float
    max_qty: float
    min_notional_usd: float


def size_order(
    signal: Signal,
    price: float,
    symbol: str,
    limits: Limits,
    venue: Venue,
    symbol_open_usd: float,
    total_open_usd: float,
) -> tuple[float, g.Block | None]:
    """qty = base_qty * |edge| / vol, clipped to [min notional, caps], on the lot grid."""
    sym = limits.symbols[symbol]
    edge = abs(signal.exp_edge_bp) if math.isfinite(signal.exp_edge_bp) else 0.0
    vol = signal.vol_bp if signal.vol_bp > MIN_VOL_BP else MIN_VOL_BP  # NaN -> the floor too
    raw = sym.base_qty * edge / vol
    floor_usd = max(sym.min_notional_usd, venue.min_notional_usd)
    room_usd = min(
        sym.max_position_usd - symbol_open_usd, limits.max_total_position_usd - total_open_usd
    )
    lo = max(floor_usd / price, venue.min_qty)
    hi = min(room_usd / price, venue.max_qty)
    qty = min(max(raw, lo), hi)
    lots = math.floor(qty / venue.lot_size + 1e-9)
    if lots * venue.lot_size < lo - 1e-12:  # rounding down fell below the floor: one lot up
        lots = math.ceil(lo / venue.lot_size - 1e-9)
    qty = round(lots * venue.lot_size, 12)
    order_usd = qty * price
    block = g.check_position(order_usd, symbol_open_usd, total_open_usd, limits, sym)
    if block is None:
        block = g.check_min_notional(order_usd, floor_usd)
    if block is None and qty > venue.max_qty + 1e-12:
        block = g.Block(
            g.Reason.MIN_NOTIONAL,
            f"min notional {floor_usd} needs {qty} > the exchange's max qty {venue.max_qty}",
        )
    return qty, block


class Decider:
    """Per-step decisions for all symbols of one strategy (one risk book)."""

    def __init__(
        self,
        limits: Limits,
        venues: dict[str, Venue],
        hold_s: float,
        trade_from_ns: int = 0,
        trade_until_ns: int | None = None,
        kill_engaged: Callable[[], bool] = lambda: False,
        on_block: Callable[[int, str, g.Block], None] | None = None,
        flatten_engaged: Callable[[], bool] | None = None,
    ) -> None:
        self.limits = limits
        self.venues = venues
        self.hold_ns = int((limits.hold_s or hold_s) * 1e9)
        self.trade_from_ns = trade_from_ns
        self.trade_until_ns = trade_until_ns
        self.kill_engaged = kill_engaged
        self.flatten_engaged = flatten_engaged or kill_engaged
        self.on_block = on_block
        self.book = RiskBook()
        self.blocks: dict[str, int] = {}

    def count_block(self, now_ns: int, symbol: str, block: g.Block) -> None:
        """A block decided outside `decide` (e.g. inference unavailable)."""
        self._block(now_ns, symbol, block)

    def _block(self, now_ns: int, symbol: str, block: g.Block) -> None:
        self.blocks[block.reason.value] = self.blocks.get(block.reason.value, 0) + 1
        if self.on_block is not None:
            self.on_block(now_ns, symbol, block)

    def decide(
        self,
        symbol: str,
        now_ns: int,
        signal: Signal,
        market: Book,
        mids: dict[str, float],
        vwap: float | None,
    ) -> Enter | Close | None:
        risk, limits = self.book, self.limits
        risk.roll(now_ns)
        position = risk.positions.get(symbol)
        killed = self.kill_engaged()
        if position is not None:
            return self._manage(position, now_ns, signal, killed and self.flatten_engaged())
        if signal.action == 0 or now_ns < self.trade_from_ns:
            return None
        if self.trade_until_ns is not None and now_ns >= self.trade_until_ns:
            return None
        if signal.action < 0 and not limits.allow_short:
            return None
        sym = limits.symbols[symbol]
        block = (
            g.check_kill(killed)
            or g.check_latency((now_ns - market.last_ts_ns) / 1e6, signal.inference_ms, limits)
            or g.check_drift(signal.drift_score, limits, signal.drift_limit)
            or g.check_min_conf(signal.confidence, limits)
            or g.check_spread(market.spread_bp, signal.vol_bp, limits)
            or g.check_daily(risk.daily_loss_usd(mids), limits)
            or g.check_state_drawdown(signal.state, risk.state_loss_usd(signal.state, mids), limits)
            or g.check_cooldown(
                now_ns, risk.last_entry_ns, risk.last_symbol_entry_ns.get(symbol), limits, sym
            )
        )
        if block is None:
            price = market.ask if signal.action > 0 else market.bid
            qty, block = size_order(
                signal,
                price,
                symbol,
                limits,
                self.venues[symbol],
                risk.open_usd(symbol, market.mid),
                risk.total_open_usd(mids),
            )
            if block is None:
                block = g.check_vwap_anchor(signal.action, market.microprice, vwap, limits)
            if block is None:
                risk.on_entry_submitted(
                    OpenPosition(symbol, signal.action, qty, price, now_ns, signal.state)
                )
                return Enter(signal.action, qty, price)
        self._block(now_ns, symbol, block)
        return None

    def _manage(
        self, position: OpenPosition, now_ns: int, signal: Signal, killed: bool
    ) -> Close | None:
        if not position.filled or position.closing:
            return None  # an order is on its way
        reason = None
        if killed and self.limits.flatten_on_kill:
            reason = "kill"
        elif self.trade_until_ns is not None and now_ns >= self.trade_until_ns:
            reason = "session_end"
        elif now_ns - position.entry_ns >= self.hold_ns:
            reason = "hold"
        elif signal.action == -position.side:
            reason = "flip"
        if reason is None:
            return None
        position.closing = True
        return Close(reason)
