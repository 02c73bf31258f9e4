"""The running node's status: positions and PnL per symbol, equity, regime, model health
and guardrail counts, as the supervisor writes it into the state file every heartbeat
(the ops API's /status and the dashboard read it there)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from pathlib import Path
from typing import Any

from trading.data.window import NS
from trading.settings import AppConfig

log = logging.getLogger(__name__)


def inference_kind(inference: Any) -> str:
    return "remote" if hasattr(inference, "client") else "in_process"


RECENT_TRADES = 50  # the newest closed trades in each heartbeat (the dashboard's list)


def _iso(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / NS, dt.UTC).isoformat()


def _money(value: Any) -> float:
    if value is None:
        return 0.0
    try:
        return float(value.as_double())
    except AttributeError:
        return float(str(value).split()[0])


def _balance(cache: Any, venue: str) -> float | None:
    """The venue account's USDT balance (sandbox and Binance alike); None before the first
    connection."""
    try:
        from nautilus_trader.model.currencies import USDT
        from nautilus_trader.model.identifiers import Venue

        account = cache.account_for_venue(Venue(venue))
        if account is not None:
            return float(account.balance_total(USDT).as_double())
    except Exception:  # no account yet
        pass
    return None


class StatusReporter:
    """Called by the supervisor: the status snapshot as a JSON-ready dict."""

    def __init__(
        self,
        mode: str,
        symbols: list[str],
        trader_id: str,
        venue: str,
        inference: Any,  # the node's (metered) inference
        strategy: Any,  # RegimeStrategy
        cache: Any,  # the node kernel's cache
        recorder: Any,  # JournalingRecorder
        metrics: Any,  # NodeMetrics
    ) -> None:
        self.mode, self.symbols, self.trader_id, self.venue = mode, symbols, trader_id, venue
        self.inference, self.strategy, self.cache = inference, strategy, cache
        self.recorder, self.metrics = recorder, metrics

    def _positions(self, mids: dict[str, float]) -> dict[str, Any]:
        positions, unrealized, realized = [], 0.0, 0.0
        realized_by = dict.fromkeys(self.symbols, 0.0)
        unrealized_by = dict.fromkeys(self.symbols, 0.0)
        for position in self.cache.positions():
            pnl = _money(position.realized_pnl)
            realized += pnl
            realized_by[position.instrument_id.symbol.value] += pnl
        for position in self.cache.positions_open():
            symbol = position.instrument_id.symbol.value
            mid = mids.get(symbol)
            upnl = 0.0
            if mid is not None:
                side = 1.0 if position.is_long else -1.0
                upnl = side * (mid - float(position.avg_px_open)) * float(position.quantity)
            unrealized += upnl
            unrealized_by[symbol] += upnl
            positions.append(
                {
                    "symbol": symbol,
                    "side": "LONG" if position.is_long else "SHORT",
                    "qty": float(position.quantity),
                    "avg_px": float(position.avg_px_open),
                    "unrealized_pnl_usd": round(upnl, 6),
                }
            )
        from nautilus_trader.model.enums import OrderSide

        closed = sorted(self.cache.positions_closed(), key=lambda p: p.ts_closed)
        by_day: dict[str, float] = {}
        for p in closed:  # net PnL of the session's closed trades by the UTC day they closed
            day = _iso(p.ts_closed)[:10]
            by_day[day] = by_day.get(day, 0.0) + _money(p.realized_pnl)
        trades = [
            {
                "symbol": p.instrument_id.symbol.value,
                "side": "LONG" if int(p.entry) == int(OrderSide.BUY) else "SHORT",
                "qty": float(p.peak_qty),
                "entry_time": _iso(p.ts_opened),
                "exit_time": _iso(p.ts_closed),
                "entry_price": float(p.avg_px_open),
                "exit_price": float(p.avg_px_close),
                "pnl_usd": round(_money(p.realized_pnl), 6),
            }
            for p in closed[-RECENT_TRADES:]
        ]
        return {
            "positions": positions,
            "recent_trades": trades,
            "closed_trades": len(closed),
            "pnl_by_day": {k: round(v, 6) for k, v in by_day.items()},
            "realized_pnl_usd": round(realized, 6),
            "unrealized_pnl_usd": round(unrealized, 6),
            "realized_by_symbol": {k: round(v, 6) for k, v in realized_by.items()},
            "unrealized_by_symbol": {k: round(v, 6) for k, v in unrealized_by.items()},
        }

    def __call__(self) -> dict[str, Any]:
        snap = self.strategy.snapshot()
        book = self._positions(snap.mids)
        balance = _balance(self.cache, self.venue)
        book_ts = max(snap.last_tick_ns.values(), default=0)
        inference = self.inference
        return {
            "mode": self.mode,
            "symbols": self.symbols,
            "trader_id": self.trader_id,
            "pid": os.getpid(),
            "model": {
                "inference": inference_kind(inference),
                "version": inference.version,
                "healthy": snap.inference_error is None,
                "last_error": snap.inference_error or getattr(inference, "last_error", None),
                "failures": snap.inference_failures,
                # the production guard's out-of-band finding ("" none; remote inference:
                # the server's /models has it)
                "registry_anomaly": getattr(inference, "anomaly", "") or None,
                "latency_blocks": snap.blocks.get("LATENCY", 0),
            },
            **book,
            "equity_usd": (
                None if balance is None else round(balance + book["unrealized_pnl_usd"], 6)
            ),
            "regime": {k: dict(v) for k, v in self.metrics.last.items()},
            "orders": len(self.recorder.orders),
            "market_data": {
                "stale": self.metrics.stale,
                "outages": self.metrics.outage_count,
                "ticks": self.strategy.ticks_seen,
                "late_ticks": self.strategy.late_ticks,
            },
            "open_orders": [
                {
                    "client_order_id": o.client_order_id.value,
                    "venue_order_id": o.venue_order_id.value if o.venue_order_id else None,
                    "symbol": o.instrument_id.symbol.value,
                    "side": o.side_string(),
                    "type": o.type_string(),
                    "qty": float(o.quantity),
                    "price": float(o.price) if o.has_price else None,
                }
                for o in self.cache.orders_open(venue=None)
            ],
            "found_at_start": self.strategy.found_at_start,
            "market_time": (
                dt.datetime.fromtimestamp(book_ts / NS, dt.UTC).isoformat() if book_ts else None
            ),
            # a replay's warm-up: before this market time decisions warm the features up
            # and nothing trades (None: the node trades from its first tick)
            "trading_from": (
                dt.datetime.fromtimestamp(trade_from / NS, dt.UTC).isoformat()
                if (trade_from := int(self.strategy.config.trade_from_ns or 0))
                else None
            ),
            "blocks": snap.blocks,
        }


class ModelCreated:
    """When each model version was registered (for `model_created_timestamp_seconds`),
    looked up off the event loop: the registry may be a remote MLflow server."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.created: dict[str, float | None] = {}

    def get(self, version: str) -> float | None:
        if version not in self.created:
            self.created[version] = None
            threading.Thread(
                target=self._lookup, args=(version,), name="model-created", daemon=True
            ).start()
        return self.created[version]

    def _lookup(self, version: str) -> None:
        try:
            from trading.regime.registry import Registry

            registry = Registry(self.config.settings.registry, Path(self.config.home))
            self.created[version] = registry.info(int(version)).created.timestamp()
        except Exception as exc:  # the metric stays NaN; trading goes on
            log.warning("cannot read when model version %s was registered: %s", version, exc)
