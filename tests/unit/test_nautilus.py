from __future__ import annotations

import datetime as dt
import itertools

from nautilus_trader.model.enums import AggressorSide

from tests.conftest import BINANCE_SAMPLES
from trading.data.files import ingest_files
from trading.data.lake import Lake
from trading.data.nautilus import bar_open_ns, make_instrument, quote_ticks, trade_ticks
from trading.settings import AppConfig

DAY = dt.date(2021, 1, 8)


def test_instrument_carries_exchange_metadata(config: AppConfig) -> None:
    instrument = make_instrument("ETHUSDT", config.symbol("ETHUSDT"), "BINANCE")
    assert str(instrument.id) == "ETHUSDT.BINANCE"
    assert (instrument.price_precision, instrument.size_precision) == (2, 4)
    assert str(instrument.price_increment) == "0.01" and str(instrument.size_increment) == "0.0001"
    assert float(instrument.taker_fee) == 0.001 and float(instrument.min_notional) == 5.0


def test_lake_rows_become_ticks(config: AppConfig, lake: Lake) -> None:
    ingest_files(
        config,
        lake,
        [BINANCE_SAMPLES / "btcusdt-quotes.parquet", BINANCE_SAMPLES / "btcusdt-trades.parquet"],
        "BTCUSDT",
    )
    instrument = make_instrument("BTCUSDT", config.symbol("BTCUSDT"), "BINANCE")
    quotes = quote_ticks(lake, instrument, DAY, DAY)
    trades = trade_ticks(lake, instrument, DAY, DAY)
    assert (len(quotes), len(trades)) == (451, 2001)
    first = quotes[0]
    assert (str(first.bid_price), str(first.ask_price)) == ("39432.99", "39433.62")
    assert first.ts_event == 1_610_064_001_076_000_000 and first.instrument_id == instrument.id
    assert str(trades[0].price) == "39432.48" and str(trades[0].trade_id) == "553287559"
    assert trades[0].aggressor_side == AggressorSide.SELLER
    buyers = sum(t.aggressor_side == AggressorSide.BUYER for t in trades)
    assert buyers == 1087
    assert all(a.ts_event <= b.ts_event for a, b in itertools.pairwise(quotes))
    assert (
        quote_ticks(lake, instrument, DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=2)) == []
    )
    # 2021 trades below today's 0.00001 lot become one lot, never zero
    assert min(float(t.size) for t in trades) == 0.00001
    assert str(trades[0].size) == "0.00026"


def test_a_bars_open_time_from_its_event_time() -> None:
    """A lake bar's Bar is stamped at its close; Binance's kline stream stamps the close
    time, 1 ms before it: both give the bar's open."""
    open_ns = 1_706_227_200 * 10**9  # 2024-01-26 00:00 UTC
    assert bar_open_ns(open_ns + 60 * 10**9) == open_ns
    assert bar_open_ns(open_ns + 60 * 10**9 - 1_000_000) == open_ns
