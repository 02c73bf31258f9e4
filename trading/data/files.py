"""Ingest local files: Binance archive CSV/zip (aggTrades, bookTicker, klines, funding),
generic OHLCV bars as CSV, zip or Parquet (trading/data/ohlcv.py), Nautilus-style Parquet
quote and trade samples, Tardis book_snapshot_5 CSV, Binance depth snapshots, and
lake-schema Parquet.

A file must belong to --symbol: by its symbol column when it has one, and by its name when
that names a symbol (`name_symbol`: a Binance archive name such as
ADABTC-1m-2024-01-01.zip, or a name starting with a symbol-looking token such as
ETHUSDT_1m.csv); a name without one (mydata.csv) is accepted. Every file is parsed and
checked before anything is written; then one lake batch writes all of them (several files
of the same day merged into one day), so one bad file means nothing lands.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trading.data.binance_formats import (
    FORMATS,
    read_binance_file,
    read_csv_bytes,
    to_ns,
    zip_member,
)
from trading.data.lake import Lake, Written
from trading.data.ohlcv import (
    LAKE_BAR_SECONDS,
    check_bar_options,
    is_ohlcv_header,
    read_ohlcv_csv,
    read_ohlcv_table,
)
from trading.data.schemas import BUYER, SCHEMAS, SELLER
from trading.errors import DataFormatError, InputError
from trading.settings import AppConfig

_TARDIS_PREFIX = ("exchange", "symbol", "timestamp", "local_timestamp", "asks[0].price")
_DEPTH_HEADER = (
    "symbol",
    "timestamp",
    "first_update_id",
    "last_update_id",
    "side",
    "update_type",
    "price",
    "qty",
    "pu",
)


# Quote assets that end a Binance symbol name; a longest-first match.
QUOTE_ASSETS = ("FDUSD", "USDT", "BUSD", "USDC", "TUSD", "BTC", "ETH", "BNB")
# <SYMBOL>-<kind or kline interval>-<YYYY-MM[-DD]>, as data.binance.vision names its files
_ARCHIVE_NAME = re.compile(
    r"(?P<symbol>[A-Z0-9]{5,})-(?:aggTrades|trades|bookTicker|bookDepth|fundingRate|metrics"
    r"|markPriceKlines|indexPriceKlines|premiumIndexKlines|\d+[smhdwM])"
    r"-\d{4}-\d{2}(?:-\d{2})?(?:[._-].*)?"
)
_BINANCE_HEADERS = {fmt.columns for fmt in FORMATS.values()}


def name_symbol(file_name: str) -> str | None:
    """The symbol a file's name names, or None: a Binance archive name
    (BTCUSDT-aggTrades-2024-01-01.zip, BTCUSDT-1m-2024-01.csv), or a name whose first
    token (split on - _ . or space) is upper-case letters and digits ending in a quote
    asset (ETHUSDT_1m.csv)."""
    stem = file_name.rsplit("/", 1)[-1]
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    match = _ARCHIVE_NAME.fullmatch(stem)
    if match:
        return match.group("symbol")
    token = re.split(r"[-_. ]", stem, maxsplit=1)[0]
    if re.fullmatch(r"[A-Z0-9]+", token) and any(
        token.endswith(quote) and len(token) > len(quote) + 1 for quote in QUOTE_ASSETS
    ):
        return token
    return None


def _check_name(file_name: str, symbol: str) -> None:
    named = name_symbol(file_name)
    if named is not None and named != symbol:
        raise DataFormatError(
            f"{file_name}: the file name names symbol {named}, not {symbol} (--symbol): "
            f"ingest it with --symbol {named}, or rename the file if it holds {symbol}"
        )


def _check_symbol(values: list[str], symbol: str, name: str) -> None:
    found = {v.replace("/", "").replace("-", "").upper() for v in values}
    wrong = sorted(found - {symbol})
    if wrong:
        raise DataFormatError(f"{name}: holds symbol {', '.join(wrong)}, not {symbol} (--symbol)")


def _read_parquet(path: Path, symbol: str, bar_time: str, bar_seconds: int) -> tuple[str, pa.Table]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataFormatError(f"{path.name}: not a readable Parquet file ({exc})") from None
    if table.num_rows == 0:
        raise DataFormatError(f"{path.name}: empty file (no rows)")
    names = set(table.column_names)
    if "symbol" in names:
        _check_symbol(pc.unique(table.column("symbol")).to_pylist(), symbol, path.name)
    for kind in ("quotes", "trades", "bars"):
        if set(SCHEMAS[kind].names) <= names:
            return kind, table.select(SCHEMAS[kind].names)
    if is_ohlcv_header(table.column_names):
        return "bars", read_ohlcv_table(table, path.name, symbol, bar_time, bar_seconds)
    if "timestamp" not in names:
        raise DataFormatError(f"{path.name}: no ts_ns or timestamp column")
    ts_ns = pc.cast(table.column("timestamp"), pa.timestamp("ns", tz="UTC")).cast(pa.int64())
    if {"bid", "ask", "bid_size", "ask_size"} <= names:
        return "quotes", pa.table(
            {
                "ts_ns": ts_ns,
                "bid": table.column("bid"),
                "ask": table.column("ask"),
                "bid_size": table.column("bid_size"),
                "ask_size": table.column("ask_size"),
            }
        )
    if {"trade_id", "price", "quantity", "buyer_maker"} <= names:
        return "trades", pa.table(
            {
                "ts_ns": ts_ns,
                "trade_id": table.column("trade_id"),
                "price": table.column("price"),
                "qty": table.column("quantity"),
                "aggressor_side": _sides(table.column("buyer_maker"), path.name),
            }
        )
    raise DataFormatError(
        f"{path.name}: columns {', '.join(table.column_names)} match no known quotes, trades "
        "or OHLCV layout (OHLCV: a time column named datetime, timestamp, open_time, time or "
        "date, and open, high, low, close, volume)"
    )


def _sides(buyer_maker: pa.ChunkedArray, name: str) -> pa.Array:
    """buyer_maker as booleans or the strings True/False -> aggressor_side."""
    values = np.asarray(buyer_maker.to_pylist(), dtype=object)
    text = np.char.lower(values.astype(str))
    is_true, is_false = text == "true", text == "false"
    bad = ~(is_true | is_false)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataFormatError(
            f"{name}: row {row + 1}: buyer_maker {values[row]!r} is not True/False"
        )
    return pa.array(np.where(is_true, SELLER, BUYER).astype(np.int8))


def _read_tardis_snapshot(path: Path, rows: list[list[str]], symbol: str) -> pa.Table:
    header = rows[0]
    idx = {
        name: header.index(name)
        for name in (
            "symbol",
            "timestamp",
            "bids[0].price",
            "bids[0].amount",
            "asks[0].price",
            "asks[0].amount",
        )
    }
    data = rows[1:]
    if not data:
        raise DataFormatError(f"{path.name}: no data rows after the header")
    for lineno, row in enumerate(data, start=2):
        if len(row) != len(header):
            raise DataFormatError(
                f"{path.name}: line {lineno}: expected {len(header)} columns, got {len(row)}"
            )
    _check_symbol([r[idx["symbol"]] for r in data], symbol, path.name)

    def column(key: str) -> np.ndarray:
        try:
            return np.array([float(r[idx[key]]) for r in data])
        except ValueError as exc:
            raise DataFormatError(f"{path.name}: column {key}: {exc}") from None

    times = pa.array(column("timestamp").astype(np.int64))
    return pa.table(
        {
            "ts_ns": to_ns(times, path.name),
            "bid": column("bids[0].price"),
            "ask": column("asks[0].price"),
            "bid_size": column("bids[0].amount"),
            "ask_size": column("asks[0].amount"),
        }
    )


def _read_depth_snapshot(path: Path, rows: list[list[str]], symbol: str) -> pa.Table:
    """Binance L2 snapshot -> one top-of-book quote per snapshot timestamp."""
    data = rows[1:]
    if not data:
        raise DataFormatError(f"{path.name}: no data rows after the header")
    if any(r[5] != "snap" for r in data if len(r) > 5):
        raise DataFormatError(
            f"{path.name}: holds depth updates (update_type=set); they cannot become quotes "
            "without the snapshot they follow: ingest a depth snapshot or bookTicker file"
        )
    _check_symbol([r[0] for r in data], symbol, path.name)
    books: dict[int, dict[str, list[tuple[float, float]]]] = {}
    for lineno, row in enumerate(data, start=2):
        if len(row) != len(_DEPTH_HEADER):
            raise DataFormatError(f"{path.name}: line {lineno}: expected 9 columns, got {len(row)}")
        try:
            ts, price, qty = int(row[1]), float(row[6]), float(row[7])
        except ValueError as exc:
            raise DataFormatError(f"{path.name}: line {lineno}: {exc}") from None
        if row[4] not in ("a", "b"):
            raise DataFormatError(f"{path.name}: line {lineno}: side {row[4]!r} is not a or b")
        if qty > 0:
            books.setdefault(ts, {"a": [], "b": []})[row[4]].append((price, qty))
    out: dict[str, list[float]] = {k: [] for k in ("ts", "bid", "ask", "bid_size", "ask_size")}
    for ts, book in sorted(books.items()):
        if not book["a"] or not book["b"]:
            raise DataFormatError(f"{path.name}: snapshot at {ts} lacks a bid or an ask side")
        best_bid, best_ask = max(book["b"]), min(book["a"])
        for key, value in zip(
            out, (ts, best_bid[0], best_ask[0], best_bid[1], best_ask[1]), strict=True
        ):
            out[key].append(value)
    return pa.table(
        {
            "ts_ns": to_ns(pa.array(out.pop("ts"), type=pa.int64()), path.name),
            **{k: pa.array(v, type=pa.float64()) for k, v in out.items()},
        }
    )


def _header_cells(head: bytes) -> list[str]:
    first = head.lstrip().split(b"\n", 1)[0].decode("utf-8", "replace")
    return [cell.strip().strip('"') for cell in first.strip().lstrip("\ufeff").split(",")]


def _check_kline_options(kind: str, name: str, bar_time: str, bar_seconds: int) -> None:
    """Binance files carry their own time fields: the bar options are for OHLCV files."""
    if kind == "bars" and (bar_time != "open" or bar_seconds != LAKE_BAR_SECONDS):
        raise InputError(
            f"{name}: a Binance klines file is stamped by its open_time column and holds "
            "1-minute bars: --bar-time and --bar-seconds apply to generic OHLCV files only; "
            "leave them at their defaults"
        )


def _read_csv_payload(
    source: bytes | Path, head: bytes, name: str, symbol: str, bar_time: str, bar_seconds: int
) -> tuple[str, pa.Table]:
    """A CSV that is a generic OHLCV file or a Binance file, told apart by its header."""
    cells = _header_cells(head)
    if tuple(cells) not in _BINANCE_HEADERS and is_ohlcv_header(cells):
        return "bars", read_ohlcv_csv(source, name, symbol, bar_time, bar_seconds)
    if isinstance(source, bytes):
        kind, table = read_csv_bytes(source, name)
    else:
        kind, table = read_binance_file(source)
    _check_kline_options(kind, name, bar_time, bar_seconds)
    return kind, table


def read_local_file(
    path: Path,
    symbol: str,
    bar_time: str = "open",
    bar_seconds: int = LAKE_BAR_SECONDS,
) -> tuple[str, pa.Table]:
    """Parse one local file into (lake kind, table) after checking it belongs to symbol.
    `bar_time` (open or close) and `bar_seconds` say how a generic OHLCV file stamps its
    bars (see trading/data/ohlcv.py)."""
    check_bar_options(bar_time, bar_seconds)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path.name}: empty file")
    _check_name(path.name, symbol)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path, symbol, bar_time, bar_seconds)
    if suffix not in (".csv", ".zip"):
        raise InputError(
            f"{path.name}: unsupported file type {suffix or '(none)'}: use .csv, .zip or .parquet"
        )
    if suffix == ".zip":
        member, payload = zip_member(path.read_bytes(), path.name)
        _check_name(member, symbol)
        name = f"{path.name}:{member}"
        return _read_csv_payload(payload, payload[:65536], name, symbol, bar_time, bar_seconds)
    head = path.open("r", errors="replace").readline().strip()
    if tuple(head.split(",")[:5]) == _TARDIS_PREFIX or tuple(head.split(",")) == _DEPTH_HEADER:
        rows = [r for r in csv.reader(io.StringIO(path.read_text())) if r]
        if tuple(head.split(",")) == _DEPTH_HEADER:
            return "quotes", _read_depth_snapshot(path, rows, symbol)
        return "quotes", _read_tardis_snapshot(path, rows, symbol)
    with path.open("rb") as stream:
        start = stream.read(65536)
    return _read_csv_payload(path, start, path.name, symbol, bar_time, bar_seconds)


def ingest_files(
    config: AppConfig,
    lake: Lake,
    paths: list[Path],
    symbol: str,
    bar_time: str = "open",
    bar_seconds: int = LAKE_BAR_SECONDS,
) -> list[Written]:
    """Parse every file, then write them all in one batch (nothing lands on any error).
    Files holding the same day are merged (repeated keys counted as dropped, the later
    file's row kept): the counts returned are the rows the lake holds afterwards."""
    symbol = symbol.upper()
    config.symbol(symbol)
    check_bar_options(bar_time, bar_seconds)
    if not paths:
        raise InputError("no files given")
    parsed = [(path, *read_local_file(Path(path), symbol, bar_time, bar_seconds)) for path in paths]
    with lake.batch() as batch:
        for path, kind, table in parsed:
            batch.put(
                config.instruments.venue, symbol, kind, table, source=f"file:{Path(path).name}"
            )
    return batch.written
