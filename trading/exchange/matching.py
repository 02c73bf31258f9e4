"""The matching engine and the account of the local Binance Spot exchange.

Fill rules (the ones a parity report explains differences by):
- MARKET and marketable LIMIT orders fill in full on arrival, as the taker, at the touch of
  the replayed book (the ask for a buy, the bid for a sell) moved against the order by
  `slippage_bp`, rounded to the tick away from the order; a marketable LIMIT never fills
  beyond its limit price. The book is L1: its size does not limit the fill.
- A resting LIMIT order fills in full, as the maker, at its limit price, on the first quote
  whose ask (buy) or bid (sell) crosses it.
- Fees are the symbol's maker/taker fee on the fill's notional, charged in the quote asset
  (USDT), so the base quantity bought is the quantity asked for.
Balances: a resting BUY locks its notional plus the taker fee in the quote asset; a resting
SELL locks its quantity in the base asset. Every change is written to the ledger and
published as Binance's user-data events (executionReport, outboundAccountPosition).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from trading.exchange import shapes
from trading.exchange.ledger import Ledger
from trading.exchange.orders import ZERO, Balance, Book, Fill, Instrument, Order, fmt

ORDER_TYPES = ("MARKET", "LIMIT", "LIMIT_MAKER")
TIME_IN_FORCE = ("GTC", "IOC", "FOK")
OPEN = ("NEW", "PARTIALLY_FILLED")


class ExchangeError(Exception):
    """A request the exchange refuses, in Binance's shape: HTTP status, code, msg."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "msg": self.msg}


def bad_param(msg: str) -> ExchangeError:
    return ExchangeError(400, -1102, msg)


def rejected(msg: str) -> ExchangeError:
    return ExchangeError(400, -2010, msg)


def _dec(value: Any, name: str) -> Decimal:
    try:
        out = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ExchangeError(
            400, -1100, f"Illegal characters found in parameter '{name}'."
        ) from None
    if not out.is_finite():
        raise ExchangeError(400, -1100, f"Illegal characters found in parameter '{name}'.")
    return out


@dataclass
class Matching:
    """One account on the exchange (the API key's) and the order books of its symbols."""

    instruments: dict[str, Instrument]
    balances: dict[str, Balance]
    ledger: Ledger
    slippage_bp: Decimal = ZERO
    publish: Callable[[dict[str, Any]], None] = lambda event: None
    books: dict[str, Book] = field(default_factory=dict)
    orders: dict[int, Order] = field(default_factory=dict)
    resting: dict[int, Order] = field(default_factory=dict)  # the open ones (a quote's work)
    fills: list[Fill] = field(default_factory=list)
    next_order_id: int = 1
    next_trade_id: int = 1
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        for inst in self.instruments.values():
            self.books.setdefault(inst.symbol, Book())
            for asset in (inst.base, inst.quote):
                self.balances.setdefault(asset, Balance())

    # ---- lookups ----------------------------------------------------------------------------
    def instrument(self, symbol: str | None) -> Instrument:
        if not symbol:
            raise ExchangeError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")  # fmt: skip
        inst = self.instruments.get(symbol.upper())
        if inst is None:
            raise ExchangeError(400, -1121, "Invalid symbol.")
        return inst

    def find(self, symbol: str, order_id: Any = None, client_id: Any = None) -> Order:
        inst = self.instrument(symbol)
        if order_id not in (None, ""):
            order = self.orders.get(int(_dec(order_id, "orderId")))
            if order is not None and order.symbol == inst.symbol:
                return order
        elif client_id:
            for order in reversed(list(self.orders.values())):
                if order.client_id == client_id and order.symbol == inst.symbol:
                    return order
        else:
            raise bad_param("Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")  # fmt: skip
        raise ExchangeError(400, -2013, "Order does not exist.")

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        sym = self.instrument(symbol).symbol if symbol else None
        return [o for o in self.resting.values() if sym is None or o.symbol == sym]

    # ---- orders -----------------------------------------------------------------------------
    def new_order(self, p: dict[str, str], now_ms: int) -> tuple[Order, list[Fill]]:
        """Place an order from Binance's parameters (symbol, side, type, quantity, price,
        timeInForce, newClientOrderId); the order and the fills it got on arrival."""
        with self.lock:
            try:
                return self._new_order(p, now_ms)
            except ExchangeError as exc:
                self.ledger.write(
                    "order_rejected", now_ms, client_order_id=p.get("newClientOrderId"),
                    symbol=p.get("symbol"), side=p.get("side"), type=p.get("type"),
                    qty=p.get("quantity"), code=exc.code, msg=exc.msg,
                )  # fmt: skip
                raise

    def _new_order(self, p: dict[str, str], now_ms: int) -> tuple[Order, list[Fill]]:
        order = self._validate(p, now_ms)
        book = self.books[order.symbol]
        inst = self.instruments[order.symbol]
        marketable = order.type == "MARKET" or (
            book.ready
            and (order.price >= book.ask if order.side == "BUY" else order.price <= book.bid)
        )
        if order.type == "MARKET" and not book.ready:
            raise rejected(f"No market data for {order.symbol} yet: the book is empty.")
        if order.type == "LIMIT_MAKER" and marketable:
            raise rejected("Order would immediately match and take.")
        touch = self._taker_price(inst, order) if marketable else order.price
        self._check_funds(inst, order, touch)
        self.orders[order.order_id] = order
        self.next_order_id += 1
        self.ledger.write(
            "order_new", now_ms, order_id=order.order_id, client_order_id=order.client_id,
            symbol=order.symbol, side=order.side, type=order.type, time_in_force=order.tif,
            price=fmt(order.price), qty=fmt(order.qty),
        )  # fmt: skip
        fills: list[Fill] = []
        if marketable:
            self._report(order, "NEW", None, now_ms)
            fills.append(self._fill(inst, order, touch, False, now_ms))
        elif order.tif in ("IOC", "FOK"):
            order.status = "EXPIRED"
            order.update_ms = now_ms
            self.ledger.write("order_expired", now_ms, order_id=order.order_id,
                              client_order_id=order.client_id, symbol=order.symbol)  # fmt: skip
            self._report(order, "EXPIRED", None, now_ms)
        else:
            self._lock_funds(inst, order, now_ms)
            self.resting[order.order_id] = order
            self._report(order, "NEW", None, now_ms)
        return order, fills

    def cancel(
        self, symbol: str, order_id: Any, client_id: Any, now_ms: int, reason: str = "request"
    ) -> Order:
        with self.lock:
            order = self.find(symbol, order_id, client_id)
            if not order.is_open:
                raise ExchangeError(400, -2011, "Unknown order sent.")
            self._cancel(order, now_ms, reason)
            return order

    def cancel_all(self, symbol: str, now_ms: int, reason: str = "request") -> list[Order]:
        with self.lock:
            orders = self.open_orders(self.instrument(symbol).symbol)
            if not orders:
                raise ExchangeError(400, -2011, "Unknown order sent.")
            for order in orders:
                self._cancel(order, now_ms, reason)
            return orders

    def _cancel(self, order: Order, now_ms: int, reason: str) -> None:
        inst = self.instruments[order.symbol]
        order.status = "CANCELED"
        order.update_ms = now_ms
        self.resting.pop(order.order_id, None)
        self.ledger.write("order_canceled", now_ms, order_id=order.order_id,
                          client_order_id=order.client_id, symbol=order.symbol, reason=reason)  # fmt: skip
        self._release(inst, order, now_ms)
        self._report(order, "CANCELED", None, now_ms)

    # ---- market -----------------------------------------------------------------------------
    def on_quote(
        self, symbol: str, bid: Decimal, ask: Decimal, bid_size: Decimal, ask_size: Decimal,
        ts_ms: int,
    ) -> list[Fill]:  # fmt: skip
        """A new top of book; resting limit orders it crosses fill at their price."""
        with self.lock:
            book = self.books[symbol]
            book.bid, book.ask, book.bid_size, book.ask_size = bid, ask, bid_size, ask_size
            book.ts_ms = ts_ms
            book.update_id += 1
            fills = []
            for order in self.open_orders(symbol):
                crossed = 0 < ask <= order.price if order.side == "BUY" else bid >= order.price > 0
                if crossed:
                    del self.resting[order.order_id]
                    inst = self.instruments[symbol]
                    self._release(inst, order, ts_ms, publish=False)
                    fills.append(self._fill(inst, order, order.price, True, ts_ms))
            return fills

    # ---- internals --------------------------------------------------------------------------
    def _validate(self, p: dict[str, str], now_ms: int) -> Order:
        inst = self.instrument(p.get("symbol"))
        side = (p.get("side") or "").upper()
        if side not in ("BUY", "SELL"):
            raise bad_param("Mandatory parameter 'side' was not sent, was empty/null, or malformed.")  # fmt: skip
        otype = (p.get("type") or "").upper()
        if otype not in ORDER_TYPES:
            raise ExchangeError(400, -1116, "Invalid orderType.")
        if p.get("quoteOrderQty"):
            raise ExchangeError(400, -1128, "quoteOrderQty is not supported by this exchange; send quantity.")  # fmt: skip
        if not p.get("quantity"):
            raise bad_param("Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")  # fmt: skip
        qty = _dec(p["quantity"], "quantity")
        tif = (p.get("timeInForce") or "GTC").upper()
        if otype == "LIMIT" and not p.get("timeInForce"):
            raise bad_param("Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.")  # fmt: skip
        if tif not in TIME_IN_FORCE:
            raise ExchangeError(400, -1115, "Invalid timeInForce.")
        price = ZERO
        if otype != "MARKET":
            if not p.get("price"):
                raise bad_param("Mandatory parameter 'price' was not sent, was empty/null, or malformed.")  # fmt: skip
            price = _dec(p["price"], "price")
            if price <= 0 or price % inst.tick != 0:
                raise ExchangeError(400, -1013, "Filter failure: PRICE_FILTER")
        if qty <= 0 or qty % inst.step != 0 or not inst.min_qty <= qty <= inst.max_qty:
            raise ExchangeError(400, -1013, "Filter failure: LOT_SIZE")
        book = self.books[inst.symbol]
        ref = price if otype != "MARKET" else (book.ask if side == "BUY" else book.bid)
        if ref > 0 and qty * ref < inst.min_notional:
            raise ExchangeError(400, -1013, "Filter failure: NOTIONAL")
        client_id = p.get("newClientOrderId") or f"x-local-{self.next_order_id}"
        if any(o.client_id == client_id and o.is_open for o in self.orders.values()):
            raise rejected("Duplicate order sent.")
        return Order(
            self.next_order_id, client_id, inst.symbol, side, otype, tif, price, qty, now_ms,
            update_ms=now_ms,
        )  # fmt: skip

    def _taker_price(self, inst: Instrument, order: Order) -> Decimal:
        book = self.books[inst.symbol]
        slip = self.slippage_bp / Decimal(10_000)
        if order.side == "BUY":
            px = (book.ask * (1 + slip) / inst.tick).to_integral_value(ROUND_CEILING) * inst.tick
            return min(px, order.price) if order.type != "MARKET" else px
        px = (book.bid * (1 - slip) / inst.tick).to_integral_value(ROUND_FLOOR) * inst.tick
        return max(px, order.price) if order.type != "MARKET" else px

    def _check_funds(self, inst: Instrument, order: Order, price: Decimal) -> None:
        if order.side == "BUY":
            need = order.qty * price * (1 + inst.taker_fee)
            have = self.balances[inst.quote].free
        else:
            need, have = order.qty, self.balances[inst.base].free
        if need > have:
            raise rejected("Account has insufficient balance for requested action.")

    def _lock_funds(self, inst: Instrument, order: Order, now_ms: int) -> None:
        if order.side == "BUY":
            asset, amount = inst.quote, order.qty * order.price * (1 + inst.taker_fee)
        else:
            asset, amount = inst.base, order.qty
        bal = self.balances[asset]
        bal.free -= amount
        bal.locked += amount
        order.locked = amount
        self._balances_changed([asset], now_ms, f"lock order {order.order_id}")

    def _release(self, inst: Instrument, order: Order, now_ms: int, publish: bool = True) -> None:
        if not order.locked:
            return
        asset = inst.quote if order.side == "BUY" else inst.base
        bal = self.balances[asset]
        bal.free += order.locked
        bal.locked -= order.locked
        order.locked = ZERO
        if publish:
            self._balances_changed([asset], now_ms, f"release order {order.order_id}")

    def _fill(
        self, inst: Instrument, order: Order, price: Decimal, maker: bool, now_ms: int
    ) -> Fill:
        qty = order.qty - order.executed
        notional = qty * price
        fee_rate = inst.maker_fee if maker else inst.taker_fee
        commission = (notional * fee_rate).quantize(Decimal("1e-8"), rounding=ROUND_DOWN)
        base, quote = self.balances[inst.base], self.balances[inst.quote]
        if order.side == "BUY":
            base.free += qty
            quote.free -= notional + commission
        else:
            base.free -= qty
            quote.free += notional - commission
        order.executed += qty
        order.quote_executed += notional
        order.status = "FILLED"
        order.update_ms = now_ms
        fill = Fill(
            self.next_trade_id, order.order_id, order.symbol, order.side, price, qty, notional,
            commission, inst.quote, maker, now_ms,
        )  # fmt: skip
        self.next_trade_id += 1
        self.fills.append(fill)
        self.ledger.write(
            "fill", now_ms, trade_id=fill.trade_id, order_id=order.order_id,
            client_order_id=order.client_id, symbol=order.symbol, side=order.side,
            price=fmt(price), qty=fmt(qty), quote_qty=fmt(notional),
            commission=fmt(commission), commission_asset=inst.quote, maker=maker,
        )  # fmt: skip
        self._report(order, "TRADE", fill, now_ms)
        self._balances_changed([inst.base, inst.quote], now_ms, f"fill {fill.trade_id}")
        return fill

    def _balances_changed(self, assets: Iterable[str], now_ms: int, cause: str) -> None:
        assets = list(dict.fromkeys(assets))
        self.ledger.write(
            "balance", now_ms, cause=cause,
            balances={a: {"free": fmt(self.balances[a].free),
                          "locked": fmt(self.balances[a].locked)} for a in assets},
        )  # fmt: skip
        self.publish(shapes.account_position(self.balances, assets, now_ms))

    def _report(self, order: Order, exec_type: str, fill: Fill | None, now_ms: int) -> None:
        self.publish(shapes.execution_report(order, exec_type, fill, now_ms))
