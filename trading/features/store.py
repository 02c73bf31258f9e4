"""Feature files in the lake: compute a date range, write one file per day, read back.

Files live at <lake>/venue=V/symbol=S/kind=features_v1/date=D/data.parquet (kind
`bars_v1` for BARS_V1). Every file carries its descriptor (name, ordered columns,
parameters, hash) in the Parquet metadata; reading with an `expected` descriptor raises
`FeatureVersionError` naming both versions when they differ.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trading.data.lake import Lake, Written, day_start_ns, split_by_day
from trading.errors import InputError
from trading.features.bars import bars_batch
from trading.features.descriptor import (
    BARS_V1,
    FEATURES_V1,
    METADATA_KEY,
    FeatureSet,
    FeatureVersionError,
    feature_kind,
)
from trading.features.v1 import compute_batch, rows_to_table, step_ns

_ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class RangeFeatures:
    symbol: str
    feature_set: FeatureSet
    table: pa.Table  # ready rows with ts in [start, end + 1 day)
    input_rows: int  # ticks (or bars) read, look-back included
    skipped: int  # invalid ticks the kernel ignored
    segments: int  # continuous stretches (gaps > max_gap restart the warm-up)
    emitted: int  # grid rows in range, warm-up included


def compute_range(
    lake: Lake,
    venue: str,
    symbol: str,
    start: dt.date,
    end: dt.date,
    fs: FeatureSet,
    lookback_days: int = 1,
) -> RangeFeatures:
    """Features for [start, end] (UTC days), warmed up on `lookback_days` before start
    where the lake has them, so a day's first hour is usable when yesterday exists."""
    first = start - lookback_days * _ONE_DAY
    lo, hi = day_start_ns(start), day_start_ns(end + _ONE_DAY)
    if fs.name == BARS_V1:
        bars = lake.read(venue, symbol, "bars", first, end)
        if not _has_rows_in(bars, lo, hi):
            raise InputError(
                f"no 1-minute bars for {symbol} between {start} and {end}: ingest klines "
                f"first (hmmtrader ingest archive --kind klines ...)"
            )
        rows = bars_batch(bars, fs)
        inputs, skipped, segments = bars.num_rows, 0, 0
    elif fs.name == FEATURES_V1:
        quotes = lake.read(venue, symbol, "quotes", first, end)
        if not _has_rows_in(quotes, lo, hi):
            bars_hint = (
                " (the lake has 1-minute bars for it: use --set bars_v1)"
                if lake.days(venue, symbol, "bars")
                else ""
            )
            raise InputError(
                f"no quotes for {symbol} between {start} and {end}: FEATURES_V1 needs "
                f"quotes and trades; ingest them first{bars_hint}"
            )
        trades = lake.read(venue, symbol, "trades", first, end)
        funding = (
            lake.read(venue, symbol, "funding", first - 2 * _ONE_DAY, end)
            if fs.params.get("funding")
            else None
        )
        if funding is not None and funding.num_rows == 0:
            raise InputError(
                f"the feature set asks for funding features but the lake has no funding "
                f"data for {symbol} up to {end}: ingest it or set features.funding: false"
            )
        result = compute_batch(fs, quotes, trades, funding, until_ns=hi)
        rows, skipped, segments = result.rows, result.skipped, result.segments
        inputs = quotes.num_rows + trades.num_rows
    else:
        raise FeatureVersionError(f"unknown feature set {fs.version}")
    stamps = rows[:, 0].astype(np.int64) * step_ns(fs)
    rows = rows[(stamps >= lo) & (stamps < hi)]
    table = rows_to_table(fs, rows, ready_only=True)
    return RangeFeatures(symbol, fs, table, inputs, skipped, segments, len(rows))


def _has_rows_in(table: pa.Table, lo: int, hi: int) -> bool:
    if table.num_rows == 0:
        return False
    ts = table.column("ts_ns").to_numpy()
    return bool(((ts >= lo) & (ts < hi)).any())


def write_features(lake: Lake, venue: str, symbol: str, result: RangeFeatures) -> list[Written]:
    """One file per UTC day, all-or-nothing, each with the descriptor in its metadata."""
    fs = result.feature_set
    meta = {METADATA_KEY: fs.to_json().encode(), b"hmmtrader.source": b"hmmtrader features"}
    written = []
    with lake.batch() as batch:
        for day, rows in split_by_day(result.table):
            written.append(batch.put_derived(venue, symbol, feature_kind(fs), day, rows, meta))
    return written


def descriptor_of(path: Path) -> FeatureSet:
    meta = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in meta:
        raise FeatureVersionError(
            f"{path} has no feature-set descriptor: it was not written by hmmtrader features"
        )
    return FeatureSet.from_json(meta[METADATA_KEY])


def read_features(
    lake: Lake,
    venue: str,
    symbol: str,
    start: dt.date,
    end: dt.date,
    expected: FeatureSet | None = None,
    name: str = FEATURES_V1,
) -> tuple[pa.Table, FeatureSet]:
    """Feature rows of [start, end]; every file must carry the same descriptor, and the
    `expected` one if given."""
    kind = (expected.name if expected else name).lower()
    days = [d for d in lake.days(venue, symbol, kind) if start <= d <= end]
    if not days:
        raise InputError(
            f"no {kind.upper()} files for {symbol} between {start} and {end}: run "
            f"`hmmtrader features --symbols {symbol} --start {start} --end {end}` first"
        )
    tables, found = [], None
    for day in days:
        path = lake.path(venue, symbol, kind, day)
        fs = descriptor_of(path)
        if expected is not None:
            expected.require(fs, f"features in {path}")
        elif found is not None:
            found.require(fs, f"features in {path}")
        found = fs
        tables.append(pq.read_table(path).replace_schema_metadata(None))
    assert found is not None
    table = pa.concat_tables(tables)
    missing = [c for c in ["ts_ns", *found.columns] if c not in table.column_names]
    if missing:
        raise FeatureVersionError(f"{kind} files lack column(s) {', '.join(missing)}")
    return table, found


def feature_matrix(table: pa.Table, fs: FeatureSet) -> np.ndarray:
    """The model input (rows x fs.columns, in descriptor order) of a feature table."""
    return np.column_stack([table.column(c).to_numpy() for c in fs.columns]).astype(np.float64)
