"""Training data for the regime model: feature rows from the lake as contiguous
sequences, the walk-forward split with an embargo, and forward-return labels."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trading.data.lake import Lake
from trading.errors import HmmTraderError, InputError
from trading.features.descriptor import BARS_V1, FEATURES_V1, FeatureSet, feature_kind
from trading.features.store import read_features
from trading.features.v1 import step_ns
from trading.regime.config import PolicySettings

DOWN, FLAT, UP = 0, 1, 2  # policy classes
CLASS_NAMES = ("DOWN", "FLAT", "UP")


class TrainingDataError(HmmTraderError):
    """The feature rows cannot be used for training (NaN, too few rows, ...)."""


def row_columns(fs: FeatureSet) -> list[str]:
    """A model input row, in order: standardized columns, then raw_ columns."""
    return [*fs.columns, *fs.raw_columns]


@dataclass(frozen=True)
class Segment:
    """A contiguous stretch of one symbol's rows (consecutive grid steps)."""

    symbol: str
    ts_ns: np.ndarray
    X: np.ndarray  # rows x row_columns(fs)


@dataclass(frozen=True)
class Part:
    segments: list[Segment]

    @property
    def rows(self) -> int:
        return sum(len(s.ts_ns) for s in self.segments)

    def stacked(self) -> tuple[np.ndarray, list[int], np.ndarray]:
        """All rows, the segment lengths and a reset flag at each segment start."""
        if not self.segments:
            return np.zeros((0, 0)), [], np.zeros(0, dtype=bool)
        X = np.concatenate([s.X for s in self.segments])
        lengths = [len(s.ts_ns) for s in self.segments]
        resets = np.zeros(len(X), dtype=bool)
        resets[np.cumsum([0, *lengths[:-1]])] = True
        return X, lengths, resets

    def ts(self) -> np.ndarray:
        return np.concatenate([s.ts_ns for s in self.segments]) if self.segments else np.zeros(0)


@dataclass(frozen=True)
class Dataset:
    feature_set: FeatureSet
    symbols: list[str]
    start: dt.date
    end: dt.date
    step_ns: int
    frames: dict[str, tuple[np.ndarray, np.ndarray]]  # symbol -> (ts_ns, X)

    @property
    def rows(self) -> int:
        return sum(len(ts) for ts, _ in self.frames.values())

    def part(self, lo_ns: int, hi_ns: int) -> Part:
        """Rows with lo_ns <= ts < hi_ns, cut into contiguous segments."""
        segments = []
        for symbol, (ts, X) in self.frames.items():
            a, b = np.searchsorted(ts, [lo_ns, hi_ns])
            segments.extend(contiguous(symbol, ts[a:b], X[a:b], self.step_ns))
        return Part(segments)


def contiguous(symbol: str, ts: np.ndarray, X: np.ndarray, step: int) -> list[Segment]:
    if len(ts) == 0:
        return []
    breaks = np.flatnonzero(np.diff(ts) != step) + 1
    bounds = [0, *breaks.tolist(), len(ts)]
    return [Segment(symbol, ts[a:b], X[a:b]) for a, b in itertools.pairwise(bounds)]


def check_finite(X: np.ndarray, columns: Sequence[str], where: str) -> None:
    bad = ~np.isfinite(X)
    if bad.any():
        counts = bad.sum(axis=0)
        detail = ", ".join(f"{columns[i]} ({int(n)})" for i, n in enumerate(counts) if n)
        raise TrainingDataError(
            f"{where}: non-finite feature values in {detail}; recompute them with "
            "`hmmtrader features` and check them with `hmmtrader validate`"
        )


def load_dataset(
    lake: Lake,
    venue: str,
    symbols: Sequence[str],
    start: dt.date,
    end: dt.date,
    expected: FeatureSet,
) -> Dataset:
    """Feature rows of every symbol over [start, end]; the files must carry `expected`."""
    columns = row_columns(expected)
    frames = {}
    for symbol in symbols:
        _require_files(lake, venue, symbol, start, end, expected)
        table, _ = read_features(lake, venue, symbol, start, end, expected=expected)
        ts = table.column("ts_ns").to_numpy().astype(np.int64)
        X = np.column_stack([table.column(c).to_numpy() for c in columns]).astype(np.float64)
        check_finite(X, columns, f"{symbol} {start}..{end}")
        if len(ts) > 1 and not (np.diff(ts) > 0).all():
            raise TrainingDataError(f"{symbol}: feature timestamps are not increasing")
        frames[symbol] = (ts, X)
    return Dataset(expected, list(symbols), start, end, step_ns(expected), frames)


def _require_files(
    lake: Lake, venue: str, symbol: str, start: dt.date, end: dt.date, expected: FeatureSet
) -> None:
    """No feature file of the expected set in range: say which command makes them, and
    whether the lake holds the other set (train with --feature-set then)."""
    kind = feature_kind(expected)
    if any(start <= d <= end for d in lake.days(venue, symbol, kind)):
        return
    others = [
        other
        for other in (FEATURES_V1, BARS_V1)
        if other != expected.name
        and any(start <= d <= end for d in lake.days(venue, symbol, other.lower()))
    ]
    hint = "".join(
        f"; the lake has {other} files for it: train on them with "
        f"`hmmtrader train --feature-set {other.lower()} ...`"
        for other in others
    )
    raise InputError(
        f"no {expected.name} files for {symbol} between {start} and {end}: run "
        f"`hmmtrader features --set {kind} --symbols {symbol} --start {start} --end {end}` "
        f"first{hint}"
    )


@dataclass(frozen=True)
class Split:
    train: Part
    validation: Part
    train_end_ns: int  # exclusive
    validation_start_ns: int


def walk_forward(data: Dataset, validation_fraction: float, embargo_s: float) -> Split:
    """Fit on the earlier part, validate on the last `validation_fraction` of the time
    range; rows in the embargo between them are used by neither."""
    t0 = min(int(ts[0]) for ts, _ in data.frames.values() if len(ts))
    t1 = max(int(ts[-1]) for ts, _ in data.frames.values() if len(ts)) + data.step_ns
    val_start = t1 - int((t1 - t0) * validation_fraction)
    val_start -= (val_start - t0) % data.step_ns
    train_end = val_start - int(embargo_s * 1e9)
    return Split(data.part(t0, train_end), data.part(val_start, t1), train_end, val_start)


def forward_labels(
    segment: Segment, fs: FeatureSet, policy: PolicySettings, step: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: class (DOWN/FLAT/UP, -1 where the horizon leaves the segment), forward
    return in bp, and the round-trip cost in bp it must beat. The horizon is
    policy.horizon_bars for BARS_V1 (cost: fee and slippage on both sides), horizon_s for
    FEATURES_V1 (cost: the row's spread plus extra_cost_bp)."""
    n = len(segment.ts_ns)
    h = policy.horizon_steps(fs.name, step / 1e9)
    base = list(fs.base)
    raw = len(fs.columns)
    if fs.name == BARS_V1:
        log_price = np.cumsum(segment.X[:, raw + base.index("log_return_bp")]) / 1e4
        cost = np.full(n, policy.round_trip_bp())
    else:
        log_price = np.log(segment.X[:, raw + base.index("mid")])
        cost = segment.X[:, raw + base.index("spread_bp")] + policy.extra_cost_bp
    fwd = np.full(n, np.nan)
    if n > h:
        fwd[: n - h] = (log_price[h:] - log_price[:-h]) * 1e4
    y = np.full(n, -1, dtype=np.int64)
    known = np.isfinite(fwd)
    y[known] = FLAT
    y[known & (fwd > cost)] = UP
    y[known & (fwd < -cost)] = DOWN
    return y, fwd, cost
