"""The real Binance samples in tests/fixtures/binance parse into the lake correctly."""

from __future__ import annotations

import datetime as dt
import io
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import BINANCE_SAMPLES, FIXTURES, lake_files
from trading.data.files import ingest_files, read_local_file
from trading.data.lake import Lake
from trading.errors import ConfigError, DataFormatError, InputError
from trading.settings import AppConfig


def test_real_quotes_and_trades_land_in_the_lake(config: AppConfig, lake: Lake) -> None:
    written = ingest_files(
        config,
        lake,
        [BINANCE_SAMPLES / "btcusdt-quotes.parquet", BINANCE_SAMPLES / "btcusdt-trades.parquet"],
        "BTCUSDT",
    )
    assert {(w.kind, w.day, w.rows) for w in written} == {
        ("quotes", dt.date(2021, 1, 8), 451),
        ("trades", dt.date(2021, 1, 8), 2001),
    }
    quotes = lake.read("BINANCE", "BTCUSDT", "quotes")
    first = quotes.slice(0, 1).to_pylist()[0]
    assert first == {
        "ts_ns": 1_610_064_001_076_000_000,
        "bid": 39432.99,
        "ask": 39433.62,
        "bid_size": 0.0031,
        "ask_size": 0.066851,
    }
    assert (
        min(
            a - b for a, b in zip(quotes["ask"].to_pylist(), quotes["bid"].to_pylist(), strict=True)
        )
        >= 0
    )
    trades = lake.read("BINANCE", "BTCUSDT", "trades")
    assert trades.slice(0, 1).to_pylist()[0] == {
        "ts_ns": 1_610_064_000_278_000_000,
        "trade_id": 553287559,
        "price": 39432.48,
        "qty": 0.000263,
        "aggressor_side": -1,  # buyer_maker "True"
    }
    sides = trades.column("aggressor_side").to_pylist()
    assert (sides.count(-1), sides.count(1)) == (914, 1087)  # buyer_maker True / False counts


def test_tardis_book_snapshot_becomes_top_of_book_quotes() -> None:
    kind, table = read_local_file(
        BINANCE_SAMPLES / "binance-futures_book_snapshot_5_BTCUSDT.csv", "BTCUSDT"
    )
    assert (kind, table.num_rows) == ("quotes", 10)
    assert table.slice(0, 1).to_pylist()[0] == {
        "ts_ns": 1_598_918_403_696_000_000,
        "bid": 11657.07,
        "ask": 11657.08,
        "bid_size": 10.896,
        "ask_size": 1.714,
    }


def test_depth_files_are_refused_with_a_reason() -> None:
    with pytest.raises(DataFormatError, match="lacks a bid or an ask side"):
        read_local_file(BINANCE_SAMPLES / "btcusdt-depth-snap.csv", "BTCUSDT")
    with pytest.raises(DataFormatError, match="depth updates"):
        read_local_file(BINANCE_SAMPLES / "btcusdt-depth-update.csv", "BTCUSDT")


def test_wrong_symbol_is_refused(config: AppConfig, lake: Lake) -> None:
    with pytest.raises(DataFormatError, match="holds symbol BTCUSDT, not ETHUSDT"):
        ingest_files(config, lake, [BINANCE_SAMPLES / "btcusdt-quotes.parquet"], "ETHUSDT")
    with pytest.raises(ConfigError, match="unknown symbol"):
        ingest_files(config, lake, [BINANCE_SAMPLES / "btcusdt-trades.parquet"], "XRPUSDT")
    assert lake_files(lake.root) == []


def test_one_bad_file_means_nothing_lands(config: AppConfig, lake: Lake, tmp_path: Path) -> None:
    bad = tmp_path / "BTCUSDT-aggTrades-2024-01-01.csv"
    bad.write_text(
        "1,42000.1,0.5,1,1,1704067200123,True,True\n2,42000.1,0.5,1,1704067200123,True,True\n"
    )
    with pytest.raises(DataFormatError, match="line 2: expected 8 columns"):
        ingest_files(config, lake, [BINANCE_SAMPLES / "btcusdt-quotes.parquet", bad], "BTCUSDT")
    assert lake_files(lake.root) == []


def test_reingesting_samples_does_not_duplicate(
    config: AppConfig, lake: Lake, tmp_path: Path
) -> None:
    copy = tmp_path / "trades.parquet"
    shutil.copy(BINANCE_SAMPLES / "btcusdt-trades.parquet", copy)
    for _ in range(2):
        ingest_files(config, lake, [copy], "BTCUSDT")
    assert lake.read("BINANCE", "BTCUSDT", "trades").num_rows == 2001


def _faulty_trades(path: Path) -> Path:
    """The real trades with 3 trade ids sent twice (the copy right after the original,
    another quantity) and 2 pairs of neighbouring rows swapped."""
    _, table = read_local_file(BINANCE_SAMPLES / "btcusdt-trades.parquet", "BTCUSDT")
    frame = table.to_pandas()
    resent = frame.loc[[10, 20, 30]].assign(qty=lambda f: f["qty"] * 2)
    order = list(range(len(frame)))
    for first in (100, 200):
        order[first], order[first + 1] = order[first + 1], order[first]
    for row in (30, 20, 10):  # each copy right after its original
        order.insert(order.index(row) + 1, len(frame) + (row // 10 - 1))
    frame = pd.concat([frame, resent], ignore_index=True).iloc[order]
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def test_ingest_reports_repeated_ids_dropped_and_rows_reordered(
    config: AppConfig, lake: Lake, tmp_path: Path
) -> None:
    path = _faulty_trades(tmp_path / "trades.parquet")
    (written,) = ingest_files(config, lake, [path], "BTCUSDT")
    assert (written.rows, written.duplicates_dropped, written.reordered) == (2001, 3, 2)
    assert written.fixes == (
        "3 repeated trade_id row(s) dropped (the last kept); "
        "2 row(s) out of time order sorted into place"
    )
    trades = lake.read("BINANCE", "BTCUSDT", "trades").to_pandas()
    assert trades["ts_ns"].is_monotonic_increasing and trades["trade_id"].is_unique
    original = pq.read_table(BINANCE_SAMPLES / "btcusdt-trades.parquet").to_pandas()
    assert trades.loc[10, "qty"] == 2 * original.loc[10, "quantity"]  # the last one sent
    # clean files report nothing
    clean = ingest_files(config, lake, [BINANCE_SAMPLES / "btcusdt-trades.parquet"], "BTCUSDT")
    assert [(w.duplicates_dropped, w.reordered, w.fixes) for w in clean] == [(0, 0, None)]


def test_ingest_files_prints_the_counts(
    config: AppConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hmmtrader.cli import run

    path = _faulty_trades(tmp_path / "trades.parquet")
    assert run(["ingest", "files", str(path), "--symbol", "BTCUSDT"]) == 0
    out = capsys.readouterr().out
    assert "dropped" in out and "reordered" in out  # the table's extra columns
    assert (
        "warning: BTCUSDT trades 2021-01-08: 3 repeated trade_id row(s) dropped (the last "
        "kept); 2 row(s) out of time order sorted into place"
    ) in out
    row = next(line for line in out.splitlines() if "2021-01-08" in line and "2,001" in line)
    assert [cell.strip() for cell in row.split("│") if cell.strip()][-3:] == ["2,001", "3", "2"]


DAY = dt.date(2024, 1, 1)
T0_MS = 1_704_067_200_000


def _klines(minutes: range, header: bool = False, unit_ms: int = 1) -> str:
    """Binance 1-minute klines (12 columns), one per minute of `minutes` from 2024-01-01."""
    lines = [
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
        "taker_buy_volume,taker_buy_quote_volume,ignore"
    ] * header
    for m in minutes:
        start = (T0_MS + 60_000 * m) // unit_ms
        price = 42000 + m
        lines.append(
            f"{start},{price},{price + 5},{price - 5},{price + 1},1.5,"
            f"{start + 59_999 // unit_ms},63000.0,10,0.7,29400.0,0"
        )
    return "\n".join(lines) + "\n"


def test_two_half_day_files_keep_every_row(
    config: AppConfig, lake: Lake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 20: two files of the same day kept only the last one (1,440 reported, 720
    in the lake); now they are merged, and the counts reported are the lake's."""
    from hmmtrader.cli import run

    morning = tmp_path / "BTCUSDT-1m-2024-01-01-am.csv"
    afternoon = tmp_path / "BTCUSDT-1m-2024-01-01-pm.csv"
    morning.write_text(_klines(range(720)))
    afternoon.write_text(_klines(range(720, 1440), header=True))
    written = ingest_files(config, lake, [afternoon, morning], "BTCUSDT")
    assert [(w.kind, w.day, w.rows, w.duplicates_dropped) for w in written] == [
        ("bars", DAY, 1440, 0)
    ]
    bars = lake.read("BINANCE", "BTCUSDT", "bars")
    assert bars.num_rows == sum(w.rows for w in written) == 1440
    assert bars.column("ts_ns").to_pylist() == [(T0_MS + 60_000 * m) * 10**6 for m in range(1440)]
    # overlapping files: the repeated minutes are counted as dropped, every minute kept
    overlap = tmp_path / "BTCUSDT-1m-2024-01-01-mid.csv"
    overlap.write_text(_klines(range(700, 740)))
    assert (
        run(["ingest", "files", str(morning), str(afternoon), str(overlap), "--symbol", "BTCUSDT"])
        == 0
    )
    out = capsys.readouterr().out
    assert "1 file(s), 1,440 rows" in out
    assert "warning: BTCUSDT bars 2024-01-01: 40 repeated ts_ns row(s) dropped" in out
    assert lake.read("BINANCE", "BTCUSDT", "bars").num_rows == 1440


def test_klines_in_seconds_are_refused_and_nothing_lands(
    config: AppConfig, lake: Lake, tmp_path: Path
) -> None:
    """Issue 20: klines stamped in seconds landed as 1970 dates with exit code 0."""
    good = tmp_path / "BTCUSDT-1m-2024-01-01.csv"
    good.write_text(_klines(range(10)))
    seconds = tmp_path / "BTCUSDT-1m-2024-01-02.csv"
    seconds.write_text(_klines(range(1440, 1450), header=True, unit_ms=1000))
    with pytest.raises(
        DataFormatError,
        match=r"BTCUSDT-1m-2024-01-02.csv: line 2: timestamp 1704153600 is in seconds "
        r"\(2024-01-02 00:00:00 UTC\); a Binance file holds milliseconds or microseconds",
    ):
        ingest_files(config, lake, [good, seconds], "BTCUSDT")
    assert lake_files(lake.root) == []


@pytest.mark.parametrize("suffix", [".csv", ".zip"])
def test_a_file_named_for_another_symbol_is_refused(
    suffix: str, config: AppConfig, lake: Lake, tmp_path: Path
) -> None:
    """Issue 20: klines of ADABTC landed under --symbol BTCUSDT without a word."""
    path = tmp_path / f"ADABTC-1m-2024-01-01{suffix}"
    if suffix == ".zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("ADABTC-1m-2024-01-01.csv", _klines(range(5)))
        path.write_bytes(buffer.getvalue())
    else:
        path.write_text(_klines(range(5)))
    with pytest.raises(
        DataFormatError,
        match=r"ADABTC-1m-2024-01-01\.(csv|zip): the file name names symbol "
        r"ADABTC, not BTCUSDT \(--symbol\)",
    ):
        ingest_files(config, lake, [path], "BTCUSDT")
    assert lake_files(lake.root) == []
    # a name without a recognisable symbol is accepted; so is one naming --symbol
    for name in ("mydata.csv", "BTCUSDT_1m_2024.csv", "klines-2024-01-01.csv"):
        (tmp_path / name).write_text(_klines(range(5)))
        assert ingest_files(config, lake, [tmp_path / name], "BTCUSDT")[0].rows == 5
    renamed_zip = tmp_path / "BTCUSDT-1m-2024-01-01.zip"  # the CSV inside still says ADABTC
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ADABTC-1m-2024-01-01.csv", _klines(range(5)))
    renamed_zip.write_bytes(buffer.getvalue())
    with pytest.raises(DataFormatError, match="names symbol ADABTC, not BTCUSDT"):
        ingest_files(config, lake, [renamed_zip], "BTCUSDT")


def test_bar_options_do_not_apply_to_binance_klines(
    config: AppConfig, lake: Lake, tmp_path: Path
) -> None:
    path = tmp_path / "BTCUSDT-1m-2024-01-01.csv"
    path.write_text(_klines(range(5)))
    with pytest.raises(InputError, match="stamped by its open_time column"):
        ingest_files(config, lake, [path], "BTCUSDT", bar_time="close")


def test_the_real_month_of_1m_bars_lands(config: AppConfig, lake: Lake) -> None:
    """Issue 20: `datetime,open,high,low,close,volume` (the bar's open, UTC) was refused."""
    path = FIXTURES / "real" / "BTCUSDT-1m-2024-01.csv"
    written = ingest_files(config, lake, [path], "BTCUSDT")
    assert len(written) == 32 and {w.kind for w in written} == {"bars"}
    assert (written[0].day, written[-1].day) == (DAY, dt.date(2024, 2, 1))
    assert [w.rows for w in written] == [1440] * 31 + [1]
    assert all(w.fixes is None for w in written)
    bars = lake.read("BINANCE", "BTCUSDT", "bars")
    assert bars.num_rows == 44_641
    assert bars.slice(0, 1).to_pylist()[0] == {
        "ts_ns": T0_MS * 10**6,
        "open": 42283.58,
        "high": 42298.62,
        "low": 42261.02,
        "close": 42298.61,
        "volume": 35.92724,
        "quote_volume": 0.0,
        "n_trades": 0,
        "taker_buy_volume": 0.0,
    }
