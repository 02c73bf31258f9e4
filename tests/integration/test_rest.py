"""BinanceRestClient and ingest_rest against a real HTTP server on 127.0.0.1.

The fake server speaks Binance's spot v3 shapes for aggTrades (startTime/endTime windows
under an hour, fromId paging), klines and bookTicker, sends X-MBX-USED-WEIGHT-1M on every
answer and can be scripted to answer a request with anything (429, HTML, broken JSON).
Sleep and clock are injected, so nothing really waits.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from trading.data.lake import Lake, Written
from trading.data.rest import BinanceRestClient, ingest_rest
from trading.errors import InputError, SourceError
from trading.settings import AppConfig, RestSettings, load_settings

pytestmark = pytest.mark.integration

MINUTE = 60_000
NOW_MS = 1_717_243_220_000  # 2024-06-01 12:00:20 UTC, 20 s into a minute
MINUTE_NOW = NOW_MS // MINUTE * MINUTE
N_TRADES = 3000  # 720 ms apart over the 36 minutes before NOW: 2,500 in the last 30
TRADE_GAP_MS = 720
FIRST_TRADE_MS = NOW_MS - 36 * MINUTE
DAY = dt.date(2024, 6, 1)
BASE = {"BTCUSDT": (67_000.0, 7_000_000), "ETHUSDT": (3_500.0, 2_000_000)}
BOOK = {
    "BTCUSDT": ("67010.01", "1.25", "67010.02", "0.50"),
    "ETHUSDT": ("3501.10", "12.5", "3501.11", "7.75"),
}
AGG = "/api/v3/aggTrades"
KLINES = "/api/v3/klines"
BOOK_TICKER = "/api/v3/ticker/bookTicker"


def trade(symbol: str, i: int) -> dict[str, Any]:
    price0, id0 = BASE[symbol]
    return {
        "a": id0 + i,
        "p": f"{price0 + (i % 101) * 0.25:.8f}",
        "q": f"{0.001 * (1 + i % 7):.8f}",
        "f": 10 * (id0 + i),
        "l": 10 * (id0 + i) + i % 3,
        "T": FIRST_TRADE_MS + i * TRADE_GAP_MS,
        "m": i % 3 == 0,
        "M": True,
    }


def kline_values(symbol: str, open_ms: int) -> dict[str, float | int]:
    base = BASE[symbol][0] + (open_ms // MINUTE) % 50
    volume = 1.5 + (open_ms // MINUTE) % 7
    return {
        "open": base,
        "high": base + 5,
        "low": base - 5,
        "close": base + 1,
        "volume": volume,
        "quote_volume": volume * base,
        "n_trades": 100 + (open_ms // MINUTE) % 13,
        "taker_buy_volume": volume / 2,
    }


def kline(symbol: str, open_ms: int) -> list[Any]:
    v = kline_values(symbol, open_ms)
    return [
        open_ms,
        f"{v['open']:.2f}",
        f"{v['high']:.2f}",
        f"{v['low']:.2f}",
        f"{v['close']:.2f}",
        f"{v['volume']:.8f}",
        open_ms + MINUTE - 1,
        f"{v['quote_volume']:.8f}",
        v["n_trades"],
        f"{v['taker_buy_volume']:.8f}",
        f"{float(v['taker_buy_volume']) * float(v['open']):.8f}",
        "0",
    ]


@dataclass
class Reply:
    status: int
    body: bytes | str | Any
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class FakeBinance:
    """State shared by the handler threads; tests script replies and read the log."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    scripted: dict[tuple[str, str], list[Reply]] = field(default_factory=dict)
    weight: int | None = None  # fixed X-MBX-USED-WEIGHT-1M; None: a running count
    used: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, path: str, symbol: str, *replies: Reply) -> None:
        self.scripted.setdefault((path, symbol), []).extend(replies)

    def requests(self, path: str, symbol: str | None = None) -> list[dict[str, str]]:
        return [
            e[2]
            for e in self.events
            if e[0] == "GET" and e[1] == path and (symbol is None or e[2].get("symbol") == symbol)
        ]

    def answer(self, path: str, params: dict[str, str]) -> Reply:
        with self.lock:
            self.events.append(("GET", path, params))
            self.used += 2
            queue = self.scripted.get((path, params.get("symbol", "")))
            if queue:
                return queue.pop(0)
        symbol = params.get("symbol", "")
        if symbol not in BASE:
            return Reply(400, {"code": -1121, "msg": "Invalid symbol."})
        limit = int(params.get("limit", "500"))
        if path == AGG:
            trades = [trade(symbol, i) for i in range(N_TRADES)]
            if "fromId" in params:
                chosen = [t for t in trades if t["a"] >= int(params["fromId"])]
            else:
                start, end = int(params["startTime"]), int(params["endTime"])
                if end - start >= 3_600_000:
                    msg = "More than 1 hours between startTime and endTime."
                    return Reply(400, {"code": -1127, "msg": msg})
                chosen = [t for t in trades if start <= t["T"] <= end]
            return Reply(200, chosen[:limit])
        if path == KLINES:
            start, end = int(params["startTime"]), int(params["endTime"])
            first = -(-start // MINUTE) * MINUTE
            opens = range(first, min(end, NOW_MS) + 1, MINUTE)
            return Reply(200, [kline(symbol, t) for t in opens][:limit])
        if path == BOOK_TICKER:
            bid, bid_qty, ask, ask_qty = BOOK[symbol]
            return Reply(
                200,
                {
                    "symbol": symbol,
                    "bidPrice": bid,
                    "bidQty": bid_qty,
                    "askPrice": ask,
                    "askQty": ask_qty,
                },
            )
        return Reply(404, "<html><body>Not Found</body></html>", content_type="text/html")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeBinance

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        reply = self.fake.answer(url.path, dict(parse_qsl(url.query)))
        body = reply.body
        if not isinstance(body, bytes | str):
            body = json.dumps(body)
        data = body.encode() if isinstance(body, str) else body
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(data)))
        weight = self.fake.weight if self.fake.weight is not None else self.fake.used
        self.send_header("X-MBX-USED-WEIGHT-1M", str(weight))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeClock:
    def __init__(self, events: list[tuple[Any, ...]]) -> None:
        self.ms = NOW_MS
        self.sleeps: list[float] = []
        self.events = events

    def now_ms(self) -> int:
        return self.ms

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.events.append(("sleep", seconds))
        self.ms += round(seconds * 1000)


@pytest.fixture
def fake() -> Iterator[tuple[FakeBinance, str]]:
    state = FakeBinance()
    handler = type("Handler", (_Handler,), {"fake": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def clock(fake: tuple[FakeBinance, str]) -> FakeClock:
    return FakeClock(fake[0].events)


@pytest.fixture
def config(tmp_path: Path) -> AppConfig:
    loaded = load_settings()
    settings = loaded.settings.model_copy(update={"home": tmp_path / "home"})
    return loaded.model_copy(update={"settings": settings})


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


def make_client(
    fake: tuple[FakeBinance, str], clock: FakeClock, **settings: Any
) -> BinanceRestClient:
    return BinanceRestClient(
        fake[1], RestSettings(**settings), sleep=clock.sleep, now_ms=clock.now_ms
    )


def lake_files(lake: Lake) -> list[Path]:
    return sorted(p for p in lake.root.rglob("*") if p.is_file()) if lake.root.exists() else []


# -- 1. paging, parsing, lake, merge ---------------------------------------------------


def test_ingest_pages_by_from_id_and_merges_without_duplicates(
    fake: tuple[FakeBinance, str], clock: FakeClock, config: AppConfig, lake: Lake
) -> None:
    state, _ = fake
    venue = config.instruments.venue
    with make_client(fake, clock) as client:
        written = ingest_rest(config, lake, ["BTCUSDT", "ETHUSDT"], 30, client=client)

    assert sorted(written, key=lambda w: (w.symbol, w.kind)) == [
        Written(venue, symbol, kind, DAY, rows)
        for symbol in ("BTCUSDT", "ETHUSDT")
        for kind, rows in (("bars", 30), ("quotes", 1), ("trades", 2500))
    ]
    # one startTime window (30 min) and then fromId pages: 1000 + 1000 + 500 trades
    agg = state.requests(AGG, "BTCUSDT")
    assert [sorted(r) for r in agg] == [
        ["endTime", "limit", "startTime", "symbol"],
        ["fromId", "limit", "symbol"],
        ["fromId", "limit", "symbol"],
    ]
    assert agg[0]["startTime"] == str(NOW_MS - 30 * MINUTE) and agg[0]["endTime"] == str(NOW_MS)
    assert [r.get("fromId") for r in agg[1:]] == ["7001500", "7002500"]
    assert clock.sleeps == []

    for symbol in ("BTCUSDT", "ETHUSDT"):
        trades = lake.read(venue, symbol, "trades").to_pydict()
        expected = [trade(symbol, i) for i in range(500, N_TRADES)]
        assert len(trades["trade_id"]) == 2500
        assert trades["trade_id"] == [t["a"] for t in expected]
        assert len(set(trades["trade_id"])) == 2500
        assert trades["ts_ns"] == [t["T"] * 1_000_000 for t in expected]
        assert trades["price"] == [float(t["p"]) for t in expected]
        assert trades["qty"] == [float(t["q"]) for t in expected]
        assert trades["aggressor_side"] == [-1 if t["m"] else 1 for t in expected]
        assert trades["aggressor_side"].count(-1) == 833  # i % 3 == 0 for i in 500..2999

        bars = lake.read(venue, symbol, "bars").to_pydict()
        opens = list(range(MINUTE_NOW - 30 * MINUTE, MINUTE_NOW, MINUTE))  # forming bar left out
        assert bars["ts_ns"] == [t * 1_000_000 for t in opens]
        for name in (
            "open",
            "high",
            "low",
            "close",
            "volume",
            "quote_volume",
            "n_trades",
            "taker_buy_volume",
        ):
            want = [kline_values(symbol, t)[name] for t in opens]
            assert bars[name] == pytest.approx(want, rel=1e-12), name

        quotes = lake.read(venue, symbol, "quotes").to_pylist()
        bid, bid_qty, ask, ask_qty = BOOK[symbol]
        assert quotes == [
            {
                "ts_ns": NOW_MS * 1_000_000,
                "bid": float(bid),
                "ask": float(ask),
                "bid_size": float(bid_qty),
                "ask_size": float(ask_qty),
            }
        ]

    files_before = lake_files(lake)
    assert len(files_before) == 6 and all(p.name == "data.parquet" for p in files_before)

    # same window again: merge keeps every row once
    with make_client(fake, clock) as client:
        ingest_rest(config, lake, ["BTCUSDT", "ETHUSDT"], 30, client=client)
    assert lake_files(lake) == files_before
    assert lake.read(venue, "BTCUSDT", "trades").num_rows == 2500
    assert lake.read(venue, "BTCUSDT", "bars").num_rows == 30
    assert lake.read(venue, "BTCUSDT", "quotes").num_rows == 1

    # five minutes later, over the last 10 minutes: union, still no duplicate trade
    clock.ms += 5 * MINUTE
    with make_client(fake, clock) as client:
        written = ingest_rest(config, lake, ["BTCUSDT"], 10, client=client)
    trades = lake.read(venue, "BTCUSDT", "trades")
    assert trades.num_rows == 2500
    assert trades.column("trade_id").to_pylist() == list(range(7_000_500, 7_003_000))
    bars = lake.read(venue, "BTCUSDT", "bars")
    assert bars.num_rows == 31  # the bar forming at NOW has closed by now
    assert bars.column("ts_ns").to_pylist()[-1] == MINUTE_NOW * 1_000_000
    assert lake.read(venue, "BTCUSDT", "quotes").num_rows == 2  # a second snapshot
    assert {(w.kind, w.rows) for w in written} == {("trades", 2500), ("bars", 31), ("quotes", 2)}


def test_agg_trades_walks_hour_windows_then_from_id(
    fake: tuple[FakeBinance, str], clock: FakeClock
) -> None:
    state, _ = fake
    with make_client(fake, clock) as client:
        table = client.agg_trades("BTCUSDT", NOW_MS - 150 * MINUTE, NOW_MS)
    ids = table.column("trade_id").to_pylist()
    assert ids == list(range(7_000_000, 7_003_000))
    windows = [r for r in state.requests(AGG) if "startTime" in r]
    # [-150, -90) is empty, [-90, -30) holds 500 trades (< limit), then fromId pages
    assert [(int(r["startTime"]) - NOW_MS) // MINUTE for r in windows] == [-150, -90]
    assert all(int(r["endTime"]) - int(r["startTime"]) < 3_600_000 for r in windows)
    assert [r["fromId"] for r in state.requests(AGG) if "fromId" in r] == [
        "7000500",
        "7001500",
        "7002500",
    ]


def test_klines_page_over_a_day(fake: tuple[FakeBinance, str], clock: FakeClock) -> None:
    state, _ = fake
    with make_client(fake, clock) as client:
        bars = client.klines_1m("BTCUSDT", MINUTE_NOW - 1440 * MINUTE, NOW_MS)
    opens = [t // 1_000_000 for t in bars.column("ts_ns").to_pylist()]
    assert opens == list(range(MINUTE_NOW - 1440 * MINUTE, MINUTE_NOW, MINUTE))
    assert [int(r["startTime"]) for r in state.requests(KLINES)] == [
        MINUTE_NOW - 1440 * MINUTE,
        MINUTE_NOW - 440 * MINUTE,
    ]


@pytest.mark.parametrize("minutes", [0, -5, 1441])
def test_minutes_out_of_range(
    minutes: int, fake: tuple[FakeBinance, str], clock: FakeClock, config: AppConfig, lake: Lake
) -> None:
    with make_client(fake, clock) as client, pytest.raises(InputError, match="1 to 1440"):
        ingest_rest(config, lake, ["BTCUSDT"], minutes, client=client)
    assert fake[0].events == []


# -- 2. 429 / 418 / 5xx / connection failures -------------------------------------------


@pytest.mark.parametrize("status", [429, 418])
def test_retry_after_is_slept_then_retried(
    status: int,
    fake: tuple[FakeBinance, str],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state, _ = fake
    state.script(
        BOOK_TICKER,
        "BTCUSDT",
        Reply(status, {"code": -1003, "msg": "Too much request weight used"}, {"Retry-After": "2"}),
    )
    with (
        caplog.at_level(logging.WARNING, logger="trading.data.rest"),
        make_client(fake, clock) as client,
    ):
        table = client.book_ticker("BTCUSDT")
    assert clock.sleeps == [2.0]
    assert len(state.requests(BOOK_TICKER)) == 2
    assert table.column("bid").to_pylist() == [67010.01]
    assert table.column("ts_ns").to_pylist() == [(NOW_MS + 2000) * 1_000_000]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"HTTP {status}" in warnings[0] and "2.0 s" in warnings[0]


@pytest.mark.parametrize("status", [429, 418])
def test_retry_after_above_cap_raises(
    status: int, fake: tuple[FakeBinance, str], clock: FakeClock
) -> None:
    state, _ = fake
    state.script(
        BOOK_TICKER,
        "BTCUSDT",
        Reply(status, {"code": -1003, "msg": "banned"}, {"Retry-After": "300"}),
    )
    with (
        make_client(fake, clock, max_retry_after_s=120) as client,
        pytest.raises(SourceError) as err,
    ):
        client.book_ticker("BTCUSDT")
    message = str(err.value)
    assert BOOK_TICKER in message and f"HTTP {status}" in message
    assert "300 s" in message and "120" in message
    assert clock.sleeps == [] and len(state.requests(BOOK_TICKER)) == 1


def test_server_errors_back_off_then_succeed_or_give_up(
    fake: tuple[FakeBinance, str], clock: FakeClock
) -> None:
    state, _ = fake
    state.script(
        KLINES,
        "BTCUSDT",
        Reply(503, "busy", content_type="text/plain"),
        Reply(502, "<html>bad gateway</html>", content_type="text/html"),
    )
    with make_client(fake, clock, max_attempts=3) as client:
        bars = client.klines_1m("BTCUSDT", MINUTE_NOW - 5 * MINUTE, NOW_MS)
        assert bars.num_rows == 5
        assert clock.sleeps == [0.5, 1.0]
        state.script(BOOK_TICKER, "BTCUSDT", *[Reply(500, "oops", content_type="text/plain")] * 3)
        with pytest.raises(
            SourceError, match=r"bookTicker.*gave up after 3 attempt\(s\).*HTTP 500"
        ):
            client.book_ticker("BTCUSDT")
    assert clock.sleeps == [0.5, 1.0, 0.5, 1.0]
    assert len(state.requests(BOOK_TICKER)) == 3


def test_connection_refused_retries_then_raises(clock: FakeClock) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = BinanceRestClient(
        f"http://127.0.0.1:{port}",
        RestSettings(max_attempts=3),
        sleep=clock.sleep,
        now_ms=clock.now_ms,
    )
    with client, pytest.raises(SourceError, match="connection failed") as err:
        client.book_ticker("BTCUSDT")
    assert BOOK_TICKER in str(err.value)
    assert clock.sleeps == [0.5, 1.0]


# -- 3. malformed bodies --------------------------------------------------------------


MALFORMED = {
    "invalid-json": (AGG, Reply(200, b'[{"a": 1, "p": "1.0",'), "not JSON"),
    "missing-p": (AGG, Reply(200, [{"a": 1, "q": "1.0", "T": NOW_MS, "m": True}]), "no 'p' field"),
    "non-numeric-price": (
        AGG,
        Reply(200, [{"a": 1, "p": "abc", "q": "1", "T": NOW_MS, "m": False}]),
        "p 'abc' is not a number",
    ),
    "not-a-list": (AGG, Reply(200, {"a": 1}), "expected a JSON list"),
    "html-page-200": (
        KLINES,
        Reply(
            200, "<!DOCTYPE html><html><body>Maintenance</body></html>", content_type="text/html"
        ),
        "not JSON",
    ),
    "html-page-403": (
        KLINES,
        Reply(403, "<html><body>403 Forbidden</body></html>", content_type="text/html"),
        "HTTP 403",
    ),
    "short-kline": (KLINES, Reply(200, [[NOW_MS, "1", "2"]]), "array of 12 fields"),
    "book-missing-ask": (
        BOOK_TICKER,
        Reply(200, {"symbol": "ETHUSDT", "bidPrice": "1", "bidQty": "1", "askQty": "1"}),
        "no 'askPrice' field",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_body_raises_source_error_and_writes_nothing(
    case: str, fake: tuple[FakeBinance, str], clock: FakeClock, config: AppConfig, lake: Lake
) -> None:
    state, _ = fake
    path, reply, fragment = MALFORMED[case]
    # BTCUSDT is fetched and staged first; ETHUSDT's bad answer must discard it all
    state.script(path, "ETHUSDT", reply)
    with make_client(fake, clock) as client, pytest.raises(SourceError) as err:
        ingest_rest(config, lake, ["BTCUSDT", "ETHUSDT"], 30, client=client)
    message = str(err.value)
    assert path in message and fragment in message, message
    assert state.requests(BOOK_TICKER, "BTCUSDT")  # BTCUSDT really was fetched
    assert lake_files(lake) == []


# -- 4. used weight --------------------------------------------------------------------


def test_used_weight_above_headroom_pauses_until_next_minute(
    fake: tuple[FakeBinance, str], clock: FakeClock
) -> None:
    state, _ = fake
    with make_client(fake, clock, weight_limit_1m=6000, weight_headroom=0.8) as client:
        state.weight = 4800  # exactly the headroom: no pause
        client.book_ticker("BTCUSDT")
        client.book_ticker("BTCUSDT")
        assert clock.sleeps == []
        state.weight = 4801
        client.book_ticker("BTCUSDT")  # answer says 4801 > 0.8 * 6000
        state.weight = 10
        quote = client.book_ticker("ETHUSDT")  # waits 40 s for 12:01:00 first
        client.book_ticker("ETHUSDT")
    assert clock.sleeps == [40.0]
    assert clock.ms == MINUTE_NOW + MINUTE
    kinds = [(e[0], e[2].get("symbol") if e[0] == "GET" else e[1]) for e in state.events]
    assert kinds == [("GET", "BTCUSDT")] * 3 + [("sleep", 40.0)] + [("GET", "ETHUSDT")] * 2
    assert quote.column("ts_ns").to_pylist() == [(MINUTE_NOW + MINUTE) * 1_000_000]


# -- 5. Binance error JSON ---------------------------------------------------------------


def test_invalid_symbol_error_carries_binance_message(
    fake: tuple[FakeBinance, str], clock: FakeClock
) -> None:
    state, _ = fake
    with make_client(fake, clock) as client, pytest.raises(SourceError) as err:
        client.agg_trades("NOPEUSDT", NOW_MS - 5 * MINUTE, NOW_MS)
    message = str(err.value)
    assert AGG in message and "symbol=NOPEUSDT" in message
    assert "Invalid symbol." in message and "-1121" in message and "HTTP 400" in message
    assert clock.sleeps == [] and len(state.requests(AGG)) == 1  # not retried
