"""Lake files as they are on disk -> pandas frames with the columns the suites check.

The lake writer sorts rows and drops repeated keys, but other tools can write the lake, so
the gate reads each file without conforming it: an out-of-order row stays out of order.
Price jumps (`price_jumps`) are measured here, in file order, for the `price_jump` check,
and the day's coverage (`day_coverage`) for the `coverage` check.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from trading.data.lake import Lake, day_of, day_start_ns
from trading.data.schemas import SCHEMAS
from trading.errors import HmmTraderError
from trading.features.descriptor import BARS_V1, FeatureSet, feature_kind, features_v1

if TYPE_CHECKING:
    from trading.settings import BarLimits, QualitySettings, QuoteLimits, TradeLimits

FEATURES_KIND = feature_kind(features_v1())  # the lake kind of FEATURES_V1 files
# The prices whose jumps the gate checks, per kind (mid = (bid + ask) / 2).
# Bars: the close only; a wick (high, low) can legitimately move further than a close.
JUMP_PRICES: dict[str, tuple[str, ...]] = {
    "quotes": ("bid", "ask", "mid"),
    "trades": ("price",),
    "bars": ("close",),
}
BAR_NS = 60 * 1_000_000_000  # the lake's bars are 1-minute bars (trading.data.schemas)
DAY_NS = 86_400 * 1_000_000_000
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


def feature_bar_s(feature_set: FeatureSet) -> float | None:
    """Seconds between the rows of a bar feature set (BARS_V1: one row per bar, stamped at
    its close); None for a set on the tick grid (FEATURES_V1)."""
    return float(feature_set.params["bar_s"]) if feature_set.name == BARS_V1 else None


def read_features_day(
    lake: Lake, venue: str, symbol: str, day: dt.date, expected: FeatureSet
) -> pa.Table:
    """One day of the `expected` set's features as stored (its lake kind: features_v1,
    bars_v1); a file of another feature set is a BatchSchemaError."""
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
        raise BatchSchemaError(f"column types do not fit {feature_set.name}: {exc}") from exc


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


@dataclass(frozen=True)
class Coverage:
    """How much of a day's expected time one symbol/kind file covers."""

    fraction: float  # in [0, 1]
    covered_s: float  # ticks, features: seconds without a silence above max_gap_s
    expected_s: float  # the part of the day data can cover (`expected_seconds`)
    basis: str  # what expected_s is: "the UTC day", "the 3.0 h synthetic day", ...
    bars: int | None = None  # bars only: distinct bars present
    expected_bars: int | None = None

    def describe(self, min_coverage: float) -> str:
        """The issue value, e.g. "1 of 1,440 bars of the UTC day (0.07 %, min_coverage
        90 %)" or "46 s of the UTC day's 24.0 h covered (0.05 %, min_coverage 10 %)"."""
        share = f"({self.fraction:.2%}, min_coverage {min_coverage:.0%})".replace("%", " %")
        if self.bars is not None:
            return f"{self.bars:,} of {self.expected_bars:,} bars of {self.basis} {share}"
        return (
            f"{_duration(self.covered_s)} of {self.basis}'s {_duration(self.expected_s)} "
            f"covered {share}"
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def expected_seconds(
    day: dt.date, day_seconds: int | None, now_ns: int, from_ns: int | None = None
) -> tuple[float, str]:
    """(seconds, basis): the part of `day` its data can cover. The UTC day, or a synthetic
    day's own length (`day_seconds`, from the file's metadata: a 3-hour test day); today
    only up to now. A day in the future is not cut (its data is synthetic or mis-dated).
    With `from_ns` (the file's first row, for a day whose data could only begin then:
    today's, or the first day a recording or download holds) the part starts there."""
    start = day_start_ns(day)
    length, basis = 86_400.0, "the UTC day"
    if day_seconds is not None:
        length, basis = float(day_seconds), f"the {day_seconds / 3600:.1f} h synthetic day"
    if start <= now_ns < start + DAY_NS and (now_ns - start) / 1e9 < length:
        length, basis = (now_ns - start) / 1e9, "today so far"
    if from_ns is not None and start < from_ns < start + int(length * 1e9):
        length -= (from_ns - start) / 1e9
        since = dt.datetime.fromtimestamp(from_ns / 1e9, dt.UTC)
        basis = f"{basis} (from its first row, {since:%H:%M:%S} UTC)"
    return max(length, 1.0), basis


def is_today(day: dt.date, now_ns: int) -> bool:
    return day_of(now_ns) == day


def day_coverage(
    ts_ns: np.ndarray,
    kind: str,
    day: dt.date,
    expected: tuple[float, str],
    max_gap_s: float,
    bar_s: float | None = None,
    from_ns: int | None = None,
) -> Coverage:
    """The share of the expected time (`expected_seconds`) the rows cover, whatever their
    order. Bars, and features of bars (`bar_s` given: BARS_V1, one row per bar): distinct
    bars present / bars expected (1-minute bars unless `bar_s` says otherwise). Ticks and
    features on the tick grid: the time between consecutive rows, each step counted up to
    `max_gap_s` (a silence longer than the kind's gap limit is not covered), over the
    expected time; so a day whose rows span 46 s covers 46 s. `from_ns`: the expected time
    starts there (see `expected_seconds`), not at midnight, and the last row counts up to
    `max_gap_s` after it."""
    expected_s, basis = expected
    start = day_start_ns(day) if from_ns is None else from_ns
    end = start + int(expected_s * 1e9)
    ts = np.asarray(ts_ns, dtype=np.int64)
    ts = np.unique(ts[(ts >= start) & (ts < end)])
    if kind == "bars" or bar_s is not None:
        bar_s = bar_s or BAR_NS / 1e9
        expected_bars = max(1, int(expected_s // bar_s))
        present = len(np.unique(ts // round(bar_s * 1e9)))
        fraction = min(1.0, present / expected_bars)
        return Coverage(fraction, present * bar_s, expected_s, basis, present, expected_bars)
    gap_ns = int(max_gap_s * 1e9)
    steps = np.minimum(np.diff(ts), gap_ns).astype(np.float64)
    # a day measured from its first row (today's, a recording's first): its last row stands
    # up to max_gap_s after it (a one-row snapshot taken a moment ago covers that moment)
    tail = min(gap_ns, end - int(ts[-1])) if len(ts) and from_ns is not None else 0
    covered = (float(steps.sum()) + tail) / 1e9
    return Coverage(min(1.0, covered / expected_s), covered, expected_s, basis)


def validation_frame(
    table: pa.Table,
    kind: str,
    day: dt.date,
    quality: QualitySettings,
    expected: tuple[float, str] | None = None,
    feature_set: FeatureSet | None = None,
    from_ns: int | None = None,
) -> pd.DataFrame:
    """A pandas frame (RangeIndex = row in the file) plus the derived columns:
    gap_s (seconds since the previous row, 0 on the first), day_offset_s (seconds since
    the file's UTC midnight), for quotes spread_bp ((ask - bid) / mid in bp) and mid, for
    bars gap_bars (bars missing since the previous bar) and ohlc_ok (high >= max(open,
    close) and low <= min(open, close); True where a price is missing: not_null reports
    it), for each price of JUMP_PRICES `<price>_jump` and `<price>_reference`
    (`price_jumps`), and coverage (the day's `Coverage.fraction` on every row; the
    `Coverage` itself in `frame.attrs["coverage"]`). `expected`: `expected_seconds` of
    the day (default: the UTC day, up to now for today). `feature_set`: the set of a
    features file (default FEATURES_V1); the coverage of BARS_V1 counts its bars."""
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
    if kind == "bars":
        frame["gap_bars"] = frame["gap_s"] / 60.0 - 1.0
        frame.loc[0:0, "gap_bars"] = 0.0
        opens, closes = frame["open"].to_numpy(), frame["close"].to_numpy()
        with np.errstate(invalid="ignore"):
            body_high, body_low = np.fmax(opens, closes), np.fmin(opens, closes)
            bad = (frame["high"].to_numpy() < body_high) | (frame["low"].to_numpy() > body_low)
        frame["ohlc_ok"] = ~bad
    if kind in JUMP_PRICES:
        by_kind: dict[str, QuoteLimits | TradeLimits | BarLimits] = {
            "quotes": quality.quotes,
            "trades": quality.trades,
            "bars": quality.bars,
        }
        limits = by_kind[kind]
        for name in JUMP_PRICES[kind]:
            jumps = price_jumps(
                frame[name].to_numpy(), limits.jump_window_rows, limits.jump_floor_bp
            )
            frame[f"{name}_jump"] = jumps.ratio
            frame[f"{name}_reference"] = jumps.reference
    if expected is None:
        expected = expected_seconds(day, None, time.time_ns())
    max_gap_s = {
        "quotes": quality.quotes.max_gap_s,
        "trades": quality.trades.max_gap_s,
        "features": quality.features.max_gap_s,
    }.get(kind, 60.0)  # bars: counted, not timed
    bar_s = feature_bar_s(feature_set) if kind == "features" and feature_set else None
    coverage = day_coverage(ts, kind, day, expected, max_gap_s, bar_s, from_ns)
    frame["coverage"] = coverage.fraction
    frame = frame.reset_index(drop=True)
    frame.attrs["coverage"] = coverage
    return frame
