"""The local Binance Spot exchange over its protocol, in process (FastAPI's test client):
public REST answers, unknown endpoints answered in Binance's error shape and logged,
signed requests (key, HMAC signature, timestamp), request weights (429 then 418), orders
through REST landing in the ledger, and the WebSocket API's session and user-data stream.
The engine itself: tests/unit/test_exchange.py."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec
import pytest
from fastapi.testclient import TestClient
from nautilus_trader.adapters.binance.spot.schemas.account import BinanceSpotAccountInfo
from nautilus_trader.adapters.binance.spot.schemas.market import BinanceSpotExchangeInfo

from serving.exchange.app import Keys, build_server, create_app
from trading.exchange.ledger import read_ledger
from trading.settings import AppConfig

KEY, SECRET = "k", "s"
BALANCES = {"USDT": "10000", "BTC": "1", "ETH": "10"}
MakeClient = Callable[..., TestClient]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _sign(payload: str, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def signed(params: dict[str, Any] | None = None, secret: str = SECRET, **extra: Any) -> str:
    """A signed query string: the params urlencoded in order, a timestamp, the signature last."""
    query = urlencode({**(params or {}), "timestamp": _now_ms(), **extra})
    return f"{query}&signature={_sign(query, secret)}"


HEADERS = {"X-MBX-APIKEY": KEY}


@pytest.fixture
def make_client(config: AppConfig, tmp_path: Path) -> Iterator[MakeClient]:
    """An exchange on BTCUSDT and ETHUSDT with no market data, its ledger in tmp_path."""
    with contextlib.ExitStack() as stack:

        def make(weight_limit: int = 6000, raise_server_exceptions: bool = True) -> TestClient:
            server = build_server(
                config, symbols=["BTCUSDT", "ETHUSDT"], window=None, speed=1.0,
                keys=Keys(KEY, SECRET), balances=dict(BALANCES),
                ledger_path=tmp_path / "ledger.jsonl", slippage_bp=0.0,
                weight_limit=weight_limit, weight_window_s=60.0,
            )  # fmt: skip
            app = create_app(server)
            return stack.enter_context(TestClient(app, raise_server_exceptions=raise_server_exceptions))  # fmt: skip

        yield make


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


# ---- public REST ------------------------------------------------------------------------------
def test_time_and_exchange_info(client: TestClient) -> None:
    before = _now_ms()
    answer = client.get("/api/v3/time")
    assert answer.status_code == 200
    assert before <= answer.json()["serverTime"] <= _now_ms()
    assert answer.headers["X-MBX-USED-WEIGHT-1M"] == "1"

    info = client.get("/api/v3/exchangeInfo")
    assert info.status_code == 200 and info.headers["X-MBX-USED-WEIGHT-1M"] == "21"
    decoded = msgspec.json.decode(info.content, type=BinanceSpotExchangeInfo)
    assert [s.symbol for s in decoded.symbols] == ["BTCUSDT", "ETHUSDT"]
    steps = {
        s.symbol: {f.filterType.value: (f.tickSize, f.stepSize) for f in s.filters}
        for s in decoded.symbols
    }
    assert steps["BTCUSDT"]["PRICE_FILTER"][0] == "0.01"
    assert steps["BTCUSDT"]["LOT_SIZE"][1] == "0.00001"
    assert steps["ETHUSDT"]["LOT_SIZE"][1] == "0.0001"

    one = client.get("/api/v3/exchangeInfo", params={"symbol": "ETHUSDT"}).json()
    assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT"]
    bad = client.get("/api/v3/exchangeInfo", params={"symbol": "DOGEUSDT"})
    assert (bad.status_code, bad.json()["code"]) == (400, -1121)
    assert client.get("/api/v3/ping").json() == {}


def test_unknown_endpoints_answer_binance_errors_and_are_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="hmmtrader.exchange"):
        got = client.get("/api/v3/avgPrice", params={"symbol": "BTCUSDT"})
        posted = client.post("/sapi/v1/foo")
    for answer in (got, posted):
        assert answer.status_code == 404
        body = answer.json()
        assert set(body) == {"code", "msg"} and body["code"] == -1020
    assert "GET /api/v3/avgPrice" in got.json()["msg"]
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.name == "hmmtrader.exchange" and r.levelno == logging.ERROR
    ]
    assert len(errors) == 2
    assert "GET /api/v3/avgPrice?symbol=BTCUSDT" in errors[0] and "POST /sapi/v1/foo" in errors[1]

    state = client.get("/_exchange/state").json()
    assert state["unknown_requests"] == ["GET /api/v3/avgPrice", "POST /sapi/v1/foo"]
    assert state["requests"] == 2  # admin requests are not counted


# ---- signed REST ------------------------------------------------------------------------------
def test_signed_account_answers_the_funded_balances(client: TestClient) -> None:
    answer = client.get(f"/api/v3/account?{signed()}", headers=HEADERS)
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-MBX-USED-WEIGHT-1M"] == "20"
    account = msgspec.json.decode(answer.content, type=BinanceSpotAccountInfo)
    assert {b.asset: (b.free, b.locked) for b in account.balances} == {
        "BTC": ("1.00000000", "0.00000000"),
        "ETH": ("10.00000000", "0.00000000"),
        "USDT": ("10000.00000000", "0.00000000"),
    }
    # a longer recvWindow admits an older timestamp
    older = signed(timestamp=_now_ms() - 7000, recvWindow=10000)
    assert client.get(f"/api/v3/account?{older}", headers=HEADERS).status_code == 200


@pytest.mark.parametrize(
    ("query", "headers", "status", "code"),
    [
        pytest.param(lambda: signed(secret="wrong"), HEADERS, 400, -1022, id="wrong-signature"),
        pytest.param(lambda: signed() + "0", HEADERS, 400, -1022, id="tampered-signature"),
        pytest.param(signed, {}, 401, -2015, id="no-api-key"),
        pytest.param(signed, {"X-MBX-APIKEY": "other"}, 401, -2015, id="wrong-api-key"),
        pytest.param(lambda: signed(timestamp=_now_ms() - 60_000), HEADERS, 400, -1021, id="stale"),
        pytest.param(lambda: signed(timestamp=_now_ms() + 5_000), HEADERS, 400, -1021, id="future"),
        pytest.param(lambda: f"timestamp={_now_ms()}", HEADERS, 400, -1102, id="unsigned"),
    ],
)
def test_signed_requests_are_refused_in_binance_shape(
    client: TestClient,
    query: Callable[[], str],
    headers: dict[str, str],
    status: int,
    code: int,
) -> None:
    answer = client.get(f"/api/v3/account?{query()}", headers=headers)
    assert answer.status_code == status
    assert answer.json()["code"] == code and answer.json()["msg"]
    assert "balances" not in answer.json()


def test_weight_limit_429_with_retry_after_then_418(make_client: MakeClient) -> None:
    client = make_client(weight_limit=50)
    first, second = client.get("/api/v3/exchangeInfo"), client.get("/api/v3/exchangeInfo")
    assert (first.status_code, first.headers["X-MBX-USED-WEIGHT-1M"]) == (200, "20")
    assert (second.status_code, second.headers["X-MBX-USED-WEIGHT-1M"]) == (200, "40")

    limited = client.get("/api/v3/exchangeInfo")
    assert limited.status_code == 429 and limited.json()["code"] == -1003
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["X-MBX-USED-WEIGHT-1M"] == "40"

    banned = client.get("/api/v3/time")  # did not wait the Retry-After
    assert banned.status_code == 418 and banned.json()["code"] == -1003
    assert int(banned.headers["Retry-After"]) >= 100  # the ban (120 s by default)
    assert client.get("/api/v3/ping").status_code == 418
    assert client.get("/_exchange/state").json()["rate_limited"] == {"429": 1, "418": 2}


# ---- orders through REST ----------------------------------------------------------------------
def test_market_order_without_market_data_is_rejected_and_ledgered(
    client: TestClient, tmp_path: Path
) -> None:
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01",
              "newClientOrderId": "rest-1"}  # fmt: skip
    answer = client.post(f"/api/v3/order?{signed(params)}", headers=HEADERS)
    assert answer.status_code == 400 and answer.json()["code"] == -2010
    assert "book is empty" in answer.json()["msg"]
    assert answer.headers["X-MBX-ORDER-COUNT-10S"] == "1"

    ledger = read_ledger(tmp_path / "ledger.jsonl")
    deposits = [e for e in ledger if e["event"] == "balance" and e["cause"] == "deposit"]
    assert {a for e in deposits for a in e["balances"]} == {"USDT", "BTC", "ETH"}
    rejected = ledger[-1]
    assert rejected["event"] == "order_rejected" and rejected["code"] == -2010
    assert rejected["client_order_id"] == "rest-1" and rejected["symbol"] == "BTCUSDT"
    assert [e["seq"] for e in ledger] == list(range(1, len(ledger) + 1))

    state = client.get("/_exchange/state").json()
    assert state["orders"] == 0 and state["balances"]["USDT"]["free"] == "10000.00000000"


def test_limit_order_signed_in_the_body_rests_and_cancels(client: TestClient) -> None:
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
              "quantity": "0.01", "price": "29990.00", "newClientOrderId": "rest-2"}  # fmt: skip
    form = {**HEADERS, "Content-Type": "application/x-www-form-urlencoded"}
    placed = client.post("/api/v3/order", content=signed(params), headers=form)
    assert placed.status_code == 200, placed.text
    assert placed.json()["clientOrderId"] == "rest-2"
    order_id = placed.json()["orderId"]

    listed = client.get(f"/api/v3/openOrders?{signed({'symbol': 'BTCUSDT'})}", headers=HEADERS)
    assert [o["orderId"] for o in listed.json()] == [order_id]
    state = client.get("/_exchange/state").json()
    assert state["balances"]["USDT"] == {"free": "9699.80010000", "locked": "300.19990000"}

    cancel = signed({"symbol": "BTCUSDT", "origClientOrderId": "rest-2"})
    canceled = client.delete(f"/api/v3/order?{cancel}", headers=HEADERS)
    assert canceled.status_code == 200 and canceled.json()["status"] == "CANCELED"
    again = client.delete(f"/api/v3/order?{signed({'symbol': 'BTCUSDT', 'orderId': order_id})}",
                          headers=HEADERS)  # fmt: skip
    assert again.status_code == 400 and again.json()["code"] == -2011
    state = client.get("/_exchange/state").json()
    assert state["balances"]["USDT"] == {"free": "10000.00000000", "locked": "0.00000000"}


# ---- the WebSocket API ------------------------------------------------------------------------
def _logon(ts: int | None = None, secret: str = SECRET) -> dict[str, Any]:
    ts = ts or _now_ms()
    signature = _sign(f"apiKey={KEY}&timestamp={ts}", secret)
    return {"apiKey": KEY, "timestamp": ts, "signature": signature}


def _call(ws: Any, ident: str, method: str, params: dict[str, Any] | None = None) -> Any:
    ws.send_text(json.dumps({"id": ident, "method": method, "params": params or {}}))
    answer = ws.receive_json()
    assert answer["id"] == ident
    return answer


def test_ws_api_logon_subscribe_and_unknown_methods(client: TestClient) -> None:
    with client.websocket_connect("/ws-api/v3") as ws:
        early = _call(ws, "0", "userDataStream.subscribe")
        assert early["status"] == 401 and early["error"]["code"] == -2015  # not logged on

        wrong = _call(ws, "1", "session.logon", _logon(secret="wrong"))
        assert wrong["status"] == 400 and wrong["error"]["code"] == -1022
        assert "result" not in wrong
        stale = _call(ws, "2", "session.logon", _logon(ts=_now_ms() - 60_000))
        assert stale["error"]["code"] == -1021

        logon = _call(ws, "3", "session.logon", _logon())
        assert logon["status"] == 200 and logon["result"]["apiKey"] == KEY

        subscribed = _call(ws, "4", "userDataStream.subscribe")
        assert subscribed["status"] == 200
        assert isinstance(subscribed["result"]["subscriptionId"], int)
        assert _call(ws, "5", "session.status")["result"]["userDataStream"] is True

        unknown = _call(ws, "6", "order.place", {"symbol": "BTCUSDT"})
        assert unknown["error"]["code"] == -1020 and "order.place" in unknown["error"]["msg"]

    state = client.get("/_exchange/state").json()
    assert state["unknown_requests"] == ["ws-api order.place"]


def test_ws_api_subscription_receives_user_data_events(client: TestClient) -> None:
    with client.websocket_connect("/ws-api/v3") as ws:
        _call(ws, "1", "session.logon", _logon())
        sub = _call(ws, "2", "userDataStream.subscribe")["result"]["subscriptionId"]
        params = {"symbol": "ETHUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC",
                  "quantity": "1.5", "price": "4000.00"}  # fmt: skip
        placed = client.post(f"/api/v3/order?{signed(params)}", headers=HEADERS)
        assert placed.status_code == 200, placed.text

        position, report = ws.receive_json(), ws.receive_json()
        assert position["subscriptionId"] == report["subscriptionId"] == sub
        assert position["event"]["e"] == "outboundAccountPosition"
        assert position["event"]["B"] == [{"a": "ETH", "f": "8.50000000", "l": "1.50000000"}]
        assert report["event"]["e"] == "executionReport"
        assert (report["event"]["x"], report["event"]["X"]) == ("NEW", "NEW")
        assert report["event"]["i"] == placed.json()["orderId"]


# ---- paging and parameter errors ----
def _rest_limit_buys(client: TestClient, *orders: tuple[str, str]) -> list[int]:
    ids = []
    for symbol, price in orders:
        p = {"symbol": symbol, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
             "quantity": "0.01", "price": price}  # fmt: skip
        placed = client.post(f"/api/v3/order?{signed(p)}", headers=HEADERS)
        assert placed.status_code == 200, placed.text
        ids.append(placed.json()["orderId"])
    return ids


def test_all_orders_from_an_order_id(client: TestClient) -> None:
    first, second = _rest_limit_buys(client, ("BTCUSDT", "29990.00"), ("BTCUSDT", "29980.00"))
    every = client.get(f"/api/v3/allOrders?{signed({'symbol': 'BTCUSDT'})}", headers=HEADERS)
    assert [o["orderId"] for o in every.json()] == [first, second]
    query = signed({"symbol": "BTCUSDT", "orderId": second})
    answer = client.get(f"/api/v3/allOrders?{query}", headers=HEADERS)
    assert [o["orderId"] for o in answer.json()] == [second]  # Binance: orders >= orderId


def test_cancel_open_orders_needs_a_symbol(client: TestClient) -> None:
    _rest_limit_buys(client, ("BTCUSDT", "29990.00"), ("ETHUSDT", "2000.00"))
    answer = client.delete(f"/api/v3/openOrders?{signed()}", headers=HEADERS)
    assert answer.status_code == 400 and answer.json()["code"] == -1102
    assert len(client.get("/_exchange/state").json()["open_orders"]) == 2


def test_malformed_numbers_answer_in_binance_shape(make_client: MakeClient) -> None:
    client = make_client(raise_server_exceptions=False)
    for path in ("/api/v3/myTrades", "/api/v3/allOrders"):
        query = signed({"symbol": "BTCUSDT", "limit": "abc"})
        answer = client.get(f"{path}?{query}", headers=HEADERS)
        assert answer.status_code == 400 and answer.json()["code"] == -1100
