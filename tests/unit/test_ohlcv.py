"""Generic OHLCV files (issue 20): every time layout lands the same bars, or is refused
with its line."""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import lake_files
from trading.data.files import ingest_files, read_local_file
from trading.data.lake import Lake
from trading.errors import DataFormatError, InputError
from trading.settings import AppConfig

T0_S = 1_704_067_200  # 2024-01-01 00:00:00 UTC
PRICES = ["42000.0,42010.5,41990.0,42005.0,1.5", "42005.0,42020.0,42000.0,42015.0,2.25"]
PRICES += ["42015.0,42016.0,41980.0,41985.5,0.75"]
EXPECTED = {
    "ts_ns": [(T0_S + 60 * i) * 10**9 for i in range(3)],
    "open": [42000.0, 42005.0, 42015.0],
    "high": [42010.5, 42020.0, 42016.0],
    "low": [41990.0, 42000.0, 41980.0],
    "close": [42005.0, 42015.0, 41985.5],
    "volume": [1.5, 2.25, 0.75],
    # not in the file: filled with 0 (the lake forbids nulls; BARS_V1 does not read them)
    "quote_volume": [0.0] * 3,
    "n_trades": [0] * 3,
    "taker_buy_volume": [0.0] * 3,
}


def _iso(i: int) -> str:
    return f"2024-01-01 00:{i:02d}:00"


LAYOUTS = {
    "iso": ("datetime", _iso),
    "iso-t-z": ("timestamp", lambda i: f"2024-01-01T00:{i:02d}:00Z"),
    "iso-offset": ("time", lambda i: f"2024-01-01T02:{i:02d}:00+02:00"),
    "epoch-s": ("timestamp", lambda i: str(T0_S + 60 * i)),
    "epoch-s-float": ("time", lambda i: f"{T0_S + 60 * i}.0"),
    "epoch-ms": ("open_time", lambda i: str((T0_S + 60 * i) * 1000)),
    "epoch-us": ("Timestamp", lambda i: str((T0_S + 60 * i) * 10**6)),
    "epoch-ns": ("DATE", lambda i: str((T0_S + 60 * i) * 10**9)),
}


def write_csv(path: Path, times: list[str], column: str = "datetime", extra: str = "") -> Path:
    lines = [f"{column},open,high,low,close,volume{extra}"]
    lines += [f"{t},{p}" for t, p in zip(times, PRICES, strict=False)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_generic_layout_lands_the_same_bars(layout: str, tmp_path: Path) -> None:
    """Issue 20: a `datetime,open,high,low,close,volume` file was refused; ISO and epoch
    s, ms, us and ns times (by magnitude) all land the same bars."""
    column, stamp = LAYOUTS[layout]
    path = write_csv(tmp_path / "mydata.csv", [stamp(i) for i in range(3)], column)
    kind, table = read_local_file(path, "BTCUSDT")
    assert kind == "bars"
    assert table.to_pydict() == EXPECTED


@pytest.mark.parametrize(
    "times",
    [
        pa.array([(T0_S + 60 * i) * 1000 for i in range(3)], pa.timestamp("ms", tz="UTC")),
        pa.array([(T0_S + 60 * i) * 10**6 for i in range(3)], pa.timestamp("us")),  # naive: UTC
        pa.array([(T0_S + 60 * i) * 1000 for i in range(3)], pa.int64()),
        pa.array([float(T0_S + 60 * i) for i in range(3)], pa.float64()),
        pa.array([_iso(i) for i in range(3)], pa.string()),
    ],
    ids=["timestamp-ms-utc", "timestamp-us-naive", "epoch-ms", "epoch-s-float", "iso"],
)
def test_generic_parquet_lands_the_same_bars(times: pa.Array, tmp_path: Path) -> None:
    path = tmp_path / "bars.parquet"
    prices = {name: EXPECTED[name] for name in ("open", "high", "low", "close", "volume")}
    pq.write_table(pa.table({"timestamp": times, **prices}), path)
    kind, table = read_local_file(path, "BTCUSDT")
    assert kind == "bars"
    assert table.to_pydict() == EXPECTED


def test_optional_columns_are_kept_and_extra_ones_ignored(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text(
        "Open_Time,Open,High,Low,Close,Volume,Quote_Asset_Volume,Number_Of_Trades,note\n"
        f"{_iso(0)},1,2,0.5,1.5,10,15,7,hello\n"
    )
    (row,) = read_local_file(path, "BTCUSDT")[1].to_pylist()
    assert (row["quote_volume"], row["n_trades"], row["taker_buy_volume"]) == (15.0, 7, 0.0)


def test_close_stamped_rows_are_moved_to_their_open(tmp_path: Path) -> None:
    at_close = write_csv(tmp_path / "a.csv", [_iso(i + 1) for i in range(3)])
    binance_style = write_csv(  # 00:00:59.999 closes the 00:00 bar
        tmp_path / "b.csv", [str((T0_S + 60 * i + 60) * 1000 - 1) for i in range(3)], "time"
    )
    for path in (at_close, binance_style):
        assert read_local_file(path, "BTCUSDT", bar_time="close")[1].to_pydict() == EXPECTED
    with pytest.raises(DataFormatError, match=r"line 2: time 2024-01-01 00:00:59.999 UTC is not"):
        read_local_file(binance_style, "BTCUSDT")  # open-stamped: not on a minute
    with pytest.raises(InputError, match="--bar-time 'middle': expected open or close"):
        read_local_file(at_close, "BTCUSDT", bar_time="middle")


def test_bars_other_than_one_minute_are_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [f"2024-01-01 00:{5 * i:02d}:00" for i in range(3)])
    with pytest.raises(DataFormatError, match=r"closest rows are 300 s apart.*1-minute bars"):
        read_local_file(path, "BTCUSDT")
    with pytest.raises(InputError, match="--bar-seconds 300: the lake holds 1-minute bars"):
        read_local_file(path, "BTCUSDT", bar_seconds=300)


@pytest.mark.parametrize(
    ("third", "message"),
    [
        ("2008-12-31 23:59:00", r"line 4: time 2008-12-31 23:59:00 UTC is before 2009"),
        ("2999-01-01 00:00:00", r"line 4: time 2999-01-01 00:00:00 UTC is in the future"),
        ("yesterday", r"line 4: column datetime: 'yesterday' is neither an ISO date-time"),
        ("0", r"line 4: column datetime: '0' is neither"),
    ],
)
def test_bad_iso_times_are_refused_with_the_line(third: str, message: str, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", [_iso(0), _iso(1), third])
    with pytest.raises(DataFormatError, match=message):
        read_local_file(path, "BTCUSDT")


@pytest.mark.parametrize(
    ("third", "message"),
    [
        ("1000000000", r"line 4: time 2001-09-09 01:46:40 UTC is before 2009"),
        ("32503680000", r"line 4: time 3000-01-01 00:00:00 UTC is in the future"),
        ("1704067320000", r"line 4: timestamps mix seconds and milliseconds"),
        ("soon", r"line 4: column timestamp: 'soon' is not an epoch number"),
    ],
)
def test_bad_epoch_times_are_refused_with_the_line(
    third: str, message: str, tmp_path: Path
) -> None:
    times = [str(T0_S), str(T0_S + 60), third]
    path = write_csv(tmp_path / "a.csv", times, "timestamp")
    with pytest.raises(DataFormatError, match=message):
        read_local_file(path, "BTCUSDT")


def test_bad_columns_and_cells_are_refused(tmp_path: Path) -> None:
    no_volume = tmp_path / "a.csv"
    no_volume.write_text(f"datetime,open,high,low,close\n{_iso(0)},1,2,0.5,1.5\n")
    with pytest.raises(DataFormatError, match=r"no volume column.*volume is required"):
        read_local_file(no_volume, "BTCUSDT")
    bad_cell = write_csv(tmp_path / "b.csv", [_iso(i) for i in range(3)])
    bad_cell.write_text(bad_cell.read_text().replace("42016.0", "n/a"))
    with pytest.raises(DataFormatError, match=r"line 4: column high: 'n/a' is not a number"):
        read_local_file(bad_cell, "BTCUSDT")
    ragged = tmp_path / "c.csv"
    ragged.write_text(f"datetime,open,high,low,close,volume\n{_iso(0)},1,2,0.5,1.5,1,9\n")
    with pytest.raises(DataFormatError, match="line 2: expected 6 columns"):
        read_local_file(ragged, "BTCUSDT")
    other = tmp_path / "d.csv"
    other.write_text(
        f"symbol,datetime,open,high,low,close,volume\nETH/USDT,{_iso(0)},{PRICES[0]}\n"
    )
    with pytest.raises(DataFormatError, match="holds symbol ETHUSDT, not BTCUSDT"):
        read_local_file(other, "BTCUSDT")


def test_zipped_ohlcv_file_lands(config: AppConfig, lake: Lake, tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "BTCUSDT_1m.csv", [_iso(i) for i in range(3)])
    path = tmp_path / "BTCUSDT_1m.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(csv_path.name, csv_path.read_bytes())
    path.write_bytes(buffer.getvalue())
    (written,) = ingest_files(config, lake, [path], "BTCUSDT")
    assert (written.kind, written.day, written.rows) == ("bars", dt.date(2024, 1, 1), 3)
    assert lake.read("BINANCE", "BTCUSDT", "bars").to_pydict() == EXPECTED
    assert len(lake_files(lake.root)) == 1
