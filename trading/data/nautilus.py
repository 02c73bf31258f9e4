"""Lake rows -> NautilusTrader instruments and QuoteTick / TradeTick / Bar objects.

Bars (BARS_V1 models): each lake bar becomes a Nautilus `Bar` (1-MINUTE-LAST-EXTERNAL,
stamped at its close) for the strategy, and its open price becomes two `QuoteTick`s for
the simulated venue only (the strategy does not subscribe them): one stamped 1 ns before
the bar opens, so the venue's book of every symbol holds bar t+1's open before any order
decided on bar t's close (stamped at that same instant) reaches it, and the same price
again when the order latency has passed, so orders settle then. The venue runs with bar
execution off, so a market order decided on bar t's close fills at bar t+1's open (plus
the fill model's slippage and the fees), whatever the latency and however many symbols,
never at a price bar t made.

Instruments are built from configs/symbols.yaml (real exchange metadata), never from
Nautilus' TestInstrumentProvider, whose fees and precisions are not Binance's.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import numpy as np
import pyarrow as pa
from nautilus_trader.model.currencies import Currency
from nautilus_trader.model.data import Bar, BarType, QuoteTick, TradeTick
from nautilus_trader.model.enums import AggressorSide
from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue
from nautilus_trader.model.instruments import CurrencyPair
from nautilus_trader.model.objects import Money, Price, Quantity

from trading.data.lake import Lake
from trading.data.schemas import BUYER, SELLER
from trading.data.window import Window, window_days
from trading.errors import InputError
from trading.settings import AppConfig, SymbolSpec


def instrument_id(symbol: str, venue: str) -> InstrumentId:
    return InstrumentId(Symbol(symbol), Venue(venue))


def make_instrument(symbol: str, spec: SymbolSpec, venue: str) -> CurrencyPair:
    """A spot CurrencyPair with the exchange's tick, lot, notional and fee values."""
    quote = Currency.from_str(spec.quote)
    return CurrencyPair(
        instrument_id=instrument_id(symbol, venue),
        raw_symbol=Symbol(symbol),
        base_currency=Currency.from_str(spec.base),
        quote_currency=quote,
        price_precision=spec.price_precision,
        size_precision=spec.size_precision,
        price_increment=Price(spec.tick_size, spec.price_precision),
        size_increment=Quantity(spec.lot_size, spec.size_precision),
        min_quantity=Quantity(spec.min_qty, spec.size_precision),
        max_quantity=Quantity(spec.max_qty, spec.size_precision),
        min_notional=Money(spec.min_notional_usd, quote),
        maker_fee=Decimal(str(spec.maker_fee)),
        taker_fee=Decimal(str(spec.taker_fee)),
        ts_event=0,
        ts_init=0,
    )


log = logging.getLogger(__name__)


def usd_instrument(config: AppConfig, symbol: str) -> CurrencyPair:
    """The symbol's instrument, refused unless it is quoted in a USD coin (the simulated
    account is in USDT)."""
    spec = config.symbol(symbol)
    if spec.quote not in ("USDT", "USDC", "USD", "FDUSD"):
        raise InputError(
            f"{symbol}: the backtest account is in USDT; {spec.quote} pairs are not supported"
        )
    return make_instrument(symbol, spec, config.instruments.venue)


def _sizes(values: np.ndarray, instrument: CurrencyPair, what: str) -> np.ndarray:
    """Sizes at the instrument's precision. Older data can hold sizes below today's lot
    (BTCUSDT's lot was 0.000001 in 2021); those become one lot instead of zero, which
    Nautilus rejects, and the count is logged."""
    lot = float(instrument.size_increment)
    sizes = np.round(np.array(values, dtype=np.float64), instrument.size_precision)
    below = sizes < lot
    if below.any():
        log.warning(
            "%s: %d %s below the lot size %s were raised to one lot",
            instrument.id,
            int(below.sum()),
            what,
            instrument.size_increment,
        )
        sizes[below] = lot
    return sizes


def _timestamps(ts_ns: np.ndarray) -> np.ndarray:
    return ts_ns.astype(np.uint64)  # a writable copy: Cython memoryviews reject read-only buffers


def _lake_rows(
    lake: Lake,
    instrument: CurrencyPair,
    kind: str,
    start: dt.date,
    end: dt.date,
    between_ns: tuple[int, int] | None,
) -> tuple[pa.Table, np.ndarray]:
    """The instrument's rows of one kind (within [lo, hi) ns when given) and their
    timestamps as Nautilus wants them."""
    table = lake.read(instrument.id.venue.value, instrument.id.symbol.value, kind, start, end)
    if between_ns is not None and table.num_rows:
        ts = table.column("ts_ns").to_numpy()
        lo, hi = np.searchsorted(ts, between_ns[0]), np.searchsorted(ts, between_ns[1])
        table = table.slice(int(lo), int(hi - lo))
    return table, _timestamps(table.column("ts_ns").to_numpy())


def quote_ticks(
    lake: Lake,
    instrument: CurrencyPair,
    start: dt.date,
    end: dt.date,
    between_ns: tuple[int, int] | None = None,
) -> list[QuoteTick]:
    """Quotes of [start, end] from the lake as QuoteTicks, in time order."""
    table, ts = _lake_rows(lake, instrument, "quotes", start, end, between_ns)
    if table.num_rows == 0:
        return []
    return QuoteTick.from_raw_arrays_to_list(
        instrument.id,
        instrument.price_precision,
        instrument.size_precision,
        np.array(table.column("bid").to_numpy(), dtype=np.float64),
        np.array(table.column("ask").to_numpy(), dtype=np.float64),
        _sizes(table.column("bid_size").to_numpy(), instrument, "bid sizes"),
        _sizes(table.column("ask_size").to_numpy(), instrument, "ask sizes"),
        ts,
        ts,
    )


def trade_ticks(
    lake: Lake,
    instrument: CurrencyPair,
    start: dt.date,
    end: dt.date,
    between_ns: tuple[int, int] | None = None,
) -> list[TradeTick]:
    """Trades of [start, end] from the lake as TradeTicks, in time order."""
    table, ts = _lake_rows(lake, instrument, "trades", start, end, between_ns)
    if table.num_rows == 0:
        return []
    side = table.column("aggressor_side").to_numpy()
    nautilus_side = np.full(len(side), AggressorSide.NO_AGGRESSOR.value, dtype=np.uint8)
    nautilus_side[side == BUYER] = AggressorSide.BUYER.value
    nautilus_side[side == SELLER] = AggressorSide.SELLER.value
    return TradeTick.from_raw_arrays_to_list(
        instrument.id,
        instrument.price_precision,
        instrument.size_precision,
        np.array(table.column("price").to_numpy(), dtype=np.float64),
        _sizes(table.column("qty").to_numpy(), instrument, "trade sizes"),
        nautilus_side,
        [str(i) for i in table.column("trade_id").to_pylist()],
        ts,
        ts,
    )


def load_ticks(
    config: AppConfig, lake: Lake, symbols: list[str], start_ns: int, end_ns: int
) -> tuple[list[CurrencyPair], list[QuoteTick | TradeTick], int]:
    """Instruments and the quote + trade ticks of [start_ns, end_ns) (the backtest's and the
    replay node's input), with a clear error for a window without quotes."""
    first, last = window_days(start_ns, end_ns)
    instruments: list[CurrencyPair] = []
    data: list[QuoteTick | TradeTick] = []
    for symbol in symbols:
        instrument = usd_instrument(config, symbol)
        quotes = quote_ticks(lake, instrument, first, last, (start_ns, end_ns))
        trades = trade_ticks(lake, instrument, first, last, (start_ns, end_ns))
        if not quotes:  # the day files exist (require_ticks) but hold nothing in this window
            raise InputError(
                f"no {symbol} quotes in {Window(start_ns, end_ns)} although the lake has the "
                "day: choose a window inside the recorded hours"
            )
        instruments.append(instrument)
        data.extend(quotes)
        data.extend(trades)
    return instruments, data, len(data)


BAR_SPEC = "1-MINUTE-LAST-EXTERNAL"
BAR_NS = 60 * 1_000_000_000


def bar_open_ns(ts_event_ns: int) -> int:
    """A 1-minute bar's open time from its event time: the close (a lake bar's Bar) or, from
    Binance's kline stream, the close time 1 ms before it (xx:xx:59.999)."""
    return (ts_event_ns + BAR_NS // 2) // BAR_NS * BAR_NS - BAR_NS


def bar_type(instrument: InstrumentId) -> BarType:
    """The 1-minute external bar type of an instrument (what BARS_V1 strategies subscribe)."""
    return BarType.from_str(f"{instrument}-{BAR_SPEC}")


def bar_events(
    lake: Lake,
    instrument: CurrencyPair,
    start: dt.date,
    end: dt.date,
    between_ns: tuple[int, int],
    fill_delay_ns: int,
) -> tuple[list[Bar], list[QuoteTick]]:
    """The bars that open in [lo, hi) and close by hi, as Bars stamped at their close, and
    per bar two QuoteTicks at its open price: 1 ns before the open and `fill_delay_ns`
    (the order latency) after it (none when 0: orders settle at the bar event itself);
    bid = ask = open, the size is the instrument's maximum (bars say nothing of depth)."""
    lo, hi = between_ns
    table, ts = _lake_rows(lake, instrument, "bars", start, end, (lo, hi - BAR_NS + 1))
    if table.num_rows == 0:
        return [], []
    column = {c: np.array(table.column(c).to_numpy(), dtype=np.float64) for c in (
        "open", "high", "low", "close", "volume")}  # fmt: skip
    closes_at = ts + np.uint64(BAR_NS)
    bars = Bar.from_raw_arrays_to_list(
        bar_type(instrument.id),
        instrument.price_precision,
        instrument.size_precision,
        column["open"],
        column["high"],
        column["low"],
        column["close"],
        np.round(column["volume"], instrument.size_precision),
        closes_at,
        closes_at,
    )
    depth = np.full(len(ts), float(instrument.max_quantity or 1e6))
    stamps = [ts - np.uint64(1)] + ([ts + np.uint64(fill_delay_ns)] if fill_delay_ns > 0 else [])
    quotes = [
        quote
        for at in stamps
        for quote in QuoteTick.from_raw_arrays_to_list(
            instrument.id,
            instrument.price_precision,
            instrument.size_precision,
            column["open"],
            column["open"],
            depth,
            depth,
            at,
            at,
        )
    ]
    return bars, quotes


def load_bars(
    config: AppConfig,
    lake: Lake,
    symbols: list[str],
    start_ns: int,
    end_ns: int,
    fill_delay_ns: int,
) -> tuple[list[CurrencyPair], list[Bar | QuoteTick], int]:
    """Instruments and the bar events of [start_ns, end_ns) (see the module's docstring),
    with a clear error for a window without bars. The count is the number of bars."""
    first, last = window_days(start_ns, end_ns)
    instruments: list[CurrencyPair] = []
    data: list[Bar | QuoteTick] = []
    n_bars = 0
    for symbol in symbols:
        instrument = usd_instrument(config, symbol)
        bars, quotes = bar_events(lake, instrument, first, last, (start_ns, end_ns), fill_delay_ns)
        if not bars:
            raise InputError(
                f"no {symbol} 1-minute bars in {Window(start_ns, end_ns)} although the lake "
                "has the day: choose a window inside the recorded hours"
            )
        instruments.append(instrument)
        data.extend(bars)
        data.extend(quotes)
        n_bars += len(bars)
    return instruments, data, n_bars
