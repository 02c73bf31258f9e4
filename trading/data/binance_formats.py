"""Readers for Binance's file formats, returning tables in the lake schema.

Covered: data.binance.vision spot aggTrades (no header, 8 columns; ms timestamps
before 2025-01-01, us from then on), USD-M aggTrades (header, 7 columns), USD-M
bookTicker (header, 7 columns), spot and USD-M 1-minute klines (12 columns), inside a
.zip or as plain CSV. Parsing uses polars' multithreaded CSV reader with fixed column types
and only the columns the lake needs; only when that fails is the file re-read line by line
to name the bad line.

Epoch times are read by magnitude (`epoch_unit`: seconds below 1e11, milliseconds below
1e14, microseconds below 1e17, nanoseconds above) and then checked for plausibility: a
time before 2009 (Bitcoin's first block) or after now is refused with its line. Binance
writes milliseconds (microseconds in spot files from 2025 on), never seconds or
nanoseconds: a Binance layout holding either is refused, never read as a 1970 date.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
import zipfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from trading.data.schemas import BUYER, SELLER
from trading.errors import DataFormatError


@dataclass(frozen=True)
class CsvFormat:
    """One Binance CSV layout: its columns and which lake kind it feeds."""

    name: str
    lake_kind: str
    columns: tuple[str, ...]
    types: dict[str, pa.DataType]

    @property
    def polars_schema(self) -> dict[str, pl.DataType]:
        return {name: _POLARS_TYPES[str(self.types[name])] for name in self.columns}


_POLARS_TYPES: dict[str, pl.DataType] = {
    "int64": pl.Int64(),
    "double": pl.Float64(),
    "bool": pl.Boolean(),
    "string": pl.String(),
}
# Lake column <- raw Binance column, per lake kind. ts_ns is converted to nanoseconds and
# aggressor_side derived from is_buyer_maker; the rest are taken as they are.
_LAKE_COLUMNS: dict[str, dict[str, str]] = {
    "trades": {
        "ts_ns": "transact_time",
        "trade_id": "agg_trade_id",
        "price": "price",
        "qty": "quantity",
        "aggressor_side": "is_buyer_maker",
    },
    "quotes": {
        "ts_ns": "transaction_time",
        "bid": "best_bid_price",
        "ask": "best_ask_price",
        "bid_size": "best_bid_qty",
        "ask_size": "best_ask_qty",
    },
    "bars": {
        "ts_ns": "open_time",
        "open": "open",
        "high": "high",
        "low": "low",
        "close": "close",
        "volume": "volume",
        "quote_volume": "quote_volume",
        "n_trades": "count",
        "taker_buy_volume": "taker_buy_volume",
    },
    "funding": {"ts_ns": "calc_time", "rate": "last_funding_rate"},
}


_AGG_SPOT = CsvFormat(
    "aggTrades (spot)",
    "trades",
    (
        "agg_trade_id",
        "price",
        "quantity",
        "first_trade_id",
        "last_trade_id",
        "transact_time",
        "is_buyer_maker",
        "is_best_match",
    ),
    {
        "agg_trade_id": pa.int64(),
        "price": pa.float64(),
        "quantity": pa.float64(),
        "first_trade_id": pa.int64(),
        "last_trade_id": pa.int64(),
        "transact_time": pa.int64(),
        "is_buyer_maker": pa.bool_(),
        "is_best_match": pa.bool_(),
    },
)
_AGG_UM = CsvFormat(
    "aggTrades (USD-M)",
    "trades",
    _AGG_SPOT.columns[:7],
    {k: v for k, v in _AGG_SPOT.types.items() if k != "is_best_match"},
)
_BOOK_TICKER = CsvFormat(
    "bookTicker (USD-M)",
    "quotes",
    (
        "update_id",
        "best_bid_price",
        "best_bid_qty",
        "best_ask_price",
        "best_ask_qty",
        "transaction_time",
        "event_time",
    ),
    {
        "update_id": pa.int64(),
        "best_bid_price": pa.float64(),
        "best_bid_qty": pa.float64(),
        "best_ask_price": pa.float64(),
        "best_ask_qty": pa.float64(),
        "transaction_time": pa.int64(),
        "event_time": pa.int64(),
    },
)
_KLINES = CsvFormat(
    "klines",
    "bars",
    (
        "open_time",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "close_time",
        "quote_volume",
        "count",
        "taker_buy_volume",
        "taker_buy_quote_volume",
        "ignore",
    ),
    {
        "open_time": pa.int64(),
        "open": pa.float64(),
        "high": pa.float64(),
        "low": pa.float64(),
        "close": pa.float64(),
        "volume": pa.float64(),
        "close_time": pa.int64(),
        "quote_volume": pa.float64(),
        "count": pa.int64(),
        "taker_buy_volume": pa.float64(),
        "taker_buy_quote_volume": pa.float64(),
        "ignore": pa.string(),
    },
)
_FUNDING = CsvFormat(
    "fundingRate (USD-M)",
    "funding",
    ("calc_time", "funding_interval_hours", "last_funding_rate"),
    {
        "calc_time": pa.int64(),
        "funding_interval_hours": pa.int64(),
        "last_funding_rate": pa.float64(),
    },
)
FORMATS: dict[str, CsvFormat] = {
    "aggTrades": _AGG_SPOT,
    "aggTrades-um": _AGG_UM,
    "bookTicker": _BOOK_TICKER,
    "klines": _KLINES,
    "fundingRate": _FUNDING,
}
# Binance archive kinds -> lake kinds
ARCHIVE_KINDS = {
    "aggTrades": "trades",
    "bookTicker": "quotes",
    "klines": "bars",
    "fundingRate": "funding",
}


def _detect(first_line: str, name: str) -> tuple[CsvFormat, bool]:
    """Pick the layout from the first line; returns (format, has_header)."""
    cells = [c.strip() for c in first_line.split(",")]
    has_header = bool(cells[0]) and not cells[0].lstrip("-").isdigit()
    if has_header:
        for fmt in (_AGG_SPOT, _AGG_UM, _BOOK_TICKER, _KLINES, _FUNDING):
            if tuple(cells) == fmt.columns:
                return fmt, True
        raise DataFormatError(
            f"{name}: line 1: header {','.join(cells)[:120]!r} is not a Binance aggTrades, "
            "bookTicker, klines or fundingRate header, nor an OHLCV header (a time column "
            "named datetime, timestamp, open_time, time or date, and open, high, low, close, "
            "volume)"
        )
    by_count = {8: _AGG_SPOT, 7: _AGG_UM, 12: _KLINES}
    if len(cells) not in by_count:
        raise DataFormatError(
            f"{name}: line 1: {len(cells)} columns: expected 8 (spot aggTrades), "
            "7 (USD-M aggTrades) or 12 (klines); for OHLCV bars add a header line such as "
            "timestamp,open,high,low,close,volume"
        )
    return by_count[len(cells)], False


def _diagnose(
    text_lines: list[str], fmt: CsvFormat, has_header: bool, name: str
) -> DataFormatError:
    """Find the first bad line after the fast reader failed."""
    header_seen = not has_header
    for lineno, row in enumerate(csv.reader(text_lines), start=1):
        if not row or not "".join(row).strip():
            continue  # the fast reader skips blank lines too
        if not header_seen:
            header_seen = True
            continue
        if len(row) != len(fmt.columns):
            return DataFormatError(
                f"{name}: line {lineno}: expected {len(fmt.columns)} columns ({fmt.name}), got {len(row)}"
            )
        for column, cell in zip(fmt.columns, row, strict=True):
            kind = fmt.types[column]
            try:
                if pa.types.is_integer(kind):
                    int(cell)
                elif pa.types.is_floating(kind):
                    float(cell)
                elif pa.types.is_boolean(kind) and cell.strip().lower() not in ("true", "false"):
                    raise ValueError(cell)
            except ValueError:
                return DataFormatError(
                    f"{name}: line {lineno}: column {column}: {cell!r} is not a valid {kind}"
                )
    return DataFormatError(f"{name}: could not be parsed as {fmt.name}")


UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
EARLIEST = dt.datetime(2009, 1, 1, tzinfo=dt.UTC)  # before any crypto market existed
_EARLIEST_NS = int(EARLIEST.timestamp()) * 1_000_000_000
# below 1e11 s is the year 5138; 1e14 ms the year 5138; 1e17 us the year 5138
_UNIT_BOUNDS = np.array([1e11, 1e14, 1e17])
_UNITS = ("s", "ms", "us", "ns")


def epoch_unit(value: float) -> str:
    """The unit of an epoch time, by magnitude: s, ms, us or ns."""
    return _UNITS[int(np.searchsorted(_UNIT_BOUNDS, abs(value), side="right"))]


def format_ns(ts_ns: int) -> str:
    """A UTC time for messages, e.g. 2024-01-01 00:00:00 UTC."""
    seconds, rest = divmod(int(ts_ns), 1_000_000_000)
    try:
        when = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=seconds)
    except OverflowError:
        return "a time out of the calendar's range"
    text = when.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{rest // 1_000_000:03d} UTC" if rest else f"{text} UTC"


def check_plausible(ts_ns: np.ndarray, name: str, where: Callable[[int], str]) -> None:
    """Refuse a time before 2009 or after now, naming its line (`where(row)`)."""
    now_ns = time.time_ns()
    bad = (ts_ns < _EARLIEST_NS) | (ts_ns > now_ns)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        when = "before 2009" if ts_ns[row] < _EARLIEST_NS else "in the future"
        raise DataFormatError(
            f"{name}: {where(row)}: time {format_ns(int(ts_ns[row]))} is {when}: "
            "fix or remove the row (a wrong unit or time zone gives such dates)"
        )


def epoch_to_ns(
    values: np.ndarray,
    name: str,
    where: Callable[[int], str],
    units: Collection[str] = ("s", "ms", "us", "ns"),
    layout: str = "",
) -> np.ndarray:
    """Epoch times (integers or floats) -> int64 ns. The unit is the first row's by
    magnitude (`epoch_unit`), every row must share it, it must be one of `units` (the
    layout's, named by `layout` in the message) and every time must be plausible."""
    if len(values) == 0:
        return np.asarray(values, dtype=np.int64)
    magnitude = np.searchsorted(_UNIT_BOUNDS, np.abs(values.astype(np.float64)), side="right")
    unit = _UNITS[int(magnitude[0])]
    if (magnitude != magnitude[0]).any():
        row = int(np.flatnonzero(magnitude != magnitude[0])[0])
        other = _UNITS[int(magnitude[row])]
        raise DataFormatError(
            f"{name}: {where(row)}: timestamps mix {UNIT_NAMES[unit]} and {UNIT_NAMES[other]} "
            f"({values[0]} on {where(0)}, {values[row]} here): use one unit for every row"
        )
    factor = UNIT_NS[unit]
    approx = values.astype(np.float64) * factor  # before the exact product can overflow
    check_plausible(approx, name, where)
    if unit not in units:
        allowed = " or ".join(UNIT_NAMES[u] for u in _UNITS if u in units)
        raise DataFormatError(
            f"{name}: {where(0)}: timestamp {values[0]} is in {UNIT_NAMES[unit]} "
            f"({format_ns(int(approx[0]))}); {layout or 'this layout'} holds {allowed}: "
            f"convert the times to {allowed.split(' or ')[0]}, or give the file an OHLCV "
            "header (timestamp,open,high,low,close,volume) to read it as generic OHLCV"
        )
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64) * factor
    return np.round(values * factor).astype(np.int64)


def to_ns(
    times: pa.Array | pa.ChunkedArray, name: str, where: Callable[[int], str] | None = None
) -> pa.Array:
    """Binance epoch times (ms, or us in spot files from 2025 on) -> ns, by magnitude;
    seconds, nanoseconds and implausible dates are refused at their line (`where(row)`,
    by default "data row N")."""
    values = np.asarray(times.to_numpy())
    ns = epoch_to_ns(
        values,
        name,
        where or (lambda row: f"data row {row + 1}"),
        units=("ms", "us"),
        layout="a Binance file",
    )
    return pa.array(ns, type=pa.int64())


def _side_from_buyer_maker(buyer_maker: pa.ChunkedArray | pa.Array) -> pa.Array:
    return pc.if_else(buyer_maker, pa.scalar(SELLER, pa.int8()), pa.scalar(BUYER, pa.int8()))


def _to_lake(
    raw: pa.Table, fmt: CsvFormat, name: str, where: Callable[[int], str] | None = None
) -> pa.Table:
    columns = {}
    for lake_column, raw_column in _LAKE_COLUMNS[fmt.lake_kind].items():
        values = raw.column(raw_column)
        if lake_column == "ts_ns":
            values = to_ns(values, name, where)
        elif lake_column == "aggressor_side":
            values = _side_from_buyer_maker(values)
        columns[lake_column] = values
    return pa.table(columns)


def _first_content(data: bytes) -> int:
    """Offset of the first non-whitespace byte, without copying a large buffer."""
    for offset, byte in enumerate(data):
        if byte not in b" \t\r\n":
            return offset
    return len(data)


def read_csv_bytes(data: bytes, name: str, expect: str | None = None) -> tuple[str, pa.Table]:
    """Parse one Binance CSV; returns (lake kind, table in the lake schema).

    `expect` is an archive kind (aggTrades, bookTicker, klines) the file must be.
    """
    return _read_csv(data, data[:65536], name, expect)


def _read_csv(
    source: bytes | Path, head: bytes, name: str, expect: str | None
) -> tuple[str, pa.Table]:
    offset = _first_content(head)
    if offset >= len(head):
        raise DataFormatError(f"{name}: empty file")
    line_end = head.find(b"\n", offset)
    first_line = head[offset : line_end if line_end >= 0 else len(head)].decode("utf-8", "replace")
    fmt, has_header = _detect(first_line.strip(), name)
    if expect is not None and ARCHIVE_KINDS.get(expect) != fmt.lake_kind:
        raise DataFormatError(f"{name}: expected a {expect} file, found {fmt.name} columns")

    def diagnose() -> DataFormatError:
        text = source if isinstance(source, bytes) else source.read_bytes()
        return _diagnose(text.decode("utf-8", "replace").splitlines(), fmt, has_header, name)

    try:
        frame = pl.read_csv(
            io.BytesIO(source) if isinstance(source, bytes) else source,
            has_header=has_header,
            schema=fmt.polars_schema,
            truncate_ragged_lines=False,
        )
    except (pl.exceptions.PolarsError, ValueError):
        raise diagnose() from None
    if frame.height == 0:
        raise DataFormatError(f"{name}: no data rows after the header")
    if any(count for count in frame.null_count().row(0)):
        raise diagnose()
    raw = frame.select(list(_LAKE_COLUMNS[fmt.lake_kind].values())).to_arrow()

    def where(row: int) -> str:
        text = source if isinstance(source, bytes) else source.read_bytes()
        return f"line {line_of_row(text, row, has_header)}"

    table = _to_lake(raw, fmt, name, where)
    if fmt is _KLINES:
        _require_one_minute(frame, name, where)
    return fmt.lake_kind, table


def _require_one_minute(frame: pl.DataFrame, name: str, where: Callable[[int], str]) -> None:
    """Klines span close_time - open_time = one minute less one tick of their unit (59,999
    ms, or 59,999,999 us): the lake holds 1-minute bars, so other intervals are refused."""
    opened = frame["open_time"].to_numpy()
    span = frame["close_time"].to_numpy() - opened
    tick = np.where(opened > 100_000_000_000_000, 1, 1_000)  # us files, else ms
    expected = 60_000_000 // tick - 1
    bad = np.flatnonzero(span != expected)
    if len(bad):
        row = int(bad[0])
        seconds = (int(span[row]) + 1) * int(tick[row]) / 1e6
        raise DataFormatError(
            f"{name}: {where(row)}: a {seconds:g} s kline (close_time - open_time = "
            f"{int(span[row]):,}), not a 1-minute one: the lake holds 1-minute bars; "
            "download the 1m klines (hmmtrader ingest archive --kind klines)"
        )


def line_of_row(text: bytes, row: int, has_header: bool) -> int:
    """The 1-based line of data row `row` (0-based) of a CSV, blank lines skipped as the
    readers skip them."""
    wanted, seen = row + int(has_header), -1
    for lineno, line in enumerate(text.split(b"\n"), start=1):
        if line.strip():
            seen += 1
            if seen == wanted:
                return lineno
    return wanted + 1


def zip_member(data: bytes, name: str) -> tuple[str, bytes]:
    """The one CSV inside a zip archive: (its name, its bytes)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [m for m in archive.namelist() if m.lower().endswith(".csv")]
            if len(members) != 1:
                raise DataFormatError(
                    f"{name}: expected one CSV inside the zip, found {len(members)}"
                )
            return members[0], archive.read(members[0])
    except zipfile.BadZipFile as exc:
        raise DataFormatError(f"{name}: not a valid zip archive ({exc})") from None


def read_zip_bytes(data: bytes, name: str, expect: str | None = None) -> tuple[str, pa.Table]:
    member, payload = zip_member(data, name)
    return read_csv_bytes(payload, f"{name}:{member}", expect)


def read_binance_file(path: Path, expect: str | None = None) -> tuple[str, pa.Table]:
    if path.suffix.lower() == ".zip":
        return read_zip_bytes(path.read_bytes(), path.name, expect)
    with path.open("rb") as stream:
        head = stream.read(65536)
    return _read_csv(path, head, path.name, expect)
