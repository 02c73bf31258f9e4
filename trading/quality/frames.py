"""Lake files as they are on disk -> pandas frames with the columns the suites check.

The lake writer sorts rows and drops repeated keys, but other tools can write the lake, so
the gate reads each file without conforming it: an out-of-order row stays out of order.
Price jumps (`price_jumps`) are measured here, in file order, for the `price_jump` check.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from trading.data.lake import Lake, day_start_ns
from trading.data.schemas import SCHEMAS
from trading.errors import HmmTraderError
from trading.features.descriptor import FeatureSet, feature_kind, features_v1

if TYPE_CHECKING:
    from trading.settings import QualitySettings

FEATURES_KIND = feature_kind(features_v1())  # the lake kind of FEATURES_V1 files
# The prices whose jumps the gate checks, per kind (mid = (bid + ask) / 2).
JUMP_PRICES: dict[str, tuple[str, ...]] = {"quotes": ("bid", "ask", "mid"), "trades": ("price",)}
# A price is compared with the median of this many prices before it: a one-row spike is
# flagged once (the row after it is compared with the prices before the spike), and a
# steady trend moves the reference along with the price.
JUMP_REFERENCE_ROWS = 5
_MAD_TO_SIGMA = 1.4826  # median |x| of a normal sample x 1.4826 = its standard deviation


class BatchSchemaError(HmmTraderError):
    """A file the gate cannot validate: unreadable, a column missing or of the wrong type."""


def read_raw(path: Path, kind: str) -> pa.Table:
    """The rows of one quotes/trades file in file order, cast to the lake schema."""
    schema = SCHEMAS[kind]
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise BatchSchemaError(f"unreadable: {exc}") from exc
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise BatchSchemaError(f"missing column(s) {', '.join(missing)}")
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise BatchSchemaError(f"column types do not fit the lake schema: {exc}") from exc


def read_features_day(
    lake: Lake, venue: str, symbol: str, day: dt.date, expected: FeatureSet
) -> pa.Table:
    """One day of FEATURES_V1 as stored; a file of another feature set is a BatchSchemaError."""
    from trading.features.store import read_features  # imports the numba kernels

    try:
        table, _ = read_features(lake, venue, symbol, day, day, expected=expected)
    except (HmmTraderError, OSError, pa.ArrowInvalid) as exc:
        raise BatchSchemaError(str(exc)) from exc
    return table


def feature_table_columns(table: pa.Table, feature_set: FeatureSet) -> pa.Table:
    """ts_ns (int64) and the feature values (float64) of a feature table, in order."""
    names = ["ts_ns", *feature_set.columns, *feature_set.raw_columns]
    missing = [name for name in names if name not in table.column_names]
    if missing:
        raise BatchSchemaError(f"missing column(s) {', '.join(missing)}")
    schema = pa.schema([("ts_ns", pa.int64())] + [(n, pa.float64()) for n in names[1:]])
    try:
        return table.select(names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise BatchSchemaError(f"column types do not fit FEATURES_V1: {exc}") from exc


@dataclass(frozen=True)
class PriceJumps:
    """Per row of a price series, in file order."""

    ratio: np.ndarray  # |ln(price / reference)| / scale; 0 on a first row or a bad price
    reference: np.ndarray  # median of the JUMP_REFERENCE_ROWS prices before (NaN: none)
    scale_bp: np.ndarray  # the recent scale the move is measured in, in bp


def price_jumps(prices: np.ndarray, window_rows: int, floor_bp: float) -> PriceJumps:
    """How far each price jumps from the prices before it, in units of recent volatility.

    reference = the median of the JUMP_REFERENCE_ROWS prices before the row (the file's
    first such prices for the first rows, so a spike in row 0 is flagged in row 0);
    scale = max(floor_bp, 1.4826 x the median |log return| of the `window_rows` rows
    before it): a robust volatility that a few spikes in the window do not inflate, and
    the floor keeps a quiet tape (most tick returns are 0) from turning a tick into a jump.
    Prices that are not finite and > 0 are left out (ratio 0: positive_price and not_null
    report them) and skipped as neighbours.
    """
    values = np.asarray(prices, dtype=np.float64)
    valid = np.isfinite(values) & (values > 0)
    ratio = np.zeros(len(values))
    reference = np.full(len(values), np.nan)
    scale_bp = np.full(len(values), float(floor_bp))
    if valid.sum() < 2:
        return PriceJumps(ratio, reference, scale_bp)
    log_price = pd.Series(np.log(values[valid]))
    before = log_price.shift(1).rolling(JUMP_REFERENCE_ROWS, min_periods=1)
    log_reference = before.median().to_numpy(copy=True)
    head = float(log_price.iloc[: JUMP_REFERENCE_ROWS + 1].median())
    log_reference[:JUMP_REFERENCE_ROWS] = head
    steps = log_price.diff().abs().shift(1)
    recent = steps.rolling(window_rows, min_periods=1).median().fillna(0.0).to_numpy()
    scale = np.maximum(recent * _MAD_TO_SIGMA, floor_bp * 1e-4)
    ratio[valid] = np.abs(log_price.to_numpy() - log_reference) / scale
    reference[valid] = np.exp(log_reference)
    scale_bp[valid] = scale * 1e4
    return PriceJumps(ratio, reference, scale_bp)


def validation_frame(
    table: pa.Table, kind: str, day: dt.date, quality: QualitySettings
) -> pd.DataFrame:
    """A pandas frame (RangeIndex = row in the file) plus the derived columns:
    gap_s (seconds since the previous row, 0 on the first), day_offset_s (seconds since
    the file's UTC midnight), for quotes spread_bp ((ask - bid) / mid in bp) and mid, and
    for each price of JUMP_PRICES `<price>_jump` and `<price>_reference` (`price_jumps`)."""
    frame = table.to_pandas()
    ts = frame["ts_ns"].to_numpy()
    if len(ts):
        steps = np.diff(ts).astype(np.float64) / 1e9
        frame["gap_s"] = np.concatenate([[0.0], steps])
    else:
        frame["gap_s"] = np.zeros(0)
    frame["day_offset_s"] = (ts - day_start_ns(day)).astype(np.float64) / 1e9
    if kind == "quotes":
        bid, ask = frame["bid"].to_numpy(), frame["ask"].to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            frame["spread_bp"] = (ask - bid) / ((ask + bid) / 2) * 1e4
        frame["mid"] = (bid + ask) / 2
    if kind in JUMP_PRICES:
        limits = quality.quotes if kind == "quotes" else quality.trades
        for name in JUMP_PRICES[kind]:
            jumps = price_jumps(
                frame[name].to_numpy(), limits.jump_window_rows, limits.jump_floor_bp
            )
            frame[f"{name}_jump"] = jumps.ratio
            frame[f"{name}_reference"] = jumps.reference
    return frame.reset_index(drop=True)
