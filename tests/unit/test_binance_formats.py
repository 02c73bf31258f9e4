from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from trading.data.binance_formats import read_binance_file, read_csv_bytes, read_zip_bytes
from trading.errors import DataFormatError

SPOT_2024 = (
    b"101,42000.10,0.50000,200,201,1704067200123,True,True\n"
    b"102,42000.20,0.10000,202,202,1704067200456,False,True\n"
)
SPOT_2025_US = b"7,93000.5,0.001,9,9,1735689600123456,False,True\n"
UM = (
    b"agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n"
    b"5,42001.0,2.000,1,3,1704067200999,true\n"
)
BOOK_TICKER = (
    b"update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time\n"
    b"1,42000.1,2.5,42000.2,3.5,1704067200000,1704067200001\n"
)
KLINE = b"1704067200000,42000.1,42010,41990,42005,12.5,1704067259999,525000.1,321,6.2,260000.0,0\n"


def test_spot_aggtrades_milliseconds() -> None:
    kind, table = read_csv_bytes(SPOT_2024, "a.csv")
    assert kind == "trades"
    assert table.to_pydict() == {
        "ts_ns": [1_704_067_200_123_000_000, 1_704_067_200_456_000_000],
        "trade_id": [101, 102],
        "price": [42000.10, 42000.20],
        "qty": [0.5, 0.1],
        "aggressor_side": [-1, 1],  # buyer is maker -> the seller aggressed
    }


def test_spot_aggtrades_microseconds_from_2025() -> None:
    _, table = read_csv_bytes(SPOT_2025_US, "a.csv")
    assert table.column("ts_ns").to_pylist() == [1_735_689_600_123_456_000]


def test_usdm_aggtrades_with_header() -> None:
    _, table = read_csv_bytes(UM, "um.csv")
    assert table.to_pylist() == [
        {
            "ts_ns": 1_704_067_200_999_000_000,
            "trade_id": 5,
            "price": 42001.0,
            "qty": 2.0,
            "aggressor_side": -1,
        }
    ]


def test_book_ticker_becomes_quotes() -> None:
    kind, table = read_csv_bytes(BOOK_TICKER, "bt.csv")
    assert kind == "quotes"
    assert table.to_pylist() == [
        {
            "ts_ns": 1_704_067_200_000_000_000,
            "bid": 42000.1,
            "ask": 42000.2,
            "bid_size": 2.5,
            "ask_size": 3.5,
        }
    ]


def test_klines_become_bars() -> None:
    kind, table = read_csv_bytes(KLINE, "k.csv")
    assert kind == "bars"
    row = table.to_pylist()[0]
    assert (row["open"], row["high"], row["low"], row["close"], row["n_trades"]) == (
        42000.1,
        42010,
        41990,
        42005,
        321,
    )


def test_zip_archive_is_read(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("BTCUSDT-aggTrades-2024-01-01.csv", SPOT_2024)
    path = tmp_path / "BTCUSDT-aggTrades-2024-01-01.zip"
    path.write_bytes(buffer.getvalue())
    assert read_binance_file(path, expect="aggTrades")[1].num_rows == 2
    with pytest.raises(DataFormatError, match="expected a klines file"):
        read_zip_bytes(buffer.getvalue(), path.name, expect="klines")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (SPOT_2024 + b"103,abc,0.1,1,1,1704067200999,True,True\n", r"line 3: column price: 'abc'"),
        (
            SPOT_2024 + b"103,1.0,0.1,1,1704067200999,True,True\n",
            r"line 3: expected 8 columns .* got 7",
        ),
        (
            SPOT_2024 + b"103,1.0,0.1,1,1,1704067200999,True,True,1\n",
            r"line 3: expected 8 columns .* got 9",
        ),
        (SPOT_2024 + b"103,1.0,0.1,1,1,,True,True\n", r"line 3: column transact_time"),
        (
            SPOT_2024 + b"103,1.0,0.1,1,1,1704067200999,maybe,True\n",
            r"line 3: column is_buyer_maker",
        ),
        (UM + b"6,1.0,1.0,1,1\n", r"line 3: expected 7 columns"),
        (b"", r"empty file"),
        (b"\n  \n", r"empty file"),
        (UM.split(b"\n")[0] + b"\n", r"no data rows"),
        (b"a,b,c\n", r"header 'a,b,c' is not a Binance"),
        (b"1,2,3\n", r"line 1: 3 columns"),
        (SPOT_2024 + SPOT_2025_US, r"mix milliseconds and microseconds"),
    ],
)
def test_bad_files_name_the_problem(payload: bytes, message: str, tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=message):
        read_csv_bytes(payload, "bad.csv")
    path = tmp_path / "bad.csv"
    path.write_bytes(payload)
    with pytest.raises(DataFormatError, match=message):
        read_binance_file(path)


def test_not_a_zip() -> None:
    with pytest.raises(DataFormatError, match="not a valid zip"):
        read_zip_bytes(b"PK-not-really", "x.zip")


def test_funding_rate_csv_becomes_lake_funding() -> None:
    from trading.data.binance_formats import read_csv_bytes

    data = (
        b"calc_time,funding_interval_hours,last_funding_rate\n"
        b"1704067200000,8,0.00037409\n"
        b"1704096000000,8,-0.00010000\n"
    )
    kind, table = read_csv_bytes(data, "BTCUSDT-fundingRate-2024-01.csv", expect="fundingRate")
    assert kind == "funding"
    assert table.column("ts_ns").to_pylist() == [1704067200 * 10**9, 1704096000 * 10**9]
    assert table.column("rate").to_pylist() == [0.00037409, -0.0001]


KLINE_UM_HEADER = (
    b"open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    b"taker_buy_volume,taker_buy_quote_volume,ignore\n"
)


def test_usdm_klines_with_header_and_spot_klines_in_microseconds() -> None:
    _, with_header = read_csv_bytes(KLINE_UM_HEADER + KLINE, "BTCUSDT-1m-2024-01-01.csv")
    us = KLINE.replace(b"1704067200000,", b"1704067200000000,", 1).replace(
        b"1704067259999,", b"1704067259999999,", 1
    )
    _, in_us = read_csv_bytes(us, "BTCUSDT-1m-2025-01-01.csv")
    assert with_header.column("ts_ns").to_pylist() == [1_704_067_200 * 10**9]
    assert in_us.equals(with_header)


def test_klines_of_another_interval_are_refused_with_the_line() -> None:
    """5-minute klines would land as 1-minute bars: refused at the first such line."""
    five = KLINE.replace(b"1704067200000,", b"1704067260000,", 1).replace(
        b"1704067259999,", b"1704067559999,", 1
    )
    with pytest.raises(DataFormatError, match=r"k\.csv: line 2: a 300 s kline .*1-minute bars"):
        read_csv_bytes(KLINE + five, "k.csv")


@pytest.mark.parametrize("header", [b"", KLINE_UM_HEADER])
def test_klines_in_seconds_are_refused_with_the_line(header: bytes, tmp_path: Path) -> None:
    """Issue 20: Binance never writes seconds; they landed as 1970 dates with exit 0."""
    payload = header + (
        KLINE.replace(b"1704067200000,", b"1704067200,", 1)
        + KLINE.replace(b"1704067200000,", b"1704067260,", 1)
    )
    message = (
        rf"k.csv: line {2 if header else 1}: timestamp 1704067200 is in seconds "
        r"\(2024-01-01 00:00:00 UTC\); a Binance file holds milliseconds or microseconds"
    )
    with pytest.raises(DataFormatError, match=message):
        read_csv_bytes(payload, "k.csv")
    path = tmp_path / "k.csv"
    path.write_bytes(payload)
    with pytest.raises(DataFormatError, match=message):
        read_binance_file(path)


@pytest.mark.parametrize(
    ("time", "message"),
    [
        (b"1104537600000", r"line 2: time 2005-01-01 00:00:00 UTC is before 2009"),
        (b"4102444800000", r"line 2: time 2100-01-01 00:00:00 UTC is in the future"),
        (b"1704067260000000", r"line 2: timestamps mix milliseconds and microseconds"),
    ],
)
def test_implausible_binance_times_are_refused_with_the_line(time: bytes, message: str) -> None:
    payload = KLINE + KLINE.replace(b"1704067200000,", time + b",", 1)
    with pytest.raises(DataFormatError, match=message):
        read_csv_bytes(payload, "k.csv")


def test_binance_times_in_nanoseconds_are_refused() -> None:
    payload = KLINE.replace(b"1704067200000,", b"1704067200000000000,", 1)
    with pytest.raises(DataFormatError, match=r"line 1: timestamp 1704067200000000000 is in nano"):
        read_csv_bytes(payload, "k.csv")
