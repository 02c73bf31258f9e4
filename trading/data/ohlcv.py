"""Generic OHLCV bars (CSV or Parquet, any source) -> the lake's bars schema.

Layout: a header (any case, any column order, extra columns ignored) with
  a time column   the first of open_time, timestamp, datetime, time, date present, holding
                  ISO 8601 strings (2024-01-01 00:00:00, ...T00:00:00Z, +02:00 offsets;
                  no offset means UTC), epoch numbers in s, ms, us or ns (the unit is
                  detected by magnitude, see `binance_formats.epoch_unit`), or, in
                  Parquet, a timestamp or date column;
  open, high, low, close, volume   required (volume in the base asset: BARS_V1 uses it);
  quote_volume (or quote_asset_volume), n_trades (or count, trades, number_of_trades),
  taker_buy_volume (or taker_buy_base_asset_volume)   optional.
The lake forbids nulls, so a missing optional column is filled with 0.0 (0 for
n_trades): these columns are informational; BARS_V1 reads only high, low, close and
volume. A `symbol` column, when present, must name the ingested symbol.

Each row is one bar. `bar_time` says whether its time is the bar's open (the default) or
its close; close times are moved back by the bar length (a Binance-style close one
millisecond short of the next bar, e.g. 00:00:59.999, rounds up first), so the lake
always holds open times. Every open time must be a whole multiple of the bar length from
midnight UTC, and every time must lie between 2009 and now. The lake holds 1-minute bars
(the features and the strategy consume 1-minute bars), so the bar length must be 60 s: a
file whose closest rows are further apart than one bar holds longer bars and is refused.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from trading.data.binance_formats import (
    check_plausible,
    epoch_to_ns,
    format_ns,
    line_of_row,
)
from trading.data.schemas import SCHEMAS
from trading.errors import DataFormatError, InputError

BarTime = Literal["open", "close"]
LAKE_BAR_SECONDS = 60
TIME_COLUMNS = ("open_time", "timestamp", "datetime", "time", "date")
PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "quote_volume": ("quote_volume", "quote_asset_volume"),
    "n_trades": ("n_trades", "count", "trades", "number_of_trades"),
    "taker_buy_volume": ("taker_buy_volume", "taker_buy_base_asset_volume"),
}
_MS_NS = 1_000_000
Where = Callable[[int], str]


def check_bar_options(bar_time: str, bar_seconds: int) -> None:
    """Refuse --bar-time / --bar-seconds values the lake cannot take."""
    if bar_time not in ("open", "close"):
        raise InputError(f"--bar-time {bar_time!r}: expected open or close")
    if bar_seconds != LAKE_BAR_SECONDS:
        raise InputError(
            f"--bar-seconds {bar_seconds}: the lake holds 1-minute bars (the features and the "
            "strategy consume 1-minute bars): resample the file to 1-minute bars and ingest "
            "it with --bar-seconds 60"
        )


def _by_lower(names: list[str]) -> dict[str, str]:
    """lower-case name -> the column's own name (the first of names differing in case)."""
    found: dict[str, str] = {}
    for name in names:
        found.setdefault(name.strip().lower(), name)
    return found


def time_column(names: list[str]) -> str | None:
    """The column holding the bar time, or None."""
    lower = _by_lower(names)
    return next((lower[c] for c in TIME_COLUMNS if c in lower), None)


def is_ohlcv_header(names: list[str]) -> bool:
    """A header with a time column and open, high, low, close (volume is checked later, to
    say it is missing rather than not recognising the file)."""
    lower = _by_lower(names)
    return time_column(names) is not None and {"open", "high", "low", "close"} <= lower.keys()


def _columns(names: list[str], name: str) -> tuple[str, dict[str, str]]:
    """(time column, lake column -> file column) for the columns the file has."""
    lower = _by_lower(names)
    time_name = time_column(names)
    if time_name is None:
        raise DataFormatError(
            f"{name}: no time column: name it datetime, timestamp, open_time, time or date"
        )
    missing = [c for c in PRICE_COLUMNS if c not in lower]
    if missing:
        raise DataFormatError(
            f"{name}: no {', '.join(missing)} column: an OHLCV file needs open, high, low, "
            "close and volume (volume is required: the features use it)"
        )
    found = {c: lower[c] for c in PRICE_COLUMNS}
    for lake_name, aliases in OPTIONAL_COLUMNS.items():
        alias = next((a for a in aliases if a in lower), None)
        if alias is not None:
            found[lake_name] = lower[alias]
    if "symbol" in lower:
        found["symbol"] = lower["symbol"]
    return time_name, found


def _check_symbol(values: list[object], symbol: str, name: str) -> None:
    found = {str(v).replace("/", "").replace("-", "").upper() for v in values}
    wrong = sorted(found - {symbol})
    if wrong:
        raise DataFormatError(f"{name}: holds symbol {', '.join(wrong)}, not {symbol} (--symbol)")


def _series(values: pa.ChunkedArray) -> pl.Series:
    series = pl.from_arrow(values)
    assert isinstance(series, pl.Series)
    return series


def _numbers(values: pl.Series, column: str, name: str, where: Where) -> np.ndarray:
    """A column of text or numbers -> float64; a blank, text or NaN cell is refused."""
    cells = values.cast(pl.String).str.strip_chars() if values.dtype == pl.String else values
    floats = cells.cast(pl.Float64, strict=False)
    array = floats.to_numpy().astype(np.float64)
    bad = ~np.isfinite(array)  # nulls arrive as NaN
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataFormatError(
            f"{name}: {where(row)}: column {column}: {values[row]!r} is not a number"
        )
    return array


def _iso_to_ns(text: pl.Series, column: str, name: str, where: Where) -> np.ndarray:
    parsed = pd.to_datetime(text.to_pandas(), utc=True, format="ISO8601", errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataFormatError(
            f"{name}: {where(row)}: column {column}: {text[row]!r} is neither an ISO date-time "
            "(e.g. 2024-01-01 00:00:00, UTC unless it carries an offset) nor an epoch number"
        )
    utc = parsed.dt.tz_convert(None).to_numpy()
    # checked in microseconds first: a far date overflows nanoseconds
    check_plausible(utc.astype("datetime64[us]").astype(np.int64) * 1_000.0, name, where)
    return utc.astype("datetime64[ns]").astype(np.int64)


def _text_times_to_ns(text: pl.Series, column: str, name: str, where: Where) -> np.ndarray:
    """ISO strings, or epoch numbers written as text."""
    text = text.str.strip_chars()
    ints = text.cast(pl.Int64, strict=False)
    if ints.null_count() == 0:
        return epoch_to_ns(ints.to_numpy(), name, where, layout="an OHLCV file")
    floats = text.cast(pl.Float64, strict=False)
    if floats[0] is None:
        return _iso_to_ns(text, column, name, where)
    if floats.null_count():
        row = int(np.flatnonzero(floats.is_null().to_numpy())[0])
        raise DataFormatError(
            f"{name}: {where(row)}: column {column}: {text[row]!r} is not an epoch number "
            "like the rows before it"
        )
    return epoch_to_ns(floats.to_numpy(), name, where, layout="an OHLCV file")


def _arrow_times_to_ns(values: pa.ChunkedArray, column: str, name: str, where: Where) -> np.ndarray:
    kind = values.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        if values.null_count:
            row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataFormatError(f"{name}: {where(row)}: column {column} is empty")
        tz = getattr(kind, "tz", None)
        # checked in microseconds first: a far date overflows nanoseconds
        us = pc.cast(pc.cast(values, pa.timestamp("us", tz=tz)), pa.int64())
        check_plausible(np.asarray(us.to_numpy(), dtype=np.int64) * 1_000.0, name, where)
        ns = pc.cast(pc.cast(values, pa.timestamp("ns", tz=tz)), pa.int64())
        return np.asarray(ns.to_numpy(), dtype=np.int64)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        numbers = _numbers(_series(values), column, name, where)
        if pa.types.is_integer(kind):
            return epoch_to_ns(
                np.asarray(values.to_numpy(), np.int64), name, where, layout="an OHLCV file"
            )
        return epoch_to_ns(numbers, name, where, layout="an OHLCV file")
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _text_times_to_ns(_series(values).cast(pl.String), column, name, where)
    raise DataFormatError(
        f"{name}: column {column} has type {kind}: expected a timestamp, epoch numbers or "
        "ISO date-time strings"
    )


def _open_times(
    ts_ns: np.ndarray, bar_time: str, bar_seconds: int, name: str, where: Where
) -> np.ndarray:
    """Row times -> bar open times, checked to sit on bar boundaries."""
    bar_ns = bar_seconds * 1_000_000_000
    if bar_time == "close":
        ts_ns = ts_ns - bar_ns
        short = bar_ns - ts_ns % bar_ns
        ts_ns = np.where((short < bar_ns) & (short <= _MS_NS), ts_ns + short, ts_ns)
    off = ts_ns % bar_ns != 0
    if off.any():
        row = int(np.flatnonzero(off)[0])
        shown = ts_ns[row] + (bar_ns if bar_time == "close" else 0)
        raise DataFormatError(
            f"{name}: {where(row)}: time {format_ns(int(shown))} is not on a {bar_seconds} s "
            f"bar boundary (bars open at whole multiples of {bar_seconds} s from midnight "
            f"UTC; read as the bar's {bar_time}, --bar-time {bar_time}): check --bar-time "
            "and that the file holds 1-minute bars"
        )
    distinct = np.unique(ts_ns)
    if len(distinct) >= 2:
        step = int(np.diff(distinct).min())
        if step > bar_ns:
            raise DataFormatError(
                f"{name}: the closest rows are {step / 1e9:g} s apart: the file holds "
                f"{step / 1e9:g}-second bars, not {bar_seconds}-second bars; the lake holds "
                "1-minute bars: resample the file to 1-minute bars first"
            )
    return ts_ns


def _to_bars(
    times_ns: np.ndarray,
    column: Callable[[str], np.ndarray],
    found: dict[str, str],
    n: int,
) -> pa.Table:
    out: dict[str, pa.Array] = {"ts_ns": pa.array(times_ns, pa.int64())}
    for field in SCHEMAS["bars"]:
        if field.name == "ts_ns":
            continue
        if field.name in found:
            values = column(field.name)
            if field.name == "n_trades":
                values = np.round(values)
            out[field.name] = pa.array(values).cast(field.type)
        else:
            out[field.name] = pa.array(np.zeros(n), pa.float64()).cast(field.type)
    return pa.table(out)


def _bars_of(
    found: dict[str, str],
    series: Callable[[str], pl.Series],
    times: np.ndarray,
    n: int,
    file: tuple[str, str, str, int],
    where: Where,
) -> pa.Table:
    """What both readers share once the times are read: the symbol column checked, bar
    open times, the columns as numbers. `series(file column)` reads one column; `file` is
    (name, --symbol, bar_time, bar_seconds)."""
    name, symbol, bar_time, bar_seconds = file
    if "symbol" in found:
        _check_symbol(series(found.pop("symbol")).unique().to_list(), symbol, name)
    opens = _open_times(times, bar_time, bar_seconds, name, where)
    return _to_bars(
        opens, lambda lake_name: _numbers(series(found[lake_name]), found[lake_name], name, where),
        found, n,
    )  # fmt: skip


def _diagnose_csv(text: bytes, name: str, exc: Exception) -> DataFormatError:
    rows = csv.reader(io.StringIO(text.decode("utf-8", "replace")))
    width = None
    for lineno, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip():
            continue
        if width is None:
            width = len(row)
        elif len(row) != width:
            return DataFormatError(
                f"{name}: line {lineno}: expected {width} columns (as the header), got {len(row)}"
            )
    return DataFormatError(f"{name}: not a readable CSV file ({str(exc).splitlines()[0]})")


def read_ohlcv_csv(
    source: bytes | Path,
    name: str,
    symbol: str,
    bar_time: str = "open",
    bar_seconds: int = LAKE_BAR_SECONDS,
) -> pa.Table:
    """A generic OHLCV CSV (see the module docstring) -> bars in the lake schema."""
    check_bar_options(bar_time, bar_seconds)
    text = source if isinstance(source, bytes) else source.read_bytes()
    try:
        frame = pl.read_csv(io.BytesIO(text), has_header=True, infer_schema=False)
    except (pl.exceptions.PolarsError, ValueError) as exc:
        raise _diagnose_csv(text, name, exc) from None
    if frame.height == 0:
        raise DataFormatError(f"{name}: no data rows after the header")
    time_name, found = _columns(frame.columns, name)

    def where(row: int) -> str:
        return f"line {line_of_row(text, row, has_header=True)}"

    return _bars_of(
        found,
        lambda column: frame[column],
        _text_times_to_ns(frame[time_name], time_name, name, where),
        frame.height,
        (name, symbol, bar_time, bar_seconds),
        where,
    )


def read_ohlcv_table(
    table: pa.Table,
    name: str,
    symbol: str,
    bar_time: str = "open",
    bar_seconds: int = LAKE_BAR_SECONDS,
) -> pa.Table:
    """A generic OHLCV table (read from Parquet) -> bars in the lake schema."""
    check_bar_options(bar_time, bar_seconds)
    if table.num_rows == 0:
        raise DataFormatError(f"{name}: empty file (no rows)")
    time_name, found = _columns(table.column_names, name)

    def where(row: int) -> str:
        return f"row {row + 1}"

    return _bars_of(
        found,
        lambda column: _series(table.column(column)),
        _arrow_times_to_ns(table.column(time_name), time_name, name, where),
        table.num_rows,
        (name, symbol, bar_time, bar_seconds),
        where,
    )
