"""Recent market data from Binance's spot REST API (aggTrades, 1m klines, bookTicker).

Every response's X-MBX-USED-WEIGHT-1M is watched: past `weight_headroom` of the
per-minute limit the client waits for the next minute before its next request. 429/418
answers are retried after their Retry-After (up to `max_retry_after_s`), 5xx answers and
connection failures with exponential backoff. Bodies are checked field by field, so a
malformed answer raises SourceError naming the endpoint, never a KeyError.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pyarrow as pa

from trading.data.inputs import parse_symbols
from trading.data.lake import Lake, Written
from trading.data.schemas import BUYER, SCHEMAS, SELLER
from trading.errors import InputError, SourceError
from trading.settings import AppConfig, RestSettings

logger = logging.getLogger(__name__)

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
PAGE_LIMIT = 1000
MAX_MINUTES = 1440
_NS_PER_MS = 1_000_000
_BOOK_FIELDS = {"bid": "bidPrice", "ask": "askPrice", "bid_size": "bidQty", "ask_size": "askQty"}


def _wall_ms() -> int:
    return time.time_ns() // _NS_PER_MS


def _snippet(text: str, size: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= size else flat[:size] + "..."


def _num(value: Any, name: str) -> float:
    """A decimal string or number -> finite float; ValueError naming the field otherwise."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{name} {value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} {value!r} is not a finite non-negative number")
    return number


@contextmanager
def _checked(what: str) -> Iterator[None]:
    """Turn a KeyError/ValueError/TypeError while reading a body into a SourceError."""
    try:
        yield
    except KeyError as exc:
        raise SourceError(f"{what}: no {exc.args[0]!r} field") from None
    except (TypeError, ValueError) as exc:
        raise SourceError(f"{what}: {exc}") from None


def _list(body: Any, path: str, symbol: str) -> list[Any]:
    if not isinstance(body, list):
        raise SourceError(f"GET {path} ({symbol}): expected a JSON list, got {type(body).__name__}")
    return body


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{name} {value!r} is not an integer")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not an integer") from None


class BinanceRestClient:
    """Synchronous client of the public market-data endpoints; tables use the lake schemas."""

    def __init__(
        self,
        base_url: str,
        settings: RestSettings,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.settings = settings
        self.now_ms = now_ms
        self._sleep = sleep
        self._own_client = client is None
        self._client = client or httpx.Client(
            timeout=settings.timeout_s, headers={"User-Agent": "hmm-trader"}
        )
        self._resume_at_ms = 0  # set when the used weight passes the headroom

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def __enter__(self) -> BinanceRestClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, str | int]) -> Any:
        what = f"GET {path} ({', '.join(f'{k}={v}' for k, v in params.items())})"
        attempts = self.settings.max_attempts
        last = ""
        for attempt in range(1, attempts + 1):
            wait_ms = self._resume_at_ms - self.now_ms()
            if wait_ms > 0:
                logger.info("request weight near the limit: pausing %.1f s", wait_ms / 1000)
                self._sleep(wait_ms / 1000)
            delay = min(self.settings.backoff_s * 2 ** (attempt - 1), 30.0)
            try:
                response = self._client.get(self.base_url + path, params=params)
            except httpx.UnsupportedProtocol as exc:
                raise SourceError(f"{what}: bad base URL {self.base_url!r}: {exc}") from None
            except httpx.TransportError as exc:
                last = f"connection failed: {type(exc).__name__}: {exc}"
            else:
                self._note_weight(response)
                status = response.status_code
                if status == 200:
                    try:
                        return response.json()
                    except ValueError:
                        raise SourceError(
                            f"{what}: response is not JSON: {_snippet(response.text)!r}"
                        ) from None
                if status in (418, 429):
                    delay = self._retry_after(response, what, delay)
                    last = f"HTTP {status} ({'IP banned' if status == 418 else 'rate limited'})"
                elif status >= 500:
                    last = f"HTTP {status}: {_snippet(response.text)!r}"
                else:
                    raise SourceError(f"{what}: {self._error_text(response)}")
            if attempt == attempts:
                break
            logger.warning(
                "%s: %s; retry %d/%d in %.1f s", what, last, attempt + 1, attempts, delay
            )
            self._sleep(delay)
        raise SourceError(f"{what}: gave up after {attempts} attempt(s), last: {last}")

    def _note_weight(self, response: httpx.Response) -> None:
        used = response.headers.get("X-MBX-USED-WEIGHT-1M", "0")
        if (
            used.isdigit()
            and int(used) > self.settings.weight_headroom * self.settings.weight_limit_1m
        ):
            self._resume_at_ms = (self.now_ms() // MINUTE_MS + 1) * MINUTE_MS

    def _retry_after(self, response: httpx.Response, what: str, default: float) -> float:
        header = response.headers.get("Retry-After", "")
        try:
            wait = float(header)
        except ValueError:
            wait = default
        cap = self.settings.max_retry_after_s
        if wait > cap:
            status = response.status_code
            reason = "banned this IP (HTTP 418)" if status == 418 else "rate-limited us (HTTP 429)"
            until = dt.datetime.fromtimestamp(self.now_ms() / 1000 + wait, tz=dt.UTC)
            raise SourceError(
                f"{what}: Binance {reason} and asks to wait {wait:.0f} s, more than "
                f"rest.max_retry_after_s = {cap:g} s: try again in {wait:.0f} s "
                f"(after {until:%Y-%m-%d %H:%M:%S} UTC)"
            )
        return max(wait, 0.0)

    @staticmethod
    def _error_text(response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return f"HTTP {response.status_code}: {_snippet(response.text)!r}"
        if isinstance(body, dict) and "msg" in body:
            return f"Binance error {body.get('code')}: {body['msg']} (HTTP {response.status_code})"
        return f"HTTP {response.status_code}: {_snippet(response.text)!r}"

    # -- endpoints -------------------------------------------------------------------

    def agg_trades(self, symbol: str, start_ms: int, end_ms: int) -> pa.Table:
        """Aggregate trades with start_ms <= time <= end_ms ("trades" schema)."""
        path, end_ms = "/api/v3/aggTrades", min(end_ms, self.now_ms())
        cols: dict[str, list[Any]] = {name: [] for name in SCHEMAS["trades"].names}
        cursor, window_end, from_id = start_ms, end_ms, None
        while True:
            params: dict[str, str | int] = {"symbol": symbol, "limit": PAGE_LIMIT}
            if from_id is None:  # a startTime window must span less than an hour
                if cursor > end_ms:
                    break
                window_end = min(cursor + HOUR_MS - 1, end_ms)
                params |= {"startTime": cursor, "endTime": window_end}
            else:
                params["fromId"] = from_id
            page = _list(self._get(path, params), path, symbol)
            if not page:
                if from_id is not None:
                    break
                cursor = window_end + 1
                continue
            last_id = last_t = -1
            for i, item in enumerate(page):
                with _checked(f"GET {path} ({symbol}): trade {i}"):
                    if not isinstance(item, dict):
                        raise ValueError(f"not an object: {_snippet(repr(item))}")
                    last_id, last_t = _int(item["a"], "a"), _int(item["T"], "T")
                    row = (last_t * _NS_PER_MS, last_id, _num(item["p"], "p"), _num(item["q"], "q"))
                    if not isinstance(item["m"], bool):
                        raise ValueError(f"m {item['m']!r} is not a boolean")
                if start_ms <= last_t <= end_ms:
                    for name, value in zip(("ts_ns", "trade_id", "price", "qty"), row, strict=True):
                        cols[name].append(value)
                    cols["aggressor_side"].append(SELLER if item["m"] else BUYER)
            if from_id is not None and last_id < from_id:
                raise SourceError(f"GET {path} ({symbol}): fromId={from_id} gave older trades")
            if last_t > end_ms:
                break
            if len(page) < PAGE_LIMIT and (from_id is not None or window_end >= end_ms):
                break  # nothing newer exists yet
            from_id = last_id + 1
        return pa.table(cols, schema=SCHEMAS["trades"])

    def klines_1m(self, symbol: str, start_ms: int, end_ms: int) -> pa.Table:
        """Closed 1-minute bars opening in [start_ms, end_ms] ("bars" schema); the bar
        still forming at the time of the request is left out."""
        path = "/api/v3/klines"
        cols: dict[str, list[Any]] = {name: [] for name in SCHEMAS["bars"].names}
        fields = {1: "open", 2: "high", 3: "low", 4: "close", 5: "volume", 7: "quote_volume"}
        cursor = start_ms
        while cursor <= end_ms:
            params: dict[str, str | int] = {
                "symbol": symbol, "interval": "1m", "startTime": cursor, "endTime": end_ms,
                "limit": PAGE_LIMIT,
            }  # fmt: skip
            page = _list(self._get(path, params), path, symbol)
            now, last_open = self.now_ms(), -1
            for i, row in enumerate(page):
                with _checked(f"GET {path} ({symbol}): kline {i}"):
                    if not isinstance(row, list) or len(row) < 11:
                        raise ValueError(
                            f"expected an array of 12 fields, got {_snippet(repr(row))}"
                        )
                    open_ms, close_ms = _int(row[0], "open_time"), _int(row[6], "close_time")
                    values = {name: _num(row[k], name) for k, name in fields.items()}
                    values |= {"n_trades": _int(row[8], "trades"),
                               "taker_buy_volume": _num(row[9], "taker_buy_base")}  # fmt: skip
                    if open_ms <= last_open:
                        raise ValueError(f"opens at {open_ms}, not after {last_open}")
                last_open = open_ms
                if close_ms < now and start_ms <= open_ms <= end_ms:
                    cols["ts_ns"].append(open_ms * _NS_PER_MS)
                    for name, value in values.items():
                        cols[name].append(value)
            if len(page) < PAGE_LIMIT:
                break
            if last_open < cursor:
                raise SourceError(f"GET {path} ({symbol}): startTime={cursor} gave older klines")
            cursor = last_open + MINUTE_MS
        return pa.table(cols, schema=SCHEMAS["bars"])

    def book_ticker(self, symbol: str) -> pa.Table:
        """One best bid/ask snapshot ("quotes" schema), stamped with the local clock."""
        path = "/api/v3/ticker/bookTicker"
        body = self._get(path, {"symbol": symbol})
        ts_ns = self.now_ms() * _NS_PER_MS
        with _checked(f"GET {path} ({symbol})"):
            if not isinstance(body, dict):
                raise ValueError(f"expected a JSON object, got {type(body).__name__}")
            if body.get("symbol", symbol) != symbol:
                raise ValueError(f"answered symbol {body.get('symbol')!r}, not {symbol}")
            row = {"ts_ns": [ts_ns]} | {k: [_num(body[v], v)] for k, v in _BOOK_FIELDS.items()}
        return pa.table(row, schema=SCHEMAS["quotes"])


def ingest_rest(
    config: AppConfig,
    lake: Lake,
    symbols: list[str],
    minutes: int,
    base_url: str | None = None,
    client: BinanceRestClient | None = None,
) -> list[Written]:
    """Last `minutes` of aggTrades and 1m klines plus one bookTicker per symbol, merged
    into the lake in one batch (re-running does not duplicate rows; a failure writes
    nothing). A given `client` is used as is (its base URL and clock) and left open."""
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= MAX_MINUTES:
        raise InputError(f"--minutes {minutes!r}: expected a whole number from 1 to {MAX_MINUTES}")
    names = parse_symbols(config, symbols)
    rest = client or BinanceRestClient(
        base_url or config.settings.rest.base_url, config.settings.rest
    )
    venue = config.instruments.venue
    try:
        end_ms = rest.now_ms()
        start_ms = end_ms - minutes * MINUTE_MS
        with lake.batch() as batch:
            for symbol in names:
                trades = rest.agg_trades(symbol, start_ms, end_ms)
                bars = rest.klines_1m(symbol, start_ms // MINUTE_MS * MINUTE_MS, end_ms)
                quote = rest.book_ticker(symbol)
                logger.info(
                    "%s: %d trades, %d bars, 1 quote", symbol, trades.num_rows, bars.num_rows
                )
                for kind, table in (("trades", trades), ("bars", bars), ("quotes", quote)):
                    batch.put(venue, symbol, kind, table, source="rest", merge=True)
        return batch.written
    finally:
        if client is None:
            rest.close()
