"""Binance Spot's JSON shapes (REST answers and stream events), built from the exchange's
state. Numbers are strings with 8 decimals, times are milliseconds, as Binance sends them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from trading.exchange.orders import ZERO, Balance, Book, Fill, Instrument, Order, fmt

# the request weights Binance Spot documents (GET /api/v3/exchangeInfo, 2025), per endpoint
WEIGHTS: dict[tuple[str, str], int] = {
    ("GET", "/api/v3/ping"): 1,
    ("GET", "/api/v3/time"): 1,
    ("GET", "/api/v3/exchangeInfo"): 20,
    ("GET", "/api/v3/ticker/bookTicker"): 2,
    ("GET", "/api/v3/depth"): 5,
    ("GET", "/api/v3/trades"): 25,
    ("GET", "/api/v3/aggTrades"): 4,
    ("GET", "/api/v3/klines"): 2,
    ("GET", "/api/v3/account"): 20,
    ("GET", "/api/v3/account/commission"): 20,
    ("POST", "/api/v3/order"): 1,
    ("POST", "/api/v3/order/test"): 1,
    ("GET", "/api/v3/order"): 4,
    ("DELETE", "/api/v3/order"): 1,
    ("GET", "/api/v3/openOrders"): 6,  # 80 without a symbol
    ("DELETE", "/api/v3/openOrders"): 1,
    ("GET", "/api/v3/allOrders"): 20,
    ("GET", "/api/v3/myTrades"): 20,
    ("POST", "/api/v3/userDataStream"): 2,
    ("PUT", "/api/v3/userDataStream"): 2,
    ("DELETE", "/api/v3/userDataStream"): 2,
}


def rate_limits(weight_per_minute: int, orders_per_10s: int) -> list[dict[str, Any]]:
    return [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
         "limit": weight_per_minute},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
         "limit": orders_per_10s},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 160000},
    ]  # fmt: skip


def _exact(value: Decimal) -> str:
    """A filter's step as Binance's adapter reads precision from it: "0.01", not
    "0.01000000" (which it would take as 8 decimals)."""
    return f"{value.normalize():f}"


def symbol_info(inst: Instrument) -> dict[str, Any]:
    return {
        "symbol": inst.symbol,
        "status": "TRADING",
        "baseAsset": inst.base,
        "baseAssetPrecision": 8,
        "quoteAsset": inst.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": False,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": _exact(inst.tick),
             "maxPrice": "1000000", "tickSize": _exact(inst.tick)},
            {"filterType": "LOT_SIZE", "minQty": _exact(inst.min_qty),
             "maxQty": _exact(inst.max_qty), "stepSize": _exact(inst.step)},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000",
             "maxQty": fmt(inst.max_qty), "stepSize": "0.00000000"},
            {"filterType": "NOTIONAL", "minNotional": fmt(inst.min_notional),
             "applyMinToMarket": True, "maxNotional": "9000000.00000000",
             "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }  # fmt: skip


def exchange_info(
    instruments: list[Instrument], now_ms: int, weight_per_minute: int, orders_per_10s: int
) -> dict[str, Any]:
    return {
        "timezone": "UTC",
        "serverTime": now_ms,
        "rateLimits": rate_limits(weight_per_minute, orders_per_10s),
        "exchangeFilters": [],
        "symbols": [symbol_info(i) for i in instruments],
    }


def order_json(order: Order) -> dict[str, Any]:
    """GET /api/v3/order, openOrders, allOrders, and DELETE /api/v3/order's answer."""
    return {
        "symbol": order.symbol,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_id,
        "price": fmt(order.price),
        "origQty": fmt(order.qty),
        "executedQty": fmt(order.executed),
        "cummulativeQuoteQty": fmt(order.quote_executed),
        "status": order.status,
        "timeInForce": order.tif,
        "type": order.type,
        "side": order.side,
        "stopPrice": fmt(ZERO),
        "icebergQty": fmt(ZERO),
        "time": order.time_ms,
        "updateTime": order.update_ms,
        "isWorking": order.is_open or order.status == "FILLED",
        "workingTime": order.time_ms,
        "origQuoteOrderQty": fmt(ZERO),
        "selfTradePreventionMode": "EXPIRE_MAKER",
    }


def new_order_json(order: Order, fills: list[Fill], resp_type: str) -> dict[str, Any]:
    """POST /api/v3/order's answer: ACK, RESULT or FULL."""
    ack = {
        "symbol": order.symbol,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_id,
        "transactTime": order.update_ms,
    }
    if resp_type == "ACK":
        return ack
    out = {**order_json(order), **ack}
    for key in ("time", "updateTime", "isWorking", "stopPrice", "icebergQty"):
        out.pop(key, None)
    if resp_type == "FULL":
        out["fills"] = [
            {"price": fmt(f.price), "qty": fmt(f.qty), "commission": fmt(f.commission),
             "commissionAsset": f.commission_asset, "tradeId": f.trade_id}
            for f in fills
        ]  # fmt: skip
    return out


def cancel_json(order: Order, orig_client_id: str | None) -> dict[str, Any]:
    out = order_json(order)
    out["origClientOrderId"] = orig_client_id or order.client_id
    for key in ("time", "updateTime", "isWorking", "workingTime", "stopPrice", "icebergQty"):
        out.pop(key, None)
    out["transactTime"] = order.update_ms
    return out


def trade_json(fill: Fill, order: Order) -> dict[str, Any]:
    """GET /api/v3/myTrades."""
    return {
        "symbol": fill.symbol,
        "id": fill.trade_id,
        "orderId": fill.order_id,
        "orderListId": -1,
        "price": fmt(fill.price),
        "qty": fmt(fill.qty),
        "quoteQty": fmt(fill.quote_qty),
        "commission": fmt(fill.commission),
        "commissionAsset": fill.commission_asset,
        "time": fill.time_ms,
        "isBuyer": fill.side == "BUY",
        "isMaker": fill.maker,
        "isBestMatch": True,
    }


def account_json(
    instruments: dict[str, Instrument], balances: dict[str, Balance], now_ms: int
) -> dict[str, Any]:
    """GET /api/v3/account."""
    some = next(iter(instruments.values()), None)
    maker = int((some.maker_fee if some else Decimal("0.001")) * 10_000)
    taker = int((some.taker_fee if some else Decimal("0.001")) * 10_000)
    rates = {
        "maker": fmt(some.maker_fee if some else Decimal("0.001")),
        "taker": fmt(some.taker_fee if some else Decimal("0.001")),
        "buyer": fmt(ZERO),
        "seller": fmt(ZERO),
    }
    return {
        "makerCommission": maker,
        "takerCommission": taker,
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": rates,
        "canTrade": True,
        "canWithdraw": False,
        "canDeposit": False,
        "brokered": False,
        "requireSelfTradePrevention": False,
        "preventSor": False,
        "updateTime": now_ms,
        "accountType": "SPOT",
        "balances": [
            {"asset": a, "free": fmt(b.free), "locked": fmt(b.locked)}
            for a, b in sorted(balances.items())
        ],
        "permissions": ["SPOT"],
        "uid": 1,
    }


def execution_report(
    order: Order, exec_type: str, fill: Fill | None, now_ms: int
) -> dict[str, Any]:
    """The user-data stream's executionReport for one change of an order."""
    return {
        "e": "executionReport",
        "E": now_ms,
        "s": order.symbol,
        "c": order.client_id,
        "S": order.side,
        "o": order.type,
        "f": order.tif,
        "q": fmt(order.qty),
        "p": fmt(order.price),
        "P": fmt(ZERO),
        "F": fmt(ZERO),
        "g": -1,
        "C": order.client_id if exec_type == "CANCELED" else "",
        "x": exec_type,
        "X": order.status,
        "r": "NONE",
        "i": order.order_id,
        "l": fmt(fill.qty if fill else ZERO),
        "z": fmt(order.executed),
        "L": fmt(fill.price if fill else ZERO),
        "n": fmt(fill.commission if fill else ZERO),
        "N": fill.commission_asset if fill else None,
        "T": fill.time_ms if fill else now_ms,
        "t": fill.trade_id if fill else -1,
        "v": 0,
        "I": 0,
        "w": order.is_open,
        "m": bool(fill.maker) if fill else False,
        "M": False,
        "O": order.time_ms,
        "Z": fmt(order.quote_executed),
        "Y": fmt(fill.quote_qty if fill else ZERO),
        "Q": fmt(ZERO),
        "W": order.time_ms,
        "V": "EXPIRE_MAKER",
    }


def account_position(
    balances: dict[str, Balance], assets: list[str], now_ms: int
) -> dict[str, Any]:
    return {
        "e": "outboundAccountPosition",
        "E": now_ms,
        "u": now_ms,
        "B": [{"a": a, "f": fmt(balances[a].free), "l": fmt(balances[a].locked)} for a in assets],
    }


def book_ticker(symbol: str, book: Book, inst: Instrument, ts_ms: int) -> dict[str, Any]:
    """The bookTicker stream's event, with `T` (the event time, which Binance's spot
    bookTicker leaves out) so the node stamps quotes with the exchange's market time."""
    return {
        "u": book.update_id,
        "s": symbol,
        "b": f"{book.bid:.{inst.price_decimals}f}",
        "B": f"{book.bid_size:.{inst.qty_decimals}f}",
        "a": f"{book.ask:.{inst.price_decimals}f}",
        "A": f"{book.ask_size:.{inst.qty_decimals}f}",
        "T": ts_ms,
    }
