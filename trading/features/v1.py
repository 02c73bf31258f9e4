"""FEATURES_V1 in its two forms, both running `trading.features.kernel`.

- `OnlineFeatures`: O(1) state per symbol (fixed-size arrays, independent of how long it
  runs); feed it one tick at a time; it returns the grid rows each tick completes.
- `compute_batch` / `features_for_range`: the same kernel over whole lake arrays.

A kernel row holds: grid index (ts_ns = index * grid_ns), ready, raw_<feature>...,
<feature>... (standardized); `output_columns(fs)` names them. Rows with ready = 0 are the warm-up: their standardized
values are NaN; feature files keep only ready rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from trading.errors import DataFormatError
from trading.features import kernel
from trading.features.descriptor import BARS_V1, FEATURES_V1, FeatureParams, FeatureSet, features_v1
from trading.features.kernel import EV_CLOCK, EV_FUNDING, EV_QUOTE, EV_TRADE


def output_columns(fs: FeatureSet) -> list[str]:
    return ["step", "ready", *fs.raw_columns, *fs.columns]


@dataclass(frozen=True, slots=True)
class FeatureRow:
    """One grid step of one symbol, as the online form emits it."""

    ts_ns: int  # grid time; the row uses ticks with ts <= ts_ns only
    ready: bool  # False during warm-up (values are NaN then)
    values: np.ndarray  # standardized, in FeatureSet.columns order (the model input)
    raw: np.ndarray  # unstandardized, same order


_NONE: Sequence[FeatureRow] = ()


def _params_of(fs: FeatureSet) -> FeatureParams:
    if fs.name != FEATURES_V1:
        fs.require(features_v1(), "the requested feature set")
    return fs.feature_params()


class OnlineFeatures:
    """The online form for one symbol: tick in, completed grid rows out."""

    def __init__(self, fs: FeatureSet | None = None) -> None:
        self.feature_set = fs or features_v1()
        params = _params_of(self.feature_set)
        self._si, self._sf = kernel.make_state(params)
        # one event can complete at most max_gap/grid + 2 rows (a longer gap closes the
        # segment after one row)
        capacity = params.steps(params.max_gap_s) + 4
        self._out = np.zeros((capacity, kernel.row_width(self._si)))
        self._nfeat = len(self.feature_set.columns)
        self._grid = int(self._si[kernel.I_GRID])

    def _emit(self, n: int) -> Sequence[FeatureRow]:
        if n == 0:
            return _NONE
        out, nf, grid = self._out, self._nfeat, self._grid
        return [
            FeatureRow(
                int(out[i, 0]) * grid,
                out[i, 1] == 1.0,
                out[i, 2 + nf : 2 + 2 * nf].copy(),
                out[i, 2 : 2 + nf].copy(),
            )
            for i in range(n)
        ]

    def on_quote(
        self, ts_ns: int, bid: float, ask: float, bid_size: float, ask_size: float
    ) -> Sequence[FeatureRow]:
        n = kernel.process(
            self._si, self._sf, EV_QUOTE, ts_ns, bid, ask, bid_size, ask_size, self._out
        )
        return self._emit(n)

    def on_trade(
        self, ts_ns: int, price: float, qty: float, aggressor_side: int
    ) -> Sequence[FeatureRow]:
        n = kernel.process(
            self._si, self._sf, EV_TRADE, ts_ns, price, qty, float(aggressor_side), 0.0, self._out
        )
        return self._emit(n)

    def on_funding(self, ts_ns: int, rate: float) -> Sequence[FeatureRow]:
        n = kernel.process(self._si, self._sf, EV_FUNDING, ts_ns, rate, 0.0, 0.0, 0.0, self._out)
        return self._emit(n)

    def flush(self, until_ns: int) -> Sequence[FeatureRow]:
        """The clock reached until_ns: emit the rows stamped before it."""
        n = kernel.process(self._si, self._sf, EV_CLOCK, until_ns, 0.0, 0.0, 0.0, 0.0, self._out)
        return self._emit(n)

    @property
    def skipped(self) -> int:
        """Invalid ticks ignored so far (non-finite, crossed, non-positive)."""
        return int(self._si[kernel.I_SKIPPED])

    @property
    def state_bytes(self) -> int:
        return int(self._si.nbytes + self._sf.nbytes + self._out.nbytes)


@dataclass(frozen=True)
class BatchResult:
    rows: np.ndarray  # every emitted row, warm-up included
    skipped: int  # invalid ticks ignored
    segments: int  # continuous stretches (a gap longer than max_gap_s starts a new one)


def _col(table: pa.Table | None, name: str, dtype: type) -> np.ndarray:
    if table is None or table.num_rows == 0:
        return np.zeros(0, dtype=dtype)
    return np.ascontiguousarray(table.column(name).to_numpy(), dtype=dtype)


def _check_sorted(ts: np.ndarray, what: str) -> None:
    if len(ts) > 1 and bool((np.diff(ts) < 0).any()):
        bad = int(np.argmax(np.diff(ts) < 0)) + 1
        raise DataFormatError(
            f"{what}: timestamps go backwards at row {bad}; "
            "run `hmmtrader validate` on this range and re-ingest the day"
        )


def compute_batch(
    fs: FeatureSet,
    quotes: pa.Table,
    trades: pa.Table | None = None,
    funding: pa.Table | None = None,
    until_ns: int = 0,
) -> BatchResult:
    """Every grid row from lake tables (quotes: ts_ns,bid,ask,bid_size,ask_size; trades:
    ts_ns,price,qty,aggressor_side; funding: ts_ns,rate), flushed at until_ns if > 0."""
    params = _params_of(fs)
    si, sf = kernel.make_state(params)
    q_ts = _col(quotes, "ts_ns", np.int64)
    t_ts = _col(trades, "ts_ns", np.int64)
    f_ts = _col(funding, "ts_ns", np.int64)
    for ts, what in ((q_ts, "quotes"), (t_ts, "trades"), (f_ts, "funding")):
        _check_sorted(ts, what)
    stamps = [a[[0, -1]] for a in (q_ts, t_ts, f_ts) if len(a)]
    if not stamps:
        return BatchResult(np.zeros((0, kernel.row_width(si))), 0, 0)
    first = int(min(s[0] for s in stamps))
    last = max(int(max(s[-1] for s in stamps)), until_ns)
    grid = int(si[kernel.I_GRID])
    capacity = (last + grid - 1) // grid - (first + grid - 1) // grid + 2
    out = np.empty((capacity, kernel.row_width(si)))
    n = kernel.run_batch(
        si,
        sf,
        q_ts,
        _col(quotes, "bid", np.float64),
        _col(quotes, "ask", np.float64),
        _col(quotes, "bid_size", np.float64),
        _col(quotes, "ask_size", np.float64),
        t_ts,
        _col(trades, "price", np.float64),
        _col(trades, "qty", np.float64),
        _col(trades, "aggressor_side", np.float64),
        f_ts,
        _col(funding, "rate", np.float64),
        until_ns,
        out,
    )
    return BatchResult(out[:n], int(si[kernel.I_SKIPPED]), int(si[kernel.I_SEGMENTS]))


def step_ns(fs: FeatureSet) -> int:
    """Nanoseconds between rows: the grid of FEATURES_V1, the bar length of BARS_V1."""
    seconds = fs.bar_params().bar_s if fs.name == BARS_V1 else _params_of(fs).grid_s
    return round(seconds * kernel.NS)


def rows_to_table(fs: FeatureSet, rows: np.ndarray, ready_only: bool = True) -> pa.Table:
    """Feature-file layout: ts_ns, standardized columns (model inputs), raw_ columns."""
    if ready_only:
        rows = rows[rows[:, 1] == 1.0]
    names = output_columns(fs)
    index = {name: i for i, name in enumerate(names)}
    grid = step_ns(fs)
    data: dict[str, np.ndarray] = {"ts_ns": rows[:, 0].astype(np.int64) * grid}
    for name in [*fs.columns, *fs.raw_columns]:
        data[name] = np.ascontiguousarray(rows[:, index[name]])
    return pa.table(data)


def replay_online(
    online: OnlineFeatures,
    quotes: pa.Table,
    trades: pa.Table | None = None,
    funding: pa.Table | None = None,
    until_ns: int = 0,
) -> list[FeatureRow]:
    """Feed lake tables to the online form one tick at a time, in the batch form's event
    order (by time; ties: funding, quote, trade), then flush at until_ns if > 0."""
    q = [_col(quotes, c, float) for c in ("bid", "ask", "bid_size", "ask_size")]
    t = [_col(trades, c, float) for c in ("price", "qty", "aggressor_side")]
    f_rate = _col(funding, "rate", float)
    streams = [
        (_col(funding, "ts_ns", np.int64).tolist(), 0),
        (_col(quotes, "ts_ns", np.int64).tolist(), 1),
        (_col(trades, "ts_ns", np.int64).tolist(), 2),
    ]
    events = sorted((ts, kind, i) for stamps, kind in streams for i, ts in enumerate(stamps))
    rows: list[FeatureRow] = []
    for ts, kind, i in events:
        if kind == 1:
            rows.extend(online.on_quote(ts, q[0][i], q[1][i], q[2][i], q[3][i]))
        elif kind == 2:
            rows.extend(online.on_trade(ts, t[0][i], t[1][i], int(t[2][i])))
        else:
            rows.extend(online.on_funding(ts, float(f_rate[i])))
    if until_ns > 0:
        rows.extend(online.flush(until_ns))
    return rows


def online_to_array(rows: Sequence[FeatureRow], grid_ns: int) -> np.ndarray:
    """Online rows in the batch row layout (grid index, ready, raw..., standardized...)."""
    if not rows:
        return np.zeros((0, 2))
    return np.array(
        [[r.ts_ns // grid_ns, float(r.ready), *r.raw, *r.values] for r in rows], dtype=np.float64
    )
