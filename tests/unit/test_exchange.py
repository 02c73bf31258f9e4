"""The local Binance Spot exchange without HTTP: the matching engine and account
(trading.exchange.matching), its ledger, the request-weight limiter on a fake clock, and the
JSON shapes decoded with NautilusTrader's own Binance structs. The HTTP/WebSocket protocol:
tests/unit/test_exchange_app.py."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nautilus_trader.adapters.binance.common.enums import (
    BinanceExecutionType,
    BinanceOrderStatus,
)
from nautilus_trader.adapters.binance.common.schemas.account import BinanceOrder, BinanceUserTrade
from nautilus_trader.adapters.binance.spot.schemas.account import BinanceSpotAccountInfo
from nautilus_trader.adapters.binance.spot.schemas.market import BinanceSpotExchangeInfo
from nautilus_trader.adapters.binance.spot.schemas.user import (
    BinanceSpotAccountUpdateMsg,
    BinanceSpotOrderUpdateData,
)

from trading.exchange import shapes
from trading.exchange.ledger import Ledger, read_ledger
from trading.exchange.limits import RateLimiter
from trading.exchange.matching import Balance, ExchangeError, Fill, Instrument, Matching, Order
from trading.settings import SymbolSpec

SYMBOL = "BTCUSDT"
D = Decimal  # short, for the many literals
T0 = 1_700_000_000_000  # market time (ms) of the tests' quotes and orders
SPEC = SymbolSpec(
    base="BTC", quote="USDT", tick_size=0.01, lot_size=0.00001, min_qty=0.00001, max_qty=9000,
    min_notional_usd=5, maker_fee=0.001, taker_fee=0.001,
)  # fmt: skip
# maker and taker fees apart, so a test can tell which one was charged
SPLIT_FEES = SPEC.model_copy(update={"maker_fee": 0.0005, "taker_fee": 0.001})


class Venue:
    """One account (10000 USDT, 1 BTC) on BTCUSDT, its ledger file and its published events."""

    def __init__(self, path: Path, spec: SymbolSpec = SPEC, slippage_bp: str = "0") -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        self.m = Matching(
            {SYMBOL: Instrument.of(SYMBOL, spec)},
            {"USDT": Balance(D("10000")), "BTC": Balance(D("1"))},
            Ledger(path),
            slippage_bp=D(slippage_bp),
            publish=self.events.append,
        )

    def quote(self, bid: str, ask: str, ts_ms: int = T0) -> list[Fill]:
        return self.m.on_quote(SYMBOL, D(bid), D(ask), D("1"), D("1"), ts_ms)

    def order(
        self, side: str, otype: str, qty: str, price: str | None = None, **extra: str
    ) -> tuple[Order, list[Fill]]:
        p = {"symbol": SYMBOL, "side": side, "type": otype, "quantity": qty, **extra}
        if price is not None:
            p["price"] = price
            p.setdefault("timeInForce", "GTC")
        return self.m.new_order(p, T0)

    def bal(self, asset: str) -> tuple[D, D]:
        b = self.m.balances[asset]
        return b.free, b.locked

    def ledger(self, event: str | None = None) -> list[dict[str, Any]]:
        return read_ledger(self.path, event)


@pytest.fixture
def venue(tmp_path: Path) -> Venue:
    return Venue(tmp_path / "ledger.jsonl")


def _reports(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["e"] == "executionReport"]


def _positions(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["e"] == "outboundAccountPosition"]


# ---- 1. market orders: price, slippage, balances ----------------------------------------------
def test_market_buy_fills_at_the_ask_and_pays_notional_plus_taker_fee(venue: Venue) -> None:
    venue.quote("30000.00", "30000.10")
    order, fills = venue.order("BUY", "MARKET", "0.01")
    assert order.status == "FILLED" and order.executed == D("0.01")
    (fill,) = fills
    assert fill.price == D("30000.10") and fill.qty == D("0.01") and not fill.maker
    assert fill.quote_qty == D("300.001")
    assert fill.commission == D("0.300001")  # 0.1 % of the notional, in USDT
    assert venue.bal("BTC") == (D("1.01"), D(0))
    assert venue.bal("USDT") == (D("10000") - D("300.001") - D("0.300001"), D(0))
    assert venue.bal("USDT")[0] == D("9699.698999")


def test_market_buy_with_slippage_rounds_up_to_the_tick(tmp_path: Path) -> None:
    v = Venue(tmp_path / "l.jsonl", slippage_bp="1")
    v.quote("30000.00", "30000.01")
    _, (fill,) = v.order("BUY", "MARKET", "0.01")
    # 30000.01 x 1.0001 = 30003.010001 -> the next tick up
    assert fill.price == D("30003.02")
    assert v.bal("BTC") == (D("1.01"), D(0))
    assert v.bal("USDT")[0] == D("10000") - D("300.0302") - D("0.30003020")


def test_market_sell_with_slippage_rounds_down_to_the_tick(tmp_path: Path) -> None:
    v = Venue(tmp_path / "l.jsonl", slippage_bp="1")
    v.quote("30000.05", "30000.10")
    _, (fill,) = v.order("SELL", "MARKET", "0.01")
    # 30000.05 x 0.9999 = 29997.049995 -> the next tick down
    assert fill.price == D("29997.04")
    assert fill.commission == D("0.29997040")
    assert v.bal("BTC") == (D("0.99"), D(0))
    assert v.bal("USDT") == (D("10299.6704296"), D(0))


def test_market_sell_without_slippage_fills_at_the_bid(venue: Venue) -> None:
    venue.quote("30000.05", "30000.10")
    _, (fill,) = venue.order("SELL", "MARKET", "0.5")
    assert fill.price == D("30000.05")
    assert venue.bal("BTC") == (D("0.5"), D(0))
    assert venue.bal("USDT")[0] == D("10000") + D("15000.025") - D("15.000025")


# ---- 2. fees ----------------------------------------------------------------------------------
def test_taker_fee_for_a_market_order_and_maker_fee_for_a_resting_limit(tmp_path: Path) -> None:
    v = Venue(tmp_path / "ledger.jsonl", spec=SPLIT_FEES)
    v.quote("30000.00", "30000.10")
    _, (taker,) = v.order("BUY", "MARKET", "0.01")
    assert taker.commission == D("0.300001") and taker.commission_asset == "USDT"
    assert not taker.maker

    order, fills = v.order("BUY", "LIMIT", "0.01", "29990.00")
    assert fills == [] and order.status == "NEW"
    (maker,) = v.quote("29980.00", "29985.00", ts_ms=T0 + 5)
    assert maker.maker and maker.price == D("29990.00")
    assert maker.commission == D("0.149950")  # 0.05 % of 299.9
    assert maker.commission_asset == "USDT"

    first, second = v.ledger("fill")
    assert first | {"seq": 0, "wall_ms": 0} == {
        "seq": 0, "event": "fill", "ts_ms": T0, "wall_ms": 0, "trade_id": 1, "order_id": 1,
        "client_order_id": "x-local-1", "symbol": SYMBOL, "side": "BUY",
        "price": "30000.10000000", "qty": "0.01000000", "quote_qty": "300.00100000",
        "commission": "0.30000100", "commission_asset": "USDT", "maker": False,
    }  # fmt: skip
    assert second["ts_ms"] == T0 + 5 and second["maker"] is True
    assert (second["price"], second["qty"], second["commission"]) == (
        "29990.00000000",
        "0.01000000",
        "0.14995000",
    )
    # what the account paid: both notionals plus each order's own fee
    assert v.bal("USDT") == (D("10000") - D("300.001") - D("0.300001") - D("299.9") - D("0.14995"), D(0))  # fmt: skip
    assert v.bal("BTC") == (D("1.02"), D(0))


# ---- 3. resting limits: locks, maker fills, cancels -------------------------------------------
def test_resting_limit_buy_locks_quote_and_fills_at_its_price_when_crossed(tmp_path: Path) -> None:
    v = Venue(tmp_path / "ledger.jsonl", spec=SPLIT_FEES)
    v.quote("30000.00", "30010.00")
    order, fills = v.order("BUY", "LIMIT", "0.01", "29990.00")
    assert fills == [] and order.is_open
    lock = D("299.9") * D("1.001")  # notional plus the taker fee
    assert order.locked == lock == D("300.1999")
    assert v.bal("USDT") == (D("10000") - lock, lock)
    assert [o.order_id for o in v.m.open_orders(SYMBOL)] == [order.order_id]

    assert v.quote("29985.00", "29990.01") == []  # ask still above the limit
    assert v.bal("USDT") == (D("10000") - lock, lock)

    (fill,) = v.quote("29940.00", "29950.00")  # crossed well through: still the limit price
    assert fill.price == D("29990.00") and fill.maker
    assert order.status == "FILLED" and order.locked == 0
    assert v.bal("USDT") == (D("10000") - D("299.9") - D("0.14995"), D(0))
    assert v.bal("BTC") == (D("1.01"), D(0))
    assert v.m.open_orders() == []
    assert v.quote("29000.00", "29000.01") == []  # a filled order never fills again


def test_resting_limit_sell_locks_base_and_fills_when_the_bid_reaches_it(venue: Venue) -> None:
    venue.quote("30000.00", "30010.00")
    order, _ = venue.order("SELL", "LIMIT", "0.1", "30100.00")
    assert venue.bal("BTC") == (D("0.9"), D("0.1"))
    assert venue.bal("USDT") == (D("10000"), D(0))
    assert venue.quote("30099.99", "30110.00") == []
    (fill,) = venue.quote("30100.00", "30110.00")
    assert fill.price == D("30100.00") and fill.maker and order.status == "FILLED"
    assert venue.bal("BTC") == (D("0.9"), D(0))
    assert venue.bal("USDT") == (D("10000") + D("3010") - D("3.010"), D(0))


def test_cancel_releases_the_lock_and_a_second_cancel_is_unknown(venue: Venue) -> None:
    venue.quote("30000.00", "30010.00")
    buy, _ = venue.order("BUY", "LIMIT", "0.01", "29990.00", newClientOrderId="mine-1")
    sell, _ = venue.order("SELL", "LIMIT", "0.2", "30500.00")
    assert venue.bal("USDT")[1] == D("300.1999") and venue.bal("BTC")[1] == D("0.2")

    canceled = venue.m.cancel(SYMBOL, None, "mine-1", T0 + 1)
    assert canceled is buy and buy.status == "CANCELED" and buy.locked == 0
    assert venue.bal("USDT") == (D("10000"), D(0))
    venue.m.cancel(SYMBOL, sell.order_id, None, T0 + 2)
    assert venue.bal("BTC") == (D("1"), D(0))

    entries = venue.ledger("order_canceled")
    assert [(e["order_id"], e["client_order_id"], e["reason"], e["ts_ms"]) for e in entries] == [
        (buy.order_id, "mine-1", "request", T0 + 1),
        (sell.order_id, sell.client_id, "request", T0 + 2),
    ]
    with pytest.raises(ExchangeError) as again:
        venue.m.cancel(SYMBOL, buy.order_id, None, T0 + 3)
    assert (again.value.status, again.value.code) == (400, -2011)
    assert len(venue.ledger("order_canceled")) == 2
    assert venue.bal("USDT") == (D("10000"), D(0))  # nothing released twice
    assert venue.quote("29000.00", "29000.01") == []  # a canceled order never fills


def test_cancel_of_an_unknown_order_and_cancel_all(venue: Venue) -> None:
    venue.quote("30000.00", "30010.00")
    with pytest.raises(ExchangeError) as missing:
        venue.m.cancel(SYMBOL, 999, None, T0)
    assert missing.value.code == -2013
    with pytest.raises(ExchangeError) as nothing_open:
        venue.m.cancel_all(SYMBOL, T0)
    assert nothing_open.value.code == -2011
    venue.order("BUY", "LIMIT", "0.01", "29990.00")
    venue.order("BUY", "LIMIT", "0.01", "29980.00")
    assert len(venue.m.cancel_all(SYMBOL, T0)) == 2
    assert venue.m.open_orders() == [] and venue.bal("USDT") == (D("10000"), D(0))


# ---- 4. marketable limits, LIMIT_MAKER, IOC ---------------------------------------------------
def test_marketable_limit_fills_at_the_touch_as_taker(venue: Venue) -> None:
    venue.quote("30000.00", "30010.00")
    order, (fill,) = venue.order("BUY", "LIMIT", "0.01", "30050.00")
    assert fill.price == D("30010.00") and not fill.maker  # the ask, not the limit
    assert order.status == "FILLED" and order.locked == 0
    assert venue.bal("USDT") == (D("10000") - D("300.1") - D("0.3001"), D(0))

    _, (sell,) = venue.order("SELL", "LIMIT", "0.01", "29900.00")
    assert sell.price == D("30000.00") and not sell.maker


def test_marketable_limit_never_fills_beyond_its_limit(tmp_path: Path) -> None:
    v = Venue(tmp_path / "l.jsonl", slippage_bp="100")  # the touch moves 1 %
    v.quote("30000.00", "30010.00")
    _, (buy,) = v.order("BUY", "LIMIT", "0.01", "30050.00")
    assert buy.price == D("30050.00")  # 30310.10 with slippage, capped at the limit
    _, (sell,) = v.order("SELL", "LIMIT", "0.01", "29950.00")
    assert sell.price == D("29950.00")  # 29700.00 with slippage, capped at the limit


def test_limit_maker_that_would_take_is_rejected(venue: Venue) -> None:
    venue.quote("30000.00", "30010.00")
    with pytest.raises(ExchangeError) as exc:
        venue.order("BUY", "LIMIT_MAKER", "0.01", "30010.00")
    assert (exc.value.status, exc.value.code) == (400, -2010)
    assert "immediately match" in exc.value.msg
    assert venue.m.orders == {} and venue.bal("USDT") == (D("10000"), D(0))
    (rejected,) = venue.ledger("order_rejected")
    assert rejected["code"] == -2010 and rejected["type"] == "LIMIT_MAKER"
    # one that would rest is accepted and locks
    order, fills = venue.order("BUY", "LIMIT_MAKER", "0.01", "30009.99")
    assert fills == [] and order.is_open and venue.bal("USDT")[1] > 0


def test_ioc_that_cannot_fill_expires_without_locking(venue: Venue) -> None:
    venue.quote("30000.00", "30010.00")
    order, fills = venue.order("BUY", "LIMIT", "0.01", "29990.00", timeInForce="IOC")
    assert fills == [] and order.status == "EXPIRED" and not order.is_open
    assert venue.bal("USDT") == (D("10000"), D(0))
    (expired,) = venue.ledger("order_expired")
    assert expired["order_id"] == order.order_id
    assert _reports(venue.events)[-1]["x"] == "EXPIRED"
    assert venue.quote("29000.00", "29000.01") == []  # an expired order never fills
    # an IOC that can take does fill, at the touch
    ioc, (fill,) = venue.order("BUY", "LIMIT", "0.01", "29500.00", timeInForce="IOC")
    assert ioc.status == "FILLED" and fill.price == D("29000.01") and not fill.maker


# ---- 5. validation: every rejection is ledgered and changes nothing ---------------------------
REJECTIONS: dict[str, tuple[dict[str, str], int, str]] = {
    "lot-step": ({"quantity": "0.000015", "price": "30000.00"}, -1013, "LOT_SIZE"),
    "lot-max": ({"quantity": "9001", "price": "30000.00"}, -1013, "LOT_SIZE"),
    "tick": ({"quantity": "0.01", "price": "29990.005"}, -1013, "PRICE_FILTER"),
    "notional": ({"quantity": "0.0001", "price": "29990.00"}, -1013, "NOTIONAL"),
    "market-notional": ({"quantity": "0.0001", "type": "MARKET"}, -1013, "NOTIONAL"),
    "buy-funds": ({"quantity": "1", "price": "29990.00"}, -2010, "insufficient"),
    "market-funds": ({"quantity": "1", "type": "MARKET"}, -2010, "insufficient"),
    "sell-funds": ({"side": "SELL", "quantity": "2", "price": "31000.00"}, -2010, "insufficient"),
    "symbol": ({"symbol": "DOGEUSDT", "quantity": "1", "price": "0.10"}, -1121, "Invalid symbol"),
    "type": ({"quantity": "0.01", "price": "29990.00", "type": "STOP"}, -1116, "orderType"),
    "no-tif": ({"quantity": "0.01", "price": "29990.00", "timeInForce": ""}, -1102, "timeInForce"),
    "not-a-number": ({"quantity": "abc", "price": "29990.00"}, -1100, "quantity"),
}


@pytest.mark.parametrize(("override", "code", "words"), REJECTIONS.values(), ids=REJECTIONS)
def test_rejections_are_ledgered_and_change_nothing(
    venue: Venue, override: dict[str, str], code: int, words: str
) -> None:
    venue.quote("30000.00", "30010.00")
    before = venue.ledger()
    p = {"symbol": SYMBOL, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
         "newClientOrderId": "rej-1", **override}  # fmt: skip
    if p["type"] == "MARKET":
        p.pop("timeInForce")
    with pytest.raises(ExchangeError) as exc:
        venue.m.new_order(p, T0)
    assert exc.value.code == code and words in exc.value.msg
    assert exc.value.body() == {"code": code, "msg": exc.value.msg}
    assert venue.m.orders == {} and venue.m.fills == [] and venue.m.next_order_id == 1
    assert venue.bal("USDT") == (D("10000"), D(0)) and venue.bal("BTC") == (D("1"), D(0))
    assert venue.events == []
    after = venue.ledger()
    assert after[: len(before)] == before
    (entry,) = after[len(before) :]
    assert entry["event"] == "order_rejected" and entry["code"] == code
    assert entry["client_order_id"] == "rej-1" and entry["msg"] == exc.value.msg


def test_market_order_on_an_empty_book_is_rejected(venue: Venue) -> None:
    with pytest.raises(ExchangeError) as exc:
        venue.order("BUY", "MARKET", "0.01")
    assert exc.value.code == -2010 and "book is empty" in exc.value.msg
    assert venue.m.orders == {} and venue.bal("USDT") == (D("10000"), D(0))
    (entry,) = venue.ledger("order_rejected")
    assert entry["code"] == -2010 and entry["type"] == "MARKET" and entry["qty"] == "0.01"


def test_duplicate_open_client_order_id_is_rejected_until_the_first_is_closed(venue: Venue) -> None:
    venue.quote("30000.00", "30010.00")
    first, _ = venue.order("BUY", "LIMIT", "0.01", "29990.00", newClientOrderId="dup")
    locked = venue.bal("USDT")
    with pytest.raises(ExchangeError) as exc:
        venue.order("BUY", "LIMIT", "0.01", "29980.00", newClientOrderId="dup")
    assert exc.value.code == -2010 and "Duplicate" in exc.value.msg
    assert venue.bal("USDT") == locked and list(venue.m.orders) == [first.order_id]
    assert venue.ledger("order_rejected")[-1]["client_order_id"] == "dup"
    venue.m.cancel(SYMBOL, first.order_id, None, T0)
    second, _ = venue.order("BUY", "LIMIT", "0.01", "29980.00", newClientOrderId="dup")
    assert second.order_id == first.order_id + 1 and second.is_open


# ---- 6. the ledger ----------------------------------------------------------------------------
def test_ledger_seq_is_contiguous_and_continues_when_reopened(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ledger.jsonl"
    v = Venue(path)
    v.quote("30000.00", "30010.00")
    v.order("BUY", "MARKET", "0.01")
    v.order("BUY", "LIMIT", "0.01", "29990.00")
    with pytest.raises(ExchangeError):
        v.order("BUY", "LIMIT", "0.01", "29990.001")
    entries = read_ledger(path)
    n = len(entries)
    assert [e["seq"] for e in entries] == list(range(1, n + 1))
    assert [e["event"] for e in entries] == [
        "order_new", "fill", "balance", "order_new", "balance", "order_rejected",
    ]  # fmt: skip
    v.m.ledger.close()

    reopened = Ledger(path)
    assert reopened.seq == n
    entry = reopened.write("balance", T0, cause="test")
    assert entry["seq"] == n + 1
    reopened.close()
    again = read_ledger(path)
    assert [e["seq"] for e in again] == list(range(1, n + 2))
    assert again[-1]["cause"] == "test" and again[-1]["event"] == "balance"

    fills = read_ledger(path, "fill")
    assert len(fills) == 1 and fills[0]["seq"] == 2
    assert read_ledger(path, "no_such_event") == []


def test_ledger_without_a_path_still_counts(tmp_path: Path) -> None:
    ledger = Ledger(None)
    assert [ledger.write("x", i)["seq"] for i in range(3)] == [1, 2, 3]
    ledger.close()
    assert list(tmp_path.iterdir()) == []


# ---- 7. user-data events and the shapes the adapter decodes -----------------------------------
def test_market_order_publishes_new_trade_and_account_position(venue: Venue) -> None:
    venue.quote("30000.00", "30000.10")
    order, (fill,) = venue.order("BUY", "MARKET", "0.01", newClientOrderId="cid-7")
    new, trade, position = venue.events
    assert new["e"] == trade["e"] == "executionReport"
    assert (new["x"], new["X"], new["c"], new["i"]) == ("NEW", "NEW", "cid-7", order.order_id)
    assert (trade["x"], trade["X"]) == ("TRADE", "FILLED")
    assert trade["l"] == "0.01000000" and trade["z"] == "0.01000000"
    assert trade["L"] == "30000.10000000" and trade["n"] == "0.30000100"
    assert trade["N"] == "USDT" and trade["t"] == fill.trade_id and trade["m"] is False
    assert trade["Z"] == trade["Y"] == "300.00100000"
    assert trade["w"] is False and trade["T"] == T0
    assert position["e"] == "outboundAccountPosition" and position["u"] == T0
    assert position["B"] == [
        {"a": "BTC", "f": "1.01000000", "l": "0.00000000"},
        {"a": "USDT", "f": "9699.69899900", "l": "0.00000000"},
    ]

    for report in (new, trade):
        decoded = msgspec.json.decode(json.dumps(report), type=BinanceSpotOrderUpdateData)
        assert decoded.c == "cid-7" and decoded.i == order.order_id
    decoded = msgspec.json.decode(json.dumps(trade), type=BinanceSpotOrderUpdateData)
    assert decoded.x == BinanceExecutionType.TRADE and decoded.X == BinanceOrderStatus.FILLED
    msg = msgspec.json.decode(json.dumps(position), type=BinanceSpotAccountUpdateMsg)
    balances = {b.total.currency.code: b for b in msg.parse_to_account_balances()}
    assert balances["BTC"].free.as_decimal() == D("1.01")
    assert balances["USDT"].free.as_decimal() == D("9699.698999")


def test_resting_order_and_cancel_publish_locks_and_canceled_report(venue: Venue) -> None:
    venue.quote("30000.00", "30010.00")
    order, _ = venue.order("SELL", "LIMIT", "0.25", "30100.00", newClientOrderId="orig-1")
    lock_position, new = venue.events
    assert lock_position["B"] == [{"a": "BTC", "f": "0.75000000", "l": "0.25000000"}]
    assert (new["x"], new["X"], new["w"], new["t"]) == ("NEW", "NEW", True, -1)
    venue.events.clear()

    venue.m.cancel(SYMBOL, order.order_id, None, T0 + 9)
    release, canceled = venue.events
    assert release["B"] == [{"a": "BTC", "f": "1.00000000", "l": "0.00000000"}]
    assert (canceled["x"], canceled["X"], canceled["C"]) == ("CANCELED", "CANCELED", "orig-1")
    assert canceled["E"] == T0 + 9 and canceled["w"] is False
    decoded = msgspec.json.decode(json.dumps(canceled), type=BinanceSpotOrderUpdateData)
    assert decoded.x == BinanceExecutionType.CANCELED and decoded.C == "orig-1"
    msgspec.json.decode(json.dumps(release), type=BinanceSpotAccountUpdateMsg)


def test_maker_fill_reports_the_maker_flag(venue: Venue) -> None:
    venue.quote("30000.00", "30010.00")
    venue.order("BUY", "LIMIT", "0.01", "29990.00")
    venue.events.clear()
    venue.quote("29980.00", "29990.00", ts_ms=T0 + 50)
    (trade,) = _reports(venue.events)
    assert (trade["x"], trade["X"], trade["m"], trade["T"]) == ("TRADE", "FILLED", True, T0 + 50)
    (position,) = _positions(venue.events)  # the release and the fill: one position event
    assert {b["a"]: b["l"] for b in position["B"]} == {"BTC": "0.00000000", "USDT": "0.00000000"}


def test_rest_shapes_decode_with_the_adapter_structs(venue: Venue) -> None:
    venue.quote("30000.00", "30000.10")
    order, (fill,) = venue.order("BUY", "MARKET", "0.01")
    resting, _ = venue.order("BUY", "LIMIT", "0.01", "29990.00")

    got = msgspec.json.decode(json.dumps(shapes.order_json(order)), type=BinanceOrder)
    assert got.status == BinanceOrderStatus.FILLED and got.executedQty == "0.01000000"
    assert got.cummulativeQuoteQty == "300.00100000" and got.orderId == order.order_id
    got = msgspec.json.decode(json.dumps(shapes.order_json(resting)), type=BinanceOrder)
    assert got.status == BinanceOrderStatus.NEW and got.price == "29990.00000000"
    full = shapes.new_order_json(order, [fill], "FULL")
    got = msgspec.json.decode(json.dumps(full), type=BinanceOrder)
    assert got.fills is not None and got.fills[0].price == "30000.10000000"

    trade = msgspec.json.decode(json.dumps(shapes.trade_json(fill, order)), type=BinanceUserTrade)
    assert (trade.price, trade.qty, trade.commission) == ("30000.10000000", "0.01000000", "0.30000100")  # fmt: skip
    assert trade.commissionAsset == "USDT" and trade.isBuyer and not trade.isMaker

    account = msgspec.json.decode(
        json.dumps(shapes.account_json(venue.m.instruments, venue.m.balances, T0)),
        type=BinanceSpotAccountInfo,
    )
    assert account.makerCommission == account.takerCommission == 10
    balances = {b.asset: (b.free, b.locked) for b in account.balances}
    assert balances == {
        "BTC": ("1.01000000", "0.00000000"),
        "USDT": ("9399.49909900", "300.19990000"),
    }


def test_exchange_info_decodes_and_writes_steps_exactly(venue: Venue) -> None:
    info = shapes.exchange_info(list(venue.m.instruments.values()), T0, 6000, 100)
    decoded = msgspec.json.decode(json.dumps(info), type=BinanceSpotExchangeInfo)
    (symbol,) = decoded.symbols
    filters = {f.filterType.value: f for f in symbol.filters}
    price, lot = filters["PRICE_FILTER"], filters["LOT_SIZE"]
    assert price.tickSize == "0.01"  # the adapter reads the precision from how it is written
    assert lot.stepSize == "0.00001" and lot.minQty == "0.00001" and lot.maxQty == "9000"
    assert abs(D(price.tickSize).as_tuple().exponent) == 2
    assert abs(D(lot.stepSize).as_tuple().exponent) == 5
    assert D(filters["NOTIONAL"].minNotional) == 5
    assert (symbol.baseAsset, symbol.quoteAsset) == ("BTC", "USDT")
    limits = {(r.rateLimitType.value, r.interval.value): r.limit for r in decoded.rateLimits}
    assert limits[("REQUEST_WEIGHT", "MINUTE")] == 6000 and limits[("ORDERS", "SECOND")] == 100


# ---- 8. the rate limiter on a fake clock ------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _limiter(**kw: Any) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    kw = {"weight_limit": 50, "window_s": 60.0, "ban_s": 120.0, **kw}
    return RateLimiter(clock=clock, **kw), clock


def test_weights_under_the_limit_pass_and_report_the_used_weight() -> None:
    limiter, clock = _limiter()
    assert [(v.status, v.used_weight) for v in (limiter.check(20), limiter.check(20))] == [
        (200, 20),
        (200, 40),
    ]
    clock.t += 30
    assert limiter.check(10).used_weight == 50  # exactly the limit passes
    clock.t += 30  # the first two fall out of the window
    verdict = limiter.check(1)
    assert (verdict.status, verdict.used_weight) == (200, 11)
    assert limiter.counts == {429: 0, 418: 0}


def test_crossing_the_limit_429s_then_a_request_in_retry_after_is_banned() -> None:
    limiter, clock = _limiter()
    limiter.check(20)
    limiter.check(20)
    clock.t += 10
    too_much = limiter.check(20)
    assert (too_much.status, too_much.code) == (429, -1003)
    assert too_much.retry_after_s >= 1 and too_much.retry_after_s == 50  # the oldest ages out
    assert "request weight" in too_much.msg and too_much.used_weight == 40

    clock.t += 1  # did not wait the Retry-After
    banned = limiter.check(1)
    assert (banned.status, banned.code) == (418, -1003) and banned.retry_after_s == 120
    assert "banned" in banned.msg
    clock.t += 119
    assert limiter.check(1).status == 418  # still banned, whatever the weight
    assert limiter.counts == {429: 1, 418: 2}

    clock.t += 1  # the ban is over and the window has rolled
    passed = limiter.check(1)
    assert (passed.status, passed.used_weight) == (200, 1)


def test_waiting_the_retry_after_is_not_a_ban() -> None:
    limiter, clock = _limiter()
    limiter.check(40)
    clock.t += 5
    verdict = limiter.check(20)
    assert verdict.status == 429 and verdict.retry_after_s == 55
    clock.t += verdict.retry_after_s
    assert limiter.check(20).status == 200
    assert limiter.counts == {429: 1, 418: 0}


def test_a_second_ban_lasts_twice_as_long() -> None:
    limiter, clock = _limiter()
    for expected_ban in (120, 240):
        limiter.check(50)
        assert limiter.check(1).status == 429
        ban = limiter.check(1)
        assert (ban.status, ban.retry_after_s) == (418, expected_ban)
        clock.t += expected_ban - 1
        assert limiter.check(1).status == 418
        clock.t += 1
        assert limiter.check(1).status == 200
        clock.t += 60  # an empty window for the next round
    assert limiter.bans == 2 and limiter.counts == {429: 2, 418: 4}


def test_order_limit_gives_429_with_code_1015() -> None:
    limiter, _ = _limiter(weight_limit=6000, order_limit=3, order_window_s=10.0)
    counts = [limiter.check(1, is_order=True).order_count for _ in range(3)]
    assert counts == [1, 2, 3]
    refused = limiter.check(1, is_order=True)
    assert (refused.status, refused.code) == (429, -1015) and refused.retry_after_s == 10
    assert "orders" in refused.msg
    assert limiter.check(1).status == 418  # ignoring its Retry-After bans
    assert limiter.counts == {429: 1, 418: 1}


def test_waiting_out_a_short_ban_is_not_banned_again() -> None:
    limiter, clock = _limiter(ban_s=2.0)
    limiter.check(40)
    assert limiter.check(20).status == 429  # Retry-After 60
    ban = limiter.check(1)
    assert (ban.status, ban.retry_after_s) == (418, 2)
    clock.t += ban.retry_after_s  # the client waits exactly what the 418 said
    assert limiter.check(1).status == 200


def test_the_market_clock_changes_speed_from_where_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    import trading.exchange.tape as tape

    wall = [1000.0]
    monkeypatch.setattr(tape.time, "monotonic", lambda: wall[0])
    clock = tape.MarketClock(start_ns=0, speed=60.0)
    assert clock.now_ns() == 0  # before the replay begins
    clock.begin()
    wall[0] += 2.0
    assert clock.now_ns() == 120 * 10**9
    clock.set_speed(2.0)
    wall[0] += 10.0
    assert clock.now_ns() == 140 * 10**9  # 120 s, then 10 wall s at 2x
    assert clock.wall_delay_s(150 * 10**9) == pytest.approx(5.0)
