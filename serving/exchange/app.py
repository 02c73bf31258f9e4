"""The local Binance Spot exchange over Binance's own protocol, for NautilusTrader's real
Binance adapter (and any Binance client) pointed at it with base-URL overrides.

- REST under /api/v3: time, ping, exchangeInfo, account, order (new, query, cancel),
  openOrders (list, cancel all), allOrders, myTrades, userDataStream (listenKey create,
  keepalive, close), ticker/bookTicker. Signed endpoints check X-MBX-APIKEY, the
  HMAC-SHA256 signature over the query and body, and timestamp/recvWindow. Every request
  is weighed (trading.exchange.limits): past the limit 429, then 418, with Retry-After.
- WebSocket market streams at /stream?streams=... (combined) and /ws/<stream> (raw):
  <symbol>@bookTicker, @trade, @aggTrade, with SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS.
- The WebSocket API at /ws-api/v3: session.logon, session.status, session.logout,
  userDataStream.subscribe / unsubscribe, ping, time; executionReport and
  outboundAccountPosition events arrive on the subscribed connection.
- Anything else is answered with Binance's error shape ({"code", "msg"}) and logged as an
  error, so a gap is never silent.
- Admin (not Binance): GET /_exchange/state, POST /_exchange/fault (drop_ws, refuse,
  delay, market_cut, throttle, clear), POST /_exchange/start (begin the market replay now),
  POST /_exchange/speed (change the replay's pace).

The market replays the lake from the window's start at `speed` x real time, beginning with
the first market-stream subscription (or /_exchange/start). Stream events carry the market
time (`T`, `E`), so a node stamps them as a backtest does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response

from trading.exchange import shapes
from trading.exchange.limits import RateLimiter
from trading.exchange.matching import ExchangeError, Matching
from trading.exchange.tape import MarketClock, Tick

log = logging.getLogger("hmmtrader.exchange")
ADMIN = "/_exchange"
NS = 1_000_000_000


@dataclass
class Keys:
    api_key: str
    api_secret: str


@dataclass
class Faults:
    refuse_until: float = 0.0  # wall (monotonic): HTTP 503 and WebSocket handshakes refused
    market_cut_until: float = 0.0  # market streams dropped and refused until then
    delay_s: float = 0.0  # every REST answer and WS API answer waits this long
    history: list[dict[str, Any]] = field(default_factory=list)

    def refusing(self) -> bool:
        return time.monotonic() < self.refuse_until

    def market_cut(self) -> bool:
        return time.monotonic() < self.market_cut_until


class Conn:
    """One WebSocket with its outgoing queue (a slow client never blocks the market)."""

    def __init__(self, ws: WebSocket, kind: str, combined: bool = True) -> None:
        self.ws = ws
        self.kind = kind  # "market" or "user"
        self.combined = combined
        self.streams: set[str] = set()
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.logged_on = False
        self.subscription: int | None = None

    def send(self, text: str) -> None:
        self.queue.put_nowait(text)

    async def pump(self) -> None:
        while True:
            text = await self.queue.get()
            if text is None:
                return
            await self.ws.send_text(text)


class ExchangeServer:
    """The state of one exchange process: account, market, connections, faults."""

    def __init__(
        self,
        matching: Matching,
        tape: list[Tick],
        clock: MarketClock,
        limiter: RateLimiter,
        keys: Keys,
        *,
        weight_limit: int,
        order_limit: int,
        start_on_subscribe: bool = True,
        start_delay_s: float = 2.0,
    ) -> None:
        self.m = matching
        self.start_delay_s = start_delay_s
        self.tape = tape
        self.clock = clock
        self.limiter = limiter
        self.keys = keys
        self.weight_limit = weight_limit
        self.order_limit = order_limit
        self.start_on_subscribe = start_on_subscribe
        self.faults = Faults()
        self.conns: set[Conn] = set()
        self.cursor = 0  # next tape index
        self.tape_ns = 0  # the time of the last event played
        self.unknown: list[str] = []  # requests the exchange does not know
        self.requests = 0
        self.listen_keys: set[str] = set()
        self.next_subscription = 0
        self._replay_task: asyncio.Task[None] | None = None
        matching.publish = self.publish_user

    # ---- time ----------------------------------------------------------------------------
    def now_ms(self) -> int:
        """The exchange's market time: the time of the last market event it published
        (the window's start before the replay), so a lagging replay never stamps orders
        and fills ahead of the book they met. Without a tape, the wall clock."""
        if self.tape:
            return max(self.tape_ns, self.clock.start_ns) // 1_000_000
        return self.clock.now_ms()

    # ---- user data -----------------------------------------------------------------------
    def publish_user(self, event: dict[str, Any]) -> None:
        for conn in list(self.conns):
            if conn.kind == "user" and conn.subscription is not None:
                conn.send(json.dumps({"subscriptionId": conn.subscription, "event": event}))

    # ---- market --------------------------------------------------------------------------
    def begin(self, delay_s: float = 0.0) -> None:
        """Start the market replay (after `delay_s` of wall time: the first subscription
        waits for a client's other streams to be subscribed too)."""
        if self._replay_task is None:
            self._replay_task = asyncio.get_running_loop().create_task(self._replay(delay_s))

    def _begin_clock(self) -> None:
        if not self.clock.running:
            self.clock.begin()
            log.info("market replay begins at %s (speed %g)", self.clock.start_ns, self.clock.speed)

    async def _replay(self, delay_s: float) -> None:
        """Play the tape on the market clock, in time order. Like Binance, the exchange
        sends quotes and trades on separate connections, so a client may receive them a
        little out of order (the node puts them back in order: node.reorder_s)."""
        await asyncio.sleep(delay_s)
        self._begin_clock()
        tape = self.tape
        while self.cursor < len(tape):
            now = self.clock.now_ns()
            while self.cursor < len(tape) and tape[self.cursor].ts_ns <= now:
                tick = tape[self.cursor]
                self._emit(tick)
                self.tape_ns = tick.ts_ns
                self.cursor += 1
            if self.cursor < len(tape):
                delay = self.clock.wall_delay_s(tape[self.cursor].ts_ns)
                await asyncio.sleep(min(max(delay, 0.0005), 0.25))
        log.info("market replay reached the end of its window (%d events)", len(tape))

    def _emit(self, tick: Tick) -> None:
        ts_ms = tick.ts_ns // 1_000_000
        sym = tick.symbol.lower()
        inst = self.m.instruments[tick.symbol]
        if tick.kind == "quote":
            self.m.on_quote(tick.symbol, tick.a, tick.b, tick.c, tick.d, ts_ms)
            book = self.m.books[tick.symbol]
            self._broadcast(f"{sym}@bookTicker", shapes.book_ticker(tick.symbol, book, inst, ts_ms))
        else:
            price = f"{tick.a:.{inst.price_decimals}f}"
            qty = f"{tick.b:.{inst.qty_decimals}f}"
            maker = tick.side < 0  # the seller took: the buyer was the maker
            self._broadcast(
                f"{sym}@trade",
                {"e": "trade", "E": ts_ms, "s": tick.symbol, "t": tick.trade_id, "p": price,
                 "q": qty, "T": ts_ms, "m": maker, "M": True},
            )  # fmt: skip
            self._broadcast(
                f"{sym}@aggTrade",
                {"e": "aggTrade", "E": ts_ms, "s": tick.symbol, "a": tick.trade_id, "p": price,
                 "q": qty, "f": tick.trade_id, "l": tick.trade_id, "T": ts_ms, "m": maker,
                 "M": True},
            )  # fmt: skip

    def _broadcast(self, stream: str, data: dict[str, Any]) -> None:
        if self.faults.market_cut():
            return
        combined = raw = None
        for conn in self.conns:
            if conn.kind != "market" or stream not in conn.streams:
                continue
            if conn.combined:
                combined = combined or json.dumps({"stream": stream, "data": data})
                conn.send(combined)
            else:
                raw = raw or json.dumps(data)
                conn.send(raw)

    # ---- state ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        m = self.m
        return {
            "market_time_ms": self.now_ms(),
            "replay": {"running": self.clock.running, "speed": self.clock.speed,
                       "events": len(self.tape), "played": self.cursor},
            "balances": {a: {"free": shapes.fmt(b.free), "locked": shapes.fmt(b.locked)}
                         for a, b in sorted(m.balances.items())},
            "open_orders": [shapes.order_json(o) for o in m.open_orders()],
            "orders": len(m.orders),
            "fills": len(m.fills),
            "connections": {"market": sum(c.kind == "market" for c in self.conns),
                            "user": sum(c.kind == "user" for c in self.conns)},
            "requests": self.requests,
            "rate_limited": {"429": self.limiter.counts[429], "418": self.limiter.counts[418]},
            "unknown_requests": list(self.unknown),
            "faults": self.faults.history,
            "ledger": str(m.ledger.path) if m.ledger.path else None,
        }  # fmt: skip

    async def drop(self, kind: str | None) -> int:
        n = 0
        for conn in list(self.conns):
            if kind is None or conn.kind == kind:
                n += 1
                with contextlib.suppress(Exception):
                    await conn.ws.close(code=1001)
        return n


def _error(status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"code": code, "msg": msg}, status_code=status, headers=headers)


def _params(query: str, body: bytes) -> tuple[dict[str, str], str]:
    """The request's parameters (query and form body) and the text that was signed."""
    text = body.decode("utf-8", "replace") if body else ""
    total = query + text  # Binance signs the query string followed by the body
    params = dict(parse_qsl(query, keep_blank_values=True))
    params.update(parse_qsl(text, keep_blank_values=True))
    return params, total


Handler = Callable[[Request, dict[str, str]], Awaitable[Any]]


def create_app(server: ExchangeServer) -> FastAPI:
    routes: dict[tuple[str, str], tuple[bool, Handler]] = {}

    def route(method: str, path: str, signed: bool = False) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            routes[(method, path)] = (signed, fn)
            return fn

        return deco

    m = server.m

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not server.start_on_subscribe:
            server.begin()
        yield
        for conn in list(server.conns):
            conn.queue.put_nowait(None)
        m.ledger.close()

    app = FastAPI(title="hmm-trader local Binance Spot exchange", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)  # fmt: skip

    # ---- admin -------------------------------------------------------------------------------
    @app.get(f"{ADMIN}/state")
    async def admin_state() -> dict[str, Any]:
        return server.state()

    @app.post(f"{ADMIN}/start")
    async def admin_start() -> dict[str, Any]:
        server.begin()
        return {"market_time_ms": server.now_ms()}

    @app.post(f"{ADMIN}/speed")
    async def admin_speed(request: Request) -> Response:
        try:
            speed = float(json.loads(await request.body() or b"{}")["speed"])
            assert speed > 0
        except (ValueError, KeyError, TypeError, AssertionError):
            return _error(400, -1102, 'send {"speed": x} with x > 0 (market seconds per wall second)')  # fmt: skip
        server.clock.set_speed(speed)
        log.warning("market replay speed now %g", speed)
        return JSONResponse({"speed": speed, "market_time_ms": server.now_ms()})

    @app.post(f"{ADMIN}/fault")
    async def admin_fault(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
            kind = body["kind"]
            seconds = float(body.get("seconds", 0.0))
        except (ValueError, KeyError, TypeError):
            return _error(400, -1102, 'send {"kind": drop_ws|refuse|delay|market_cut|throttle|clear, "seconds": s, "delay_ms": ms}')  # fmt: skip
        f = server.faults
        now = time.monotonic()
        dropped = 0
        if kind == "drop_ws":
            dropped = await server.drop(body.get("target"))
        elif kind == "refuse":
            f.refuse_until = now + seconds
            dropped = await server.drop(None)
        elif kind == "market_cut":  # the market streams drop and stay silent
            f.market_cut_until = now + seconds
            dropped = await server.drop("market")
        elif kind == "throttle":
            server.limiter.throttle(seconds)
        elif kind == "delay":
            f.delay_s = float(body.get("delay_ms", 0.0)) / 1000.0
        elif kind == "clear":
            f.refuse_until = f.market_cut_until = 0.0
            f.delay_s = 0.0
            server.limiter.throttled_until = 0.0
        else:
            return _error(400, -1102, f"unknown fault {kind!r}: use drop_ws, refuse, delay, market_cut, throttle or clear")  # fmt: skip
        entry = {"kind": kind, "seconds": seconds, "delay_ms": body.get("delay_ms"),
                 "dropped": dropped, "market_time_ms": server.now_ms(), "wall_ms": time.time_ns() // 1_000_000}  # fmt: skip
        f.history.append(entry)
        log.warning("fault injected: %s", entry)
        return JSONResponse(entry)

    # ---- REST --------------------------------------------------------------------------------
    @route("GET", "/api/v3/ping")
    async def ping(request: Request, p: dict[str, str]) -> Any:
        return {}

    @route("GET", "/api/v3/time")
    async def server_time(request: Request, p: dict[str, str]) -> Any:
        return {"serverTime": time.time_ns() // 1_000_000}

    @route("GET", "/api/v3/exchangeInfo")
    async def exchange_info(request: Request, p: dict[str, str]) -> Any:
        wanted = _symbols_param(p)
        insts = [i for s, i in m.instruments.items() if wanted is None or s in wanted]
        if wanted is not None and len(insts) != len(wanted):
            raise ExchangeError(400, -1121, "Invalid symbol.")
        return shapes.exchange_info(insts, time.time_ns() // 1_000_000, server.weight_limit,
                                    server.order_limit)  # fmt: skip

    @route("GET", "/api/v3/ticker/bookTicker")
    async def book_ticker(request: Request, p: dict[str, str]) -> Any:
        def one(sym: str) -> dict[str, Any]:
            inst, book = m.instrument(sym), m.books[sym.upper()]
            out = shapes.book_ticker(inst.symbol, book, inst, book.ts_ms)
            return {"symbol": inst.symbol, "bidPrice": out["b"], "bidQty": out["B"],
                    "askPrice": out["a"], "askQty": out["A"]}  # fmt: skip

        if p.get("symbol"):
            return one(p["symbol"])
        return [one(s) for s in m.instruments]

    @route("GET", "/api/v3/account", signed=True)
    async def account(request: Request, p: dict[str, str]) -> Any:
        return shapes.account_json(m.instruments, m.balances, server.now_ms())

    @route("POST", "/api/v3/order", signed=True)
    async def new_order(request: Request, p: dict[str, str]) -> Any:
        order, fills = m.new_order(p, server.now_ms())
        resp = (p.get("newOrderRespType") or "FULL").upper()  # Binance: FULL for MARKET and LIMIT
        return shapes.new_order_json(order, fills, resp)

    @route("POST", "/api/v3/order/test", signed=True)
    async def test_order(request: Request, p: dict[str, str]) -> Any:
        m._validate(p, server.now_ms())
        return {}

    @route("GET", "/api/v3/order", signed=True)
    async def query_order(request: Request, p: dict[str, str]) -> Any:
        return shapes.order_json(m.find(p.get("symbol", ""), p.get("orderId"), p.get("origClientOrderId")))  # fmt: skip

    @route("DELETE", "/api/v3/order", signed=True)
    async def cancel_order(request: Request, p: dict[str, str]) -> Any:
        order = m.cancel(p.get("symbol", ""), p.get("orderId"), p.get("origClientOrderId"), server.now_ms())  # fmt: skip
        return shapes.cancel_json(order, p.get("origClientOrderId"))

    @route("GET", "/api/v3/openOrders", signed=True)
    async def open_orders(request: Request, p: dict[str, str]) -> Any:
        return [shapes.order_json(o) for o in m.open_orders(p.get("symbol") or None)]

    @route("DELETE", "/api/v3/openOrders", signed=True)
    async def cancel_open(request: Request, p: dict[str, str]) -> Any:
        orders = m.cancel_all(p.get("symbol", ""), server.now_ms())
        return [shapes.cancel_json(o, None) for o in orders]

    @route("GET", "/api/v3/allOrders", signed=True)
    async def all_orders(request: Request, p: dict[str, str]) -> Any:
        inst = m.instrument(p.get("symbol"))
        orders = [o for o in m.orders.values() if o.symbol == inst.symbol]
        orders = _time_filtered(orders, p, lambda o: o.time_ms, lambda o: o.order_id, "orderId")
        return [shapes.order_json(o) for o in orders]

    @route("GET", "/api/v3/myTrades", signed=True)
    async def my_trades(request: Request, p: dict[str, str]) -> Any:
        inst = m.instrument(p.get("symbol"))
        fills = [f for f in m.fills if f.symbol == inst.symbol]
        order_id = _int_param(p, "orderId")
        if order_id is not None:
            fills = [f for f in fills if f.order_id == order_id]
        fills = _time_filtered(fills, p, lambda f: f.time_ms, lambda f: f.trade_id, "fromId")
        return [shapes.trade_json(f, m.orders[f.order_id]) for f in fills]

    @route("POST", "/api/v3/userDataStream")
    async def listen_key_new(request: Request, p: dict[str, str]) -> Any:
        _check_key(request, server.keys)
        key = uuid.uuid4().hex + uuid.uuid4().hex
        server.listen_keys.add(key)
        return {"listenKey": key}

    @route("PUT", "/api/v3/userDataStream")
    async def listen_key_keepalive(request: Request, p: dict[str, str]) -> Any:
        _check_key(request, server.keys)
        if p.get("listenKey") not in server.listen_keys:
            raise ExchangeError(400, -1125, "This listenKey does not exist.")
        return {}

    @route("DELETE", "/api/v3/userDataStream")
    async def listen_key_close(request: Request, p: dict[str, str]) -> Any:
        _check_key(request, server.keys)
        server.listen_keys.discard(p.get("listenKey", ""))
        return {}

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def dispatch(request: Request, path: str) -> Response:
        method, path = request.method, "/" + path
        if server.faults.refusing():
            return _error(503, -1001, "Internal error; unable to process your request. Please try again.")  # fmt: skip
        server.requests += 1
        found = routes.get((method, path))
        weight = shapes.WEIGHTS.get((method, path), 1)
        if (method, path) == ("GET", "/api/v3/openOrders") and not request.query_params.get(
            "symbol"
        ):
            weight = 80
        is_order = (method, path) == ("POST", "/api/v3/order")
        verdict = server.limiter.check(weight, is_order)
        headers = {"X-MBX-USED-WEIGHT-1M": str(verdict.used_weight)}
        if is_order:
            headers["X-MBX-ORDER-COUNT-10S"] = str(verdict.order_count)
        if verdict.status != 200:
            log.warning("%s %s answered %d: %s", method, path, verdict.status, verdict.msg)
            if is_order:  # an order refused at the door is in the ledger too
                p = dict(parse_qsl(request.url.query))
                m.ledger.write(
                    "order_rejected", server.now_ms(), client_order_id=p.get("newClientOrderId"),
                    symbol=p.get("symbol"), side=p.get("side"), type=p.get("type"),
                    qty=p.get("quantity"), code=verdict.code, msg=verdict.msg,
                    http_status=verdict.status,
                )  # fmt: skip
            headers["Retry-After"] = str(verdict.retry_after_s)
            return _error(verdict.status, verdict.code, verdict.msg, headers)
        if server.faults.delay_s:
            await asyncio.sleep(server.faults.delay_s)
        if found is None:
            text = f"{method} {path}"
            server.unknown.append(text)
            log.error("unknown request %s?%s: the local exchange does not implement it", text, request.url.query)  # fmt: skip
            return _error(404, -1020, f"This operation is not supported by the local exchange: {text}", headers)  # fmt: skip
        signed, handler = found
        body = await request.body()
        params, total = _params(request.url.query, body)
        try:
            if signed:
                _check_signed(request, params, total, server.keys)
            result = await handler(request, params)
        except ExchangeError as exc:
            log.info("%s %s refused: %d %s", method, path, exc.code, exc.msg)
            return _error(exc.status, exc.code, exc.msg, headers)
        return JSONResponse(result, headers=headers)

    # ---- WebSockets --------------------------------------------------------------------------
    async def serve_socket(
        conn: Conn, answer: Callable[[str], dict[str, Any]], delayed: bool = False
    ) -> None:
        """Answer a socket's requests until it closes; its events go out through its queue."""
        pump = asyncio.get_running_loop().create_task(conn.pump())
        try:
            while True:
                text = await conn.ws.receive_text()
                if delayed and server.faults.delay_s:
                    await asyncio.sleep(server.faults.delay_s)
                conn.send(json.dumps(answer(text)))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            server.conns.discard(conn)
            conn.queue.put_nowait(None)
            pump.cancel()

    async def market_socket(ws: WebSocket, streams: list[str], combined: bool) -> None:
        if server.faults.refusing():
            await ws.close(code=1013)
            return
        await ws.accept()
        conn = Conn(ws, "market", combined)
        conn.streams.update(s for s in streams if s)
        server.conns.add(conn)
        if conn.streams and server.start_on_subscribe:
            server.begin(server.start_delay_s)
        await serve_socket(conn, lambda text: _market_request(server, conn, text))

    @app.websocket("/stream")
    async def combined_stream(ws: WebSocket) -> None:
        streams = (ws.query_params.get("streams") or "").split("/")
        await market_socket(ws, streams, True)

    @app.websocket("/ws")
    async def raw_stream_bare(ws: WebSocket) -> None:
        await market_socket(ws, [], False)

    @app.websocket("/ws/{streams}")
    async def raw_stream(ws: WebSocket, streams: str) -> None:
        await market_socket(ws, streams.split("/"), False)

    @app.websocket("/ws-api/v3")
    async def ws_api(ws: WebSocket) -> None:
        if server.faults.refusing():
            await ws.close(code=1013)
            return
        await ws.accept()
        conn = Conn(ws, "user")
        server.conns.add(conn)
        await serve_socket(conn, lambda text: _ws_api_request(server, conn, text), delayed=True)

    return app


def _symbols_param(p: dict[str, str]) -> set[str] | None:
    if p.get("symbol"):
        return {p["symbol"].upper()}
    if p.get("symbols"):
        try:
            return {str(s).upper() for s in json.loads(p["symbols"])}
        except ValueError:
            raise ExchangeError(400, -1100, "Illegal characters found in parameter 'symbols'.") from None  # fmt: skip
    return None


def _int_param(p: dict[str, str], name: str, default: int | None = None) -> int | None:
    value = p.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ExchangeError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.") from None  # fmt: skip


def _time_filtered(
    items: list[Any], p: dict[str, str], ts: Callable[[Any], int], ident: Callable[[Any], int],
    from_name: str,
) -> list[Any]:  # fmt: skip
    """Binance's paging: from an id (orderId for allOrders, fromId for myTrades) the first
    `limit` items on; else the last `limit` items in [startTime, endTime]."""
    start, end = _int_param(p, "startTime"), _int_param(p, "endTime")
    first = _int_param(p, from_name)
    limit = _int_param(p, "limit", 500) or 500
    if not 1 <= limit <= 1000:
        raise ExchangeError(400, -1100, "Illegal characters found in parameter 'limit'; legal range is '1' to '1000'.")  # fmt: skip
    if start is not None:
        items = [i for i in items if ts(i) >= start]
    if end is not None:
        items = [i for i in items if ts(i) <= end]
    if first is not None:
        return [i for i in items if ident(i) >= first][:limit]
    return items[-limit:]


def _check_key(request: Request, keys: Keys) -> None:
    if request.headers.get("X-MBX-APIKEY") != keys.api_key:
        raise ExchangeError(401, -2015, "Invalid API-key, IP, or permissions for action.")


def _check_signed(request: Request, params: dict[str, str], total: str, keys: Keys) -> None:
    _check_key(request, keys)
    signature = params.pop("signature", None)
    if not signature:
        raise ExchangeError(400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")  # fmt: skip
    payload = total.replace(f"&signature={signature}", "").replace(f"signature={signature}&", "")
    want = hmac.new(keys.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, signature):
        raise ExchangeError(400, -1022, "Signature for this request is not valid.")
    _check_timestamp(params)


def _check_timestamp(params: dict[str, Any]) -> None:
    try:
        ts = int(params.get("timestamp") or 0)
        window = float(params.get("recvWindow") or 5000)
    except ValueError:
        raise ExchangeError(400, -1100, "Illegal characters found in parameter 'timestamp'.") from None  # fmt: skip
    if not ts:
        raise ExchangeError(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")  # fmt: skip
    now = time.time_ns() // 1_000_000
    if ts > now + 1000 or now - ts > window:
        raise ExchangeError(400, -1021, "Timestamp for this request is outside of the recvWindow.")


def _market_request(server: ExchangeServer, conn: Conn, text: str) -> dict[str, Any]:
    try:
        msg = json.loads(text)
        method, params, ident = msg.get("method"), msg.get("params") or [], msg.get("id")
    except (ValueError, AttributeError):
        log.error("market stream: unparseable message %r", text[:200])
        return {"code": 3, "msg": "Invalid JSON: expected a JSON object"}
    if method == "SUBSCRIBE":
        conn.streams.update(str(s) for s in params)
        if server.start_on_subscribe:
            server.begin(server.start_delay_s)
        return {"result": None, "id": ident}
    if method == "UNSUBSCRIBE":
        conn.streams.difference_update(str(s) for s in params)
        return {"result": None, "id": ident}
    if method == "LIST_SUBSCRIPTIONS":
        return {"result": sorted(conn.streams), "id": ident}
    if method in ("SET_PROPERTY", "GET_PROPERTY"):
        return {"result": None if method == "SET_PROPERTY" else False, "id": ident}
    log.error("market stream: unknown method %r", method)
    return {"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}, "id": ident}


def _ws_api_request(server: ExchangeServer, conn: Conn, text: str) -> dict[str, Any]:
    try:
        msg = json.loads(text)
        method, params, ident = msg.get("method"), msg.get("params") or {}, msg.get("id")
    except (ValueError, AttributeError):
        log.error("ws-api: unparseable message %r", text[:200])
        return {"id": None, "status": 400, "error": {"code": -1000, "msg": "Invalid JSON"}}

    def ok(result: Any) -> dict[str, Any]:
        return {"id": ident, "status": 200, "result": result, "rateLimits": []}

    def err(status: int, code: int, msg: str) -> dict[str, Any]:
        return {"id": ident, "status": status, "error": {"code": code, "msg": msg}}

    try:
        if method == "session.logon":
            if params.get("apiKey") != server.keys.api_key:
                return err(401, -2015, "Invalid API-key, IP, or permissions for action.")
            signature = str(params.get("signature", ""))
            payload = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")
            want = hmac.new(server.keys.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()  # fmt: skip
            if not hmac.compare_digest(want, signature):
                return err(400, -1022, "Signature for this request is not valid.")
            _check_timestamp(params)
            conn.logged_on = True
            now = time.time_ns() // 1_000_000
            return ok({"apiKey": server.keys.api_key, "authorizedSince": now, "connectedSince": now,
                       "returnRateLimits": False, "serverTime": now, "userDataStream": False})  # fmt: skip
        if method == "session.status":
            return ok({"apiKey": server.keys.api_key if conn.logged_on else None,
                       "serverTime": time.time_ns() // 1_000_000,
                       "userDataStream": conn.subscription is not None})  # fmt: skip
        if method == "session.logout":
            conn.logged_on = False
            return ok({})
        if method == "userDataStream.subscribe":
            if not conn.logged_on:
                return err(401, -2015, "Invalid API-key, IP, or permissions for action.")
            conn.subscription = server.next_subscription
            server.next_subscription += 1
            return ok({"subscriptionId": conn.subscription})
        if method == "userDataStream.unsubscribe":
            conn.subscription = None
            return ok({})
        if method == "ping":
            return ok({})
        if method == "time":
            return ok({"serverTime": time.time_ns() // 1_000_000})
    except ExchangeError as exc:
        return err(exc.status, exc.code, exc.msg)
    server.unknown.append(f"ws-api {method}")
    log.error("ws-api: unknown method %r: the local exchange does not implement it", method)
    return err(400, -1020, f"This operation is not supported by the local exchange: {method}")


def build_server(
    config: Any,
    *,
    symbols: list[str],
    window: Any | None,
    speed: float,
    keys: Keys,
    balances: dict[str, str],
    ledger_path: Any | None,
    slippage_bp: float,
    weight_limit: int = 6000,
    weight_window_s: float = 60.0,
    order_limit: int = 100,
    ban_s: float = 120.0,
    lake_root: Any | None = None,
    start_on_subscribe: bool = True,
) -> ExchangeServer:
    """The exchange of `symbols` (their metadata from configs/symbols.yaml), its account
    funded with `balances`, replaying `window` of the lake (None: no market replay)."""
    from decimal import Decimal

    from trading.exchange.ledger import Ledger
    from trading.exchange.matching import Balance, Instrument
    from trading.exchange.tape import load_tape

    insts = {s: Instrument.of(s, config.symbol(s)) for s in symbols}
    ledger = Ledger(ledger_path)
    matching = Matching(
        insts,
        {a: Balance(free=Decimal(v)) for a, v in balances.items()},
        ledger,
        slippage_bp=Decimal(repr(float(slippage_bp))),
    )
    tape: list[Tick] = []
    start_ns = time.time_ns()
    if window is not None:
        tape = load_tape(
            lake_root or config.home / "lake", config.instruments.venue, symbols, window,
            {s: i.price_decimals for s, i in insts.items()},
            {s: i.qty_decimals for s, i in insts.items()},
        )  # fmt: skip
        start_ns = window.start_ns
    for asset, bal in sorted(matching.balances.items()):
        ledger.write("balance", start_ns // 1_000_000, cause="deposit",
                     balances={asset: {"free": shapes.fmt(bal.free), "locked": shapes.fmt(bal.locked)}})  # fmt: skip
    limiter = RateLimiter(weight_limit, weight_window_s, order_limit, 10.0, ban_s)
    return ExchangeServer(
        matching, tape, MarketClock(start_ns, speed), limiter, keys,
        weight_limit=weight_limit, order_limit=order_limit, start_on_subscribe=start_on_subscribe,
    )  # fmt: skip
