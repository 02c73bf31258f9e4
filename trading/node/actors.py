"""Actors the node adds next to the strategy: the supervisor (kill switch and status
heartbeat) and the tick recorder (what the node receives goes into the lake)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.data import QuoteTick, TradeTick
from nautilus_trader.model.enums import AggressorSide
from nautilus_trader.model.identifiers import InstrumentId

from trading.node.metrics import NodeMetrics
from trading.node.state import NodeState
from trading.strategy.recorder import OrderContext, Recorder


class SupervisorConfig(ActorConfig, frozen=True):
    switch_poll_s: float = 0.25
    heartbeat_s: float = 1.0
    history_points: int = 20_000  # the dashboard's history kept in the state file


class Supervisor(Actor):
    """Polls the persisted kill switch (the ops API flips it in the state file) and writes
    the status snapshot. Engaging cancels open orders and, if asked, flattens."""

    def __init__(
        self,
        config: SupervisorConfig,
        state: NodeState,
        session_id: int,
        strategy: Any,  # RegimeStrategy
        status: Callable[[], dict[str, Any]],
        cursor: Callable[[], int],
        on_beat: Callable[[dict[str, Any]], None] | None = None,  # the metrics
    ) -> None:
        super().__init__(config)
        self.node_state = state
        self.session_id = session_id
        self.strategy = strategy
        self.status = status
        self.cursor = cursor
        self.on_beat = on_beat
        switch = state.switch()
        self.engaged = switch.engaged
        self.flatten = switch.flatten
        self.reason = switch.reason

    def on_start(self) -> None:
        cfg: SupervisorConfig = self.config
        self.clock.set_timer("switch", _td(cfg.switch_poll_s), callback=self._poll)
        self.clock.set_timer("heartbeat", _td(cfg.heartbeat_s), callback=self._beat)
        self._beat(None)

    def on_stop(self) -> None:
        self._beat(None)

    def _poll(self, _event: Any) -> None:
        switch = self.node_state.switch()
        if switch.engaged and not self.engaged:
            self.log.warning(f"KILL SWITCH ENGAGED by {switch.changed_by}: {switch.reason}")
            self.engaged, self.flatten, self.reason = True, switch.flatten, switch.reason
            self.strategy.engage_kill(flatten=switch.flatten)
        elif not switch.engaged and self.engaged:
            self.log.warning(f"trading re-enabled by {switch.changed_by}: {switch.reason}")
            self.engaged, self.flatten, self.reason = False, False, switch.reason

    def _beat(self, _event: Any) -> None:
        body = self.status()
        if self.on_beat is not None:
            try:
                self.on_beat(body)
            except Exception as exc:  # metrics never stop the heartbeat
                self.log.error(f"updating the metrics failed: {exc!r}")
        cfg: SupervisorConfig = self.config
        self.node_state.heartbeat(self.session_id, body, self.cursor(), cfg.history_points)


class TickRecorderConfig(ActorConfig, frozen=True):
    instrument_ids: tuple[InstrumentId, ...]
    flush_s: float = 60.0


_SIDE = {AggressorSide.BUYER: 1, AggressorSide.SELLER: -1}


class TickRecorder(Actor):
    """Buffers every quote and trade the node receives and merges them into the lake
    (`quotes`/`trades` of each symbol and UTC day) every `flush_s` and at stop, so the
    nightly retrain trains on what the node saw."""

    def __init__(self, config: TickRecorderConfig, lake: Any, venue: str, source: str) -> None:
        super().__init__(config)
        self.lake = lake
        self.venue = venue
        self.source = source
        self.quotes: dict[str, list[tuple[int, float, float, float, float]]] = {}
        self.trades: dict[str, list[tuple[int, int, float, float, int]]] = {}
        self.written_rows = 0
        self.errors = 0
        self._flushing = threading.Lock()

    def on_start(self) -> None:
        cfg: TickRecorderConfig = self.config
        for instrument_id in cfg.instrument_ids:
            self.subscribe_quote_ticks(instrument_id)
            self.subscribe_trade_ticks(instrument_id)
        self.clock.set_timer("record-flush", _td(cfg.flush_s), callback=lambda _e: self.flush())

    def on_stop(self) -> None:
        self.flush()

    def on_quote_tick(self, tick: QuoteTick) -> None:
        self.quotes.setdefault(tick.instrument_id.symbol.value, []).append(
            (
                tick.ts_event,
                tick.bid_price.as_double(),
                tick.ask_price.as_double(),
                tick.bid_size.as_double(),
                tick.ask_size.as_double(),
            )
        )

    def on_trade_tick(self, tick: TradeTick) -> None:
        try:
            trade_id = int(tick.trade_id.value)
        except ValueError:
            trade_id = abs(hash(tick.trade_id.value)) % (1 << 62)
        self.trades.setdefault(tick.instrument_id.symbol.value, []).append(
            (
                tick.ts_event,
                trade_id,
                tick.price.as_double(),
                tick.size.as_double(),
                _SIDE.get(tick.aggressor_side, 0),
            )
        )

    def flush(self) -> None:
        # the flush timer and the stop can run at once (the live clock's timers fire from
        # another thread): one flush at a time
        with self._flushing:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        from trading.data.schemas import SCHEMAS

        pairs: tuple[tuple[str, dict[str, list[Any]]], ...] = (
            ("quotes", self.quotes),
            ("trades", self.trades),
        )
        for kind, buffers in pairs:
            for symbol in list(buffers):
                rows = buffers.pop(symbol, None)
                if not rows:
                    continue
                names = SCHEMAS[kind].names
                table = pa.table(
                    {n: [r[i] for r in rows] for i, n in enumerate(names)}, schema=SCHEMAS[kind]
                )
                try:
                    self.lake.write(self.venue, symbol, kind, table, self.source, merge=True)
                    self.written_rows += len(rows)
                except Exception as exc:  # keep the rows for the next flush
                    self.errors += 1
                    buffers.setdefault(symbol, [])[:0] = rows
                    self.log.error(f"recording {symbol} {kind} into the lake failed: {exc}")


class JournalingRecorder(Recorder):
    """The strategy's recorder that also writes every order to the state file's journal
    before it is sent (the strategy records an order, then submits it)."""

    def __init__(
        self, state: NodeState, run_key: str, session_id: int, metrics: NodeMetrics | None = None
    ) -> None:
        super().__init__()
        self.state = state
        self.run_key = run_key
        self.session_id = session_id
        self.metrics = metrics
        self.new_orders = 0
        self.recovered_orders = 0

    def step(
        self,
        ts_ns: int,
        decided_ns: int,
        symbol: str,
        out: np.ndarray,
        mid: float,
        spread_bp: float,
        vol_bp: float,
    ) -> None:
        super().step(ts_ns, decided_ns, symbol, out, mid, spread_bp, vol_bp)
        if self.metrics is not None:
            self.metrics.step(symbol, out)

    def block(self, ts_ns: int, symbol: str, reason: str, detail: str) -> None:
        super().block(ts_ns, symbol, reason, detail)
        if self.metrics is not None:
            self.metrics.block(symbol, reason)

    def fill(self, symbol: str, side: str, qty: float, price: float) -> None:
        if self.metrics is not None:
            self.metrics.fill(symbol, side)

    def order(self, context: OrderContext) -> None:
        super().order(context)
        if self.metrics is not None:
            self.metrics.order(context.symbol, context.kind)
        key = f"{context.symbol}:{context.kind}:{context.side}:{context.ts_ns}"
        new = self.state.journal_order(
            self.run_key,
            key,
            context.client_order_id,
            context.symbol,
            context.kind,
            context.side,
            0.0 if math.isnan(context.touch_px) else context.touch_px,
            context.ts_ns,
            self.session_id,
        )
        if new:
            self.new_orders += 1
        else:
            self.recovered_orders += 1


def _td(seconds: float) -> Any:
    import datetime as dt

    return dt.timedelta(seconds=seconds)


def monotonic_s() -> float:
    return time.monotonic()
