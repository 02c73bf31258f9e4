"""RegimeStrategy: the one NautilusTrader Strategy of hmm-trader (backtest, canary, replay,
paper, testnet, live).

Ticks -> online FEATURES_V1 (per symbol) -> inference at each completed grid step ->
`Decider` (guardrails, sizing, VWAP rule) -> market orders. A BARS_V1 model instead
consumes closed 1-minute `Bar` events (1-MINUTE-LAST-EXTERNAL): each bar's close is the
strategy's price (bid = ask = close: bars carry no spread), the bar's typical price and
volume feed the VWAP, online BARS_V1 makes one row per bar and volatility is Parkinson's,
in bp per bar. Orders decided on a bar fill at the venue on the next bar's open. Handlers only wire events to
those plain objects. Positions are held for the model's label horizon (or until the
signal flips, the kill switch engages or the session ends) and closed explicitly: the
venue runs a HEDGING order-management system, one position per entry.
"""

from __future__ import annotations

import heapq
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from nautilus_trader.config import StrategyConfig
from nautilus_trader.model.data import Bar, QuoteTick, TradeTick
from nautilus_trader.model.enums import AggressorSide, OrderSide
from nautilus_trader.model.events import (
    OrderDenied,
    OrderFilled,
    OrderRejected,
    PositionClosed,
    PositionOpened,
)
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.trading.strategy import Strategy

from trading.data.nautilus import bar_open_ns, bar_type
from trading.data.schemas import BUYER, SELLER
from trading.features.bars import OnlineBarFeatures
from trading.features.descriptor import BARS_V1
from trading.features.v1 import FeatureRow, OnlineFeatures
from trading.regime import kernel
from trading.strategy.config import Limits
from trading.strategy.decide import Book, Close, Decider, Enter, Signal, Venue, Vwap
from trading.strategy.guardrails import Block, Reason
from trading.strategy.inference import Inference, InferenceUnavailableError, InProcessInference
from trading.strategy.recorder import OrderContext, Recorder
from trading.strategy.risk import OpenPosition


class RegimeStrategyConfig(StrategyConfig, frozen=True):
    instrument_ids: tuple[InstrumentId, ...]
    limits: Limits
    model_ref: str = "production"  # used when no Inference is passed in
    registry_uri: str | None = None  # None: the default store under `home`
    home: str = "var"  # HMMTRADER_HOME of the registry when registry_uri is None
    model_name: str = "hmm-regime"
    trade_from_ns: int = 0  # warm-up: before it, decisions are computed but nothing trades
    trade_until_ns: int | None = None  # after it, close everything and take no new risk
    measure_inference_latency: bool = True  # False in backtests: decisions stay reproducible
    progress_every_s: float = 0.0  # >0: call the progress callback this often (event time)
    inference_retry_s: float = 1.0  # after inference failed, steps skip it this long (wall)
    # a bar model on a live venue: subscribe quotes too, so the (sandbox) venue has prices
    # to fill on between bars; they feed nothing else
    venue_quotes: bool = False
    # after the venue's rate-limit answer: no new entries this long (doubling while the
    # answers keep coming, at most 10 min; a 418's ban end when it says one)
    rate_limit_backoff_s: float = 30.0
    # a live venue: hold ticks this long (market time) to use them in time order; 0: as
    # they come (backtests and replays deliver them in order)
    reorder_s: float = 0.0


@dataclass(slots=True)
class _Symbol:
    """Everything the strategy keeps for one instrument."""

    name: str
    instrument: Instrument
    features: OnlineFeatures | OnlineBarFeatures
    book: Book
    vwap: Vwap
    rv_index: int


_SIDE = {AggressorSide.BUYER: BUYER, AggressorSide.SELLER: SELLER}
# a venue's rate-limit answer in an order rejection: Binance's -1003 (429 too much weight,
# 418 banned) and -1015 (too many new orders)
_RATE_LIMITED = re.compile(r"-1003|-1015|Too many requests|Too much request weight|banned", re.I)
_BANNED_UNTIL = re.compile(r"banned until (\d{13})")


@dataclass(frozen=True)
class StrategySnapshot:
    """What the node's status and metrics read of a running strategy."""

    last_tick_ns: dict[str, int]  # per symbol: the last quote or trade seen (0: none yet)
    mids: dict[str, float]  # per symbol with a quote: the last mid
    blocks: dict[str, int]  # guardrail blocks by reason
    inference_error: str | None  # the last inference failure, while it lasts
    inference_failures: int


class RegimeStrategy(Strategy):
    def __init__(
        self,
        config: RegimeStrategyConfig,
        inference: Inference | None = None,
        kill_engaged: Callable[[], bool] | None = None,
        recorder: Recorder | None = None,
        progress: Callable[[int], None] | None = None,
        flatten_engaged: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(config)
        self.inference = inference
        self.kill_engaged = kill_engaged or (lambda: False)
        # the switch asks to close positions too (default: whenever it is engaged)
        self.flatten_engaged = flatten_engaged or self.kill_engaged
        self.recorder = recorder or Recorder()
        self.progress = progress
        self.decider: Decider | None = None
        self._symbols: dict[InstrumentId, _Symbol] = {}
        self._by_name: dict[str, _Symbol] = {}
        self._mids: dict[str, float] = {}
        self._next_progress_ns = 0
        # inference health (the node's status): failures, the last error, retry time
        self.inference_failures = 0
        self.ticks_seen = 0  # market events received (quotes, trades, bars)
        self.rate_limit_events = 0  # the venue's 429/418 answers
        # live venues: ticks held back to be used in time order (see _hold)
        self._reorder_ns = int(config.reorder_s * 1e9)
        self._pending: list[tuple[int, int, int, int, QuoteTick | TradeTick]] = []
        self._pending_seq = 0
        self._adopted: set[str] = set()  # adopted positions whose clock awaits a first quote
        self._newest_ns = 0
        self._released_ns = 0
        self._order: dict[InstrumentId, int] = {}
        self.late_ticks = 0
        self.first_late_ns: int | None = None  # market time of the first late tick
        # what the venue had open when the strategy started (after a live restart's
        # reconciliation): positions adopted and orders found, for the status
        self.found_at_start: dict[str, list[dict[str, Any]]] = {"positions": [], "open_orders": []}
        self._rate_limited_until = 0.0  # monotonic: no new entries before
        self._rate_limit_streak = 0
        self._stale = False  # the market data is silent (the node's heartbeat says)
        self.inference_error: str | None = None
        self._inference_retry_at = 0.0
        self.bars = False  # a BARS_V1 model: bars in, not ticks (set at start)

    def snapshot(self) -> StrategySnapshot:
        return StrategySnapshot(
            last_tick_ns={slot.name: slot.book.last_ts_ns for slot in self._symbols.values()},
            mids=dict(self._mids),
            blocks=dict(self.decider.blocks) if self.decider is not None else {},
            inference_error=self.inference_error,
            inference_failures=self.inference_failures,
        )

    # ---- lifecycle ----
    def on_start(self) -> None:
        cfg: RegimeStrategyConfig = self.config
        if self.inference is None:
            self.inference = _registry_inference(cfg)
        inference = self.inference
        fs = inference.feature_set
        self.bars = fs.name == BARS_V1
        rv_index = fs.raw_columns.index("raw_parkinson_bp" if self.bars else "raw_rv_bp")
        venues = {}
        for instrument_id in cfg.instrument_ids:
            instrument = self.cache.instrument(instrument_id)
            if instrument is None:
                raise ValueError(f"instrument {instrument_id} is not in the cache")
            name = instrument_id.symbol.value
            slot = _Symbol(
                name,
                instrument,
                OnlineBarFeatures(fs) if self.bars else OnlineFeatures(fs),
                Book(),
                Vwap(cfg.limits.vwap_window_s),
                rv_index,
            )
            self._symbols[instrument_id] = self._by_name[name] = slot
            self._order[instrument_id] = len(self._order)
            venues[name] = Venue(
                lot_size=float(instrument.size_increment),
                min_qty=float(instrument.min_quantity or instrument.size_increment),
                max_qty=float(instrument.max_quantity or 1e12),
                min_notional_usd=float(instrument.min_notional or 0.0),
            )
            if self.bars:
                self.subscribe_bars(bar_type(instrument_id))
                if cfg.venue_quotes:
                    self.subscribe_quote_ticks(instrument_id)
            else:
                self.subscribe_quote_ticks(instrument_id)
                self.subscribe_trade_ticks(instrument_id)
        self.decider = Decider(
            cfg.limits,
            venues,
            hold_s=inference.horizon_s,
            trade_from_ns=cfg.trade_from_ns,
            trade_until_ns=cfg.trade_until_ns,
            kill_engaged=self.kill_engaged,
            flatten_engaged=self.flatten_engaged,
            on_block=self._on_block,
        )
        self._adopt_open_positions()
        self._report_open_orders()

    def on_stop(self) -> None:
        self._release(self._newest_ns)
        for slot in self._symbols.values():
            self._close_all(slot)

    # ---- market data ----
    def on_quote_tick(self, tick: QuoteTick) -> None:
        self.ticks_seen += 1
        if self._reorder_ns:
            self._hold(tick, 0)
        else:
            self._on_quote(tick)

    def on_trade_tick(self, tick: TradeTick) -> None:
        self.ticks_seen += 1
        if self._reorder_ns:
            self._hold(tick, 1)
        else:
            self._on_trade(tick)

    def _hold(self, tick: QuoteTick | TradeTick, kind: int) -> None:
        """A live venue's quotes and trades come on separate connections and may arrive
        out of time order; a backtest reads them in time order (then symbol, quotes before
        trades). Ticks wait here until `reorder_s` of market time has passed after them,
        then go on in that order, so the node decides on what a backtest would. A tick
        older than one already passed on is late: counted, and used as it is."""
        ts = tick.ts_event
        if ts < self._released_ns:
            self.late_ticks += 1
            if self.first_late_ns is None:
                self.first_late_ns = ts
            if self.late_ticks <= 5:
                self.log.warning(
                    f"late {'trade' if kind else 'quote'} of {tick.instrument_id.symbol}: "
                    f"{(self._released_ns - ts) / 1e9:.3f} s older than ticks already used "
                    f"(newest {(self._newest_ns - ts) / 1e9:.3f} s ahead; node.reorder_s "
                    f"{self._reorder_ns / 1e9:g}); used out of order"
                )
        order = self._order.get(tick.instrument_id, 0)
        heapq.heappush(self._pending, (ts, order, kind, self._pending_seq, tick))
        self._pending_seq += 1
        self._newest_ns = max(self._newest_ns, ts)
        self._release(self._newest_ns - self._reorder_ns)

    def _release(self, until_ns: int) -> None:
        pending = self._pending
        while pending and pending[0][0] <= until_ns:
            ts, _, kind, _, tick = heapq.heappop(pending)
            self._released_ns = max(self._released_ns, ts)
            if kind == 0:
                self._on_quote(tick)
            else:
                self._on_trade(tick)

    def _on_quote(self, tick: QuoteTick) -> None:
        slot = self._symbols[tick.instrument_id]
        if self._adopted and slot.name in self._adopted:
            self._clock_adopted(slot.name, tick.ts_event)
        if self.bars:
            return  # a bar model's venue quotes: the strategy reads bars only
        book = slot.book
        ts = tick.ts_event
        book.bid = tick.bid_price.as_double()
        book.ask = tick.ask_price.as_double()
        book.bid_size = tick.bid_size.as_double()
        book.ask_size = tick.ask_size.as_double()
        book.last_ts_ns = ts
        self._mids[slot.name] = (book.bid + book.ask) * 0.5
        features = slot.features
        assert isinstance(features, OnlineFeatures)
        rows = features.on_quote(ts, book.bid, book.ask, book.bid_size, book.ask_size)
        if rows:
            self._on_rows(slot, rows, ts)

    def _on_trade(self, tick: TradeTick) -> None:
        slot = self._symbols[tick.instrument_id]
        ts = tick.ts_event
        price, qty = tick.price.as_double(), tick.size.as_double()
        slot.book.last_ts_ns = ts
        slot.vwap.add(ts, price, qty)
        features = slot.features
        assert isinstance(features, OnlineFeatures)
        rows = features.on_trade(ts, price, qty, _SIDE.get(tick.aggressor_side, 0))
        if rows:
            self._on_rows(slot, rows, ts)

    def on_bar(self, bar: Bar) -> None:
        self.ticks_seen += 1
        slot = self._symbols.get(bar.bar_type.instrument_id)
        if slot is None or not isinstance(slot.features, OnlineBarFeatures):
            return
        book = slot.book
        ts = bar.ts_event  # the bar's close
        high, low = bar.high.as_double(), bar.low.as_double()
        close, volume = bar.close.as_double(), bar.volume.as_double()
        book.bid = book.ask = close
        book.bid_size = book.ask_size = volume
        book.last_ts_ns = ts
        self._mids[slot.name] = close
        slot.vwap.add(ts, (high + low + close) / 3.0, volume)
        rows = slot.features.on_bar(bar_open_ns(ts), high, low, close, volume)
        if rows:
            self._on_rows(slot, rows, ts)

    # ---- decisions ----
    def _on_rows(self, slot: _Symbol, rows: Sequence[FeatureRow], now_ns: int) -> None:
        inference = self.inference
        assert inference is not None and self.decider is not None
        book = slot.book
        out = None
        vol_bp = math.nan
        inference_ms = 0.0
        for row in rows:
            if not row.ready:
                continue
            x = np.concatenate((row.values, row.raw))
            if not np.isfinite(x).all():
                self.recorder.nan_steps += 1
                continue
            if self.config.measure_inference_latency:
                t0 = time.perf_counter()
                if t0 < self._inference_retry_at:
                    self._inference_down(slot.name, now_ns, None)
                    return
                try:
                    out = inference.step(slot.name, x, row.ts_ns)
                except InferenceUnavailableError as exc:
                    self._inference_down(slot.name, now_ns, exc)
                    return
                inference_ms = (time.perf_counter() - t0) * 1e3
                if self.inference_error is not None:
                    self.log.info(f"inference is back (version {inference.version})")
                    self.inference_error = None
            else:
                out = inference.step(slot.name, x, row.ts_ns)
            vol_bp = float(row.raw[slot.rv_index])
            if not np.isfinite(out[: kernel.OUT_POSTERIOR]).all():
                self.recorder.nan_steps += 1
            self.recorder.step(row.ts_ns, now_ns, slot.name, out, book.mid, book.spread_bp, vol_bp)
        if self.progress is not None and now_ns >= self._next_progress_ns:
            self.progress(now_ns)
            self._next_progress_ns = now_ns + int(self.config.progress_every_s * 1e9)
        if out is None:
            return
        signal = Signal(
            state=int(out[kernel.OUT_STATE]),
            action=int(out[kernel.OUT_ACTION]),
            confidence=float(out[kernel.OUT_CONFIDENCE]),
            exp_edge_bp=float(out[kernel.OUT_EDGE]),
            drift_score=float(out[kernel.OUT_DRIFT]),
            vol_bp=vol_bp,
            inference_ms=inference_ms,
            drift_limit=inference.drift_limit,
        )
        decision = self.decider.decide(
            slot.name, now_ns, signal, book, self._mids, slot.vwap.value(now_ns)
        )
        if isinstance(decision, Enter):
            self._enter(slot, decision, signal, now_ns)
        elif isinstance(decision, Close):
            self._close_all(slot, decision.reason, signal, now_ns)

    def _context(
        self, slot: _Symbol, order_id: str, kind: str, side: int, signal: Signal | None, now_ns: int
    ) -> OrderContext:
        book = slot.book
        return OrderContext(
            client_order_id=order_id,
            symbol=slot.name,
            kind=kind,
            ts_ns=now_ns,
            side=side,
            touch_px=book.ask if side > 0 else book.bid,
            mid=book.mid,
            spread_bp=book.spread_bp,
            vol_bp=signal.vol_bp if signal else math.nan,
            l1_depth_usd=book.l1_depth_usd,
            state=signal.state if signal else -1,
            confidence=signal.confidence if signal else math.nan,
            exp_edge_bp=signal.exp_edge_bp if signal else math.nan,
        )

    def _enter(self, slot: _Symbol, enter: Enter, signal: Signal, now_ns: int) -> None:
        if self._stale:
            assert self.decider is not None
            self.decider.book.on_entry_failed(slot.name)
            self.decider.count_block(
                now_ns, slot.name, Block(Reason.LATENCY, "market data was silent: waiting")
            )
            return
        if self.rate_limited():
            assert self.decider is not None
            self.decider.book.on_entry_failed(slot.name)
            self.decider.count_block(
                now_ns, slot.name, Block(Reason.RATE_LIMIT, "the venue's rate limit: waiting")
            )
            return
        order = self.order_factory.market(
            slot.instrument.id,
            OrderSide.BUY if enter.side > 0 else OrderSide.SELL,
            slot.instrument.make_qty(enter.qty),
        )
        self.recorder.order(
            self._context(slot, order.client_order_id.value, "entry", enter.side, signal, now_ns)
        )
        self.submit_order(order)

    def _close_all(
        self, slot: _Symbol, reason: str = "stop", signal: Signal | None = None, now_ns: int = 0
    ) -> None:
        if self.rate_limited() and reason != "stop":
            # the venue refuses orders now: the close is tried again after the wait
            book = self.decider.book.positions.get(slot.name) if self.decider else None
            if book is not None:
                book.closing = False
            return
        for position in self.cache.positions_open(
            instrument_id=slot.instrument.id, strategy_id=self.id
        ):
            side = -1 if position.is_long else 1
            order = self.order_factory.market(
                slot.instrument.id,
                OrderSide.SELL if position.is_long else OrderSide.BUY,
                position.quantity,
                reduce_only=True,
            )
            self.recorder.order(
                self._context(
                    slot,
                    order.client_order_id.value,
                    reason,
                    side,
                    signal,
                    now_ns or slot.book.last_ts_ns,
                )
            )
            self.submit_order(order, position_id=position.id)

    def _inference_down(self, symbol: str, ts_ns: int, exc: Exception | None) -> None:
        """No answer for this step: no decision (no new risk), counted as LATENCY."""
        assert self.decider is not None
        if exc is not None:
            self.inference_failures += 1
            if self.inference_error is None:
                self.log.warning(f"inference unavailable, taking no new risk: {exc}")
            self.inference_error = str(exc)
            self._inference_retry_at = time.perf_counter() + self.config.inference_retry_s
        self.decider.count_block(
            ts_ns, symbol, Block(Reason.LATENCY, f"inference unavailable: {self.inference_error}")
        )
        # an open position is still managed (hold time, session end, kill switch) on a
        # signal that asks for nothing
        slot = self._by_name[symbol]
        if self.decider.book.positions.get(symbol) is not None:
            idle = Signal(-1, 0, math.nan, math.nan, math.nan, math.nan)
            decision = self.decider.decide(
                symbol, ts_ns, idle, slot.book, self._mids, slot.vwap.value(ts_ns)
            )
            if isinstance(decision, Close):
                self._close_all(slot, decision.reason, None, ts_ns)

    def engage_kill(self, flatten: bool) -> None:
        """The kill switch was engaged: cancel open orders now and, with `flatten` (and the
        strategy's flatten_on_kill), close every open position without waiting for a tick."""
        for slot in self._symbols.values():
            self.cancel_all_orders(slot.instrument.id)
            if flatten and self.config.limits.flatten_on_kill:
                position = self.decider.book.positions.get(slot.name) if self.decider else None
                if position is not None and position.closing:
                    continue
                if position is not None:
                    position.closing = True
                self._close_all(slot, "kill")

    def _adopt_open_positions(self) -> None:
        """Positions already open when the strategy starts (a live venue's reconciliation
        after a restart) enter the risk book, so they are managed and counted. They are not
        new entries (no cooldown follows them); their hold time counts from the
        reconciliation, or from the venue's first quote if that is earlier."""
        assert self.decider is not None
        book = self.decider.book
        for slot in self._symbols.values():
            for position in self.cache.positions_open(instrument_id=slot.instrument.id):
                side = "LONG" if position.is_long else "SHORT"
                last = (book.last_entry_ns, dict(book.last_symbol_entry_ns))
                book.on_entry_submitted(
                    OpenPosition(
                        slot.name,
                        1 if position.is_long else -1,
                        float(position.quantity),
                        float(position.avg_px_open),
                        int(position.ts_opened),
                        -1,
                    )
                )
                book.on_entry_filled(
                    slot.name, float(position.quantity), float(position.avg_px_open)
                )
                book.last_entry_ns, book.last_symbol_entry_ns = last
                self._adopted.add(slot.name)
                self.log.warning(
                    f"adopted open position {position.id}: {slot.name} "
                    f"{side} {position.quantity} @ {position.avg_px_open}"
                )
                self.found_at_start["positions"].append(
                    {
                        "symbol": slot.name,
                        "side": side,
                        "qty": float(position.quantity),
                        "avg_px": float(position.avg_px_open),
                    }
                )

    def _clock_adopted(self, symbol: str, ts_ns: int) -> None:
        self._adopted.discard(symbol)
        position = self.decider.book.positions.get(symbol) if self.decider else None
        if position is not None:
            position.entry_ns = min(position.entry_ns, ts_ns)

    def _report_open_orders(self) -> None:
        """Orders open on the venue when the strategy starts (a live venue's reconciliation
        after a restart, or placed by hand): said in the log; the status lists them."""
        for slot in self._symbols.values():
            for order in self.cache.orders_open(instrument_id=slot.instrument.id):
                self.log.warning(
                    f"found open order {order.client_order_id} ({order.side_string()} "
                    f"{order.type_string()} {order.quantity} {slot.name}"
                    + (f" @ {order.price}" if order.has_price else "")
                    + f", venue id {order.venue_order_id}) at start"
                )
                self.found_at_start["open_orders"].append(
                    {
                        "client_order_id": order.client_order_id.value,
                        "symbol": slot.name,
                        "side": order.side_string(),
                        "qty": float(order.quantity),
                        "price": float(order.price) if order.has_price else None,
                    }
                )

    def _on_block(self, ts_ns: int, symbol: str, block: Block) -> None:
        self.recorder.block(ts_ns, symbol, block.reason.value, block.detail)

    # ---- execution events -> risk book ----
    def on_position_opened(self, event: PositionOpened) -> None:
        assert self.decider is not None
        self.decider.book.on_entry_filled(
            event.instrument_id.symbol.value, float(event.quantity), float(event.avg_px_open)
        )

    def on_position_closed(self, event: PositionClosed) -> None:
        assert self.decider is not None
        self.decider.book.on_closed(
            event.instrument_id.symbol.value, float(event.realized_pnl), event.ts_closed
        )

    def on_order_filled(self, event: OrderFilled) -> None:
        self.recorder.fill(
            event.instrument_id.symbol.value,
            "BUY" if event.order_side == OrderSide.BUY else "SELL",
            float(event.last_qty),
            float(event.last_px),
        )

    def on_order_rejected(self, event: OrderRejected) -> None:
        self._order_failed(event.client_order_id.value, event.instrument_id.symbol.value)
        self._check_rate_limited(str(event.reason), event.instrument_id.symbol.value)

    def on_order_denied(self, event: OrderDenied) -> None:
        self._order_failed(event.client_order_id.value, event.instrument_id.symbol.value)

    def _check_rate_limited(self, reason: str, symbol: str) -> None:
        """A venue's rate-limit answer (Binance -1003 with 429 or 418, -1015): no new
        entries until it has passed. The wait is the ban's end when the venue says it (418),
        else `rate_limit_backoff_s`, doubling while the answers keep coming (at most 10 min).
        Each answer is counted as a RATE_LIMIT block."""
        if not _RATE_LIMITED.search(reason):
            return
        now = time.monotonic()
        streak = self._rate_limit_streak if now < self._rate_limited_until + 60.0 else 0
        wait = min(self.config.rate_limit_backoff_s * 2.0**streak, 600.0)
        banned = _BANNED_UNTIL.search(reason)
        if banned:
            wait = max(wait, int(banned.group(1)) / 1000.0 - time.time())
        self._rate_limit_streak = streak + 1
        self._rate_limited_until = max(self._rate_limited_until, now + wait)
        self.rate_limit_events += 1
        self.log.warning(
            f"the venue rate-limits us ({reason[:160]}): no new orders for {wait:.0f} s"
        )
        if self.decider is not None:
            ts = self._symbols_last_ts(symbol)
            self.decider.count_block(ts, symbol, Block(Reason.RATE_LIMIT, reason[:200]))

    def market_stale(self, stale: bool, outages: int) -> None:
        """The node's heartbeat: whether the market data is silent (no tick for
        node.stale_after_s of wall time). Entering an outage counts a LATENCY block per
        symbol; until a heartbeat sees ticks again, entries are blocked."""
        if stale and not self._stale:
            self.log.warning(
                f"market data silent: outage {outages}; no new entries until it is back"
            )
            if self.decider is not None:
                for name, slot in self._by_name.items():
                    self.decider.count_block(
                        slot.book.last_ts_ns, name, Block(Reason.LATENCY, "market data silent")
                    )
        elif not stale and self._stale:
            self.log.warning("market data is back")
        self._stale = stale

    def rate_limited(self) -> bool:
        return time.monotonic() < self._rate_limited_until

    def _symbols_last_ts(self, symbol: str) -> int:
        slot = self._by_name.get(symbol)
        return int(slot.book.last_ts_ns) if slot is not None else 0

    def _order_failed(self, client_order_id: str, symbol: str) -> None:
        assert self.decider is not None
        context = self.recorder.orders.get(client_order_id)
        if context is not None and context.kind == "entry":
            self.decider.book.on_entry_failed(symbol)
        else:  # a close failed: allow the next step to try again
            position = self.decider.book.positions.get(symbol)
            if position is not None:
                position.closing = False
        self.log.warning(f"order {client_order_id} of {symbol} failed")


def _registry_inference(cfg: RegimeStrategyConfig) -> Inference:
    """Load the configured registry reference (production alias by default)."""
    from pathlib import Path

    from trading.regime.config import RegistrySettings
    from trading.regime.registry import Registry

    settings = RegistrySettings(tracking_uri=cfg.registry_uri, model_name=cfg.model_name)
    registry = Registry(settings, Path(cfg.home))
    model, version = registry.load(cfg.model_ref)
    return InProcessInference(model, version)
