"""Lake files as they are on disk -> pandas frames with the columns the suites check.

The lake writer sorts rows and drops repeated keys, but other tools can write the lake, so
the gate reads each file without conforming it: an out-of-order row stays out of order.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from trading.data.lake import Lake, day_start_ns
from trading.data.schemas import SCHEMAS
from trading.errors import HmmTraderError
from trading.features.descriptor import FeatureSet, feature_kind, features_v1

FEATURES_KIND = feature_kind(features_v1())  # the lake kind of FEATURES_V1 files


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


def validation_frame(table: pa.Table, kind: str, day: dt.date) -> pd.DataFrame:
    """A pandas frame (RangeIndex = row in the file) plus the derived columns:
    gap_s (seconds since the previous row, 0 on the first), day_offset_s (seconds since
    the file's UTC midnight) and, for quotes, spread_bp ((ask - bid) / mid in bp)."""
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
    return frame.reset_index(drop=True)
