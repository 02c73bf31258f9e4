"""BARS_V1: features from 1-minute klines, for history where no ticks exist.

Per bar (stamped at its close, open + bar_s, so a row never uses a bar still forming):
  log_return_bp  ln(close / previous close)
  parkinson_bp   sqrt(mean((ln high/low)^2) / (4 ln 2)) over vol_window bars
  volume_z       z-score of ln(1 + volume) against the previous volume_window bars
  autocorr_1     lag-1 autocorrelation of bar returns over autocorr_window bars
each then standardized against the previous standardize_window rows (past only), as in
FEATURES_V1 and with the same compiled helpers. One kernel serves the batch form
(`bars_batch`) and the online form (`OnlineBarFeatures.on_bar`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from trading.errors import DataFormatError
from trading.features import kernel as k
from trading.features.descriptor import BARS_V1, BarParams, FeatureSet, bars_v1
from trading.features.v1 import FeatureRow

_LN2x4 = 4.0 * math.log(2.0)
I_BAR_NS = k.I_GRID
I_MAX_GAP = k.I_MAX_GAP
I_LAST_OPEN = k.I_LAST_TS
I_OPEN_SEG = k.I_CUR  # 1 while a segment is open
F_PREV_CLOSE = k.F_PREV_MID
F_R1 = k.F_R1
F_SUM_PK = k.F_SUM_V
F_SUM_VOL = k.F_SUM_F  # 2 slots: sum, sum of squares of ln(1 + volume)
F_SUM_AC = k.F_SUM_A  # 2 slots used: r * r1, r * r
N_BAR_FEATURES = 4


def raw_ready_bars(p: BarParams) -> int:
    """Bars a segment needs before its raw features are complete (standardizing starts)."""
    return max(p.vol_window, p.volume_window + 1, p.autocorr_window + 1) + 1


def make_bar_state(fs: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
    p = fs.bar_params()
    nfeat = N_BAR_FEATURES
    si = np.zeros(k.I_SIZE, dtype=np.int64)
    si[I_BAR_NS] = round(p.bar_s * k.NS)
    si[I_MAX_GAP] = round(p.bar_s * p.max_gap_bars * k.NS)
    si[k.I_NV], si[k.I_NF], si[k.I_NA] = p.vol_window, p.volume_window, p.autocorr_window
    si[k.I_NZ] = p.standardize_window
    si[k.I_MIN_Z] = p.standardize_min
    si[k.I_RAW_READY] = raw_ready_bars(p)
    si[k.I_NFEAT] = nfeat
    off = k.F_HEADER
    si[k.I_OFF_V] = off
    off += p.vol_window
    si[k.I_OFF_F] = off
    off += 2 * p.volume_window
    si[k.I_OFF_A] = off
    off += 2 * p.autocorr_window
    si[k.I_OFF_Z] = off
    off += p.standardize_window * nfeat
    si[k.I_OFF_ZS] = off
    off += 2 * nfeat
    si[k.I_OFF_ZSHIFT] = off
    off += nfeat
    si[k.I_OFF_SCRATCH] = off
    off += k.SCRATCH_VECTOR + 2 * nfeat
    sf = np.zeros(off, dtype=np.float64)
    sf[k.F_ZCLIP] = p.z_clip
    return si, sf


@k._kernel
def _bar(
    si: np.ndarray,
    sf: np.ndarray,
    ts_open: int,
    high: float,
    low: float,
    close: float,
    volume: float,
    out: np.ndarray,
    n: int,
) -> int:
    ok = low > 0.0 and high >= low and close > 0.0 and volume >= 0.0
    if not (ok and math.isfinite(high) and math.isfinite(close) and math.isfinite(volume)):
        si[k.I_SKIPPED] += 1
        return n
    if si[I_OPEN_SEG] == 0 or ts_open - si[I_LAST_OPEN] > si[I_MAX_GAP]:
        k._reset_segment(si, sf)
        si[I_OPEN_SEG] = 1
        si[k.I_SEGMENTS] += 1
    elif ts_open <= si[I_LAST_OPEN]:  # repeated or late bar: ignored
        si[k.I_SKIPPED] += 1
        return n
    si[I_LAST_OPEN] = ts_open
    nfeat = si[k.I_NFEAT]
    r = math.log(close / sf[F_PREV_CLOSE]) * 1e4 if si[k.I_HAS_PREV_MID] == 1 else 0.0
    sf[F_PREV_CLOSE] = close
    si[k.I_HAS_PREV_MID] = 1

    hl = math.log(high / low)
    vec = si[k.I_OFF_SCRATCH]
    sf[vec] = hl * hl / _LN2x4
    k._push_vector(si, sf, k.I_POS_V, si[k.I_OFF_V], si[k.I_NV], F_SUM_PK, 1)
    steps = si[k.I_STEPS]
    nv = min(steps + 1, si[k.I_NV])
    parkinson = math.sqrt(max(sf[F_SUM_PK], 0.0) / nv) * 1e4

    lv = math.log1p(volume)
    nvol = min(steps, si[k.I_NF])  # bars already in the volume window (past only)
    volume_z = 0.0
    if nvol >= 2:
        mean = sf[F_SUM_VOL] / nvol
        var = sf[F_SUM_VOL + 1] / nvol - mean * mean
        if var > 1e-12:
            volume_z = (lv - mean) / math.sqrt(var)
    sf[vec] = lv
    sf[vec + 1] = lv * lv
    k._push_vector(si, sf, k.I_POS_F, si[k.I_OFF_F], si[k.I_NF], F_SUM_VOL, 2)

    sf[vec] = r * sf[F_R1]
    sf[vec + 1] = r * r
    k._push_vector(si, sf, k.I_POS_A, si[k.I_OFF_A], si[k.I_NA], F_SUM_AC, 2)
    sf[F_R1] = r
    ac1 = 0.0
    if sf[F_SUM_AC + 1] > 1e-12:
        ac1 = min(1.0, max(-1.0, sf[F_SUM_AC] / sf[F_SUM_AC + 1]))

    rb = vec + k.SCRATCH_VECTOR  # raw values at sf[rb + j]
    zb = rb + nfeat  # standardized values at sf[zb + j]
    sf[rb + 0] = r
    sf[rb + 1] = parkinson
    sf[rb + 2] = volume_z
    sf[rb + 3] = ac1
    steps += 1
    si[k.I_STEPS] = steps
    ready = False
    if steps >= si[k.I_RAW_READY]:
        ready = k._standardize(si, sf)
    out[n, 0] = ts_open // si[I_BAR_NS] + 1  # stamped at the bar's close
    out[n, 1] = 1.0 if ready else 0.0
    for j in range(nfeat):
        out[n, 2 + j] = sf[rb + j]
        out[n, 2 + nfeat + j] = sf[zb + j] if ready else math.nan
    return n + 1


@k._kernel
def _bars_batch(
    si: np.ndarray,
    sf: np.ndarray,
    ts: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    out: np.ndarray,
) -> int:
    n = 0
    for i in range(ts.shape[0]):
        n = _bar(si, sf, ts[i], high[i], low[i], close[i], volume[i], out, n)
    return n


@k._kernel
def _bar_step(
    si: np.ndarray,
    sf: np.ndarray,
    ts: int,
    high: float,
    low: float,
    close: float,
    volume: float,
    out: np.ndarray,
) -> int:
    return _bar(si, sf, ts, high, low, close, volume, out, 0)


def _require_bars(fs: FeatureSet | None) -> FeatureSet:
    fs = fs or bars_v1()
    if fs.name != BARS_V1:
        bars_v1().require(fs, "the requested feature set")
    return fs


def bars_batch(bars: pa.Table, fs: FeatureSet | None = None) -> np.ndarray:
    """Rows (bar index at close, ready, raw..., standardized...) for lake bars."""
    fs = _require_bars(fs)
    si, sf = make_bar_state(fs)
    ts = np.ascontiguousarray(bars.column("ts_ns").to_numpy(), dtype=np.int64)
    if len(ts) > 1 and bool((np.diff(ts) <= 0).any()):
        raise DataFormatError("bars: open times must strictly increase (run hmmtrader validate)")
    out = np.empty((len(ts), 2 + 2 * N_BAR_FEATURES))
    high, low, close, volume = (
        np.ascontiguousarray(bars.column(c).to_numpy(), dtype=np.float64)
        for c in ("high", "low", "close", "volume")
    )
    n = _bars_batch(si, sf, ts, high, low, close, volume, out)
    return out[:n]


class OnlineBarFeatures:
    """The online form of BARS_V1: one closed bar in, one row out."""

    def __init__(self, fs: FeatureSet | None = None) -> None:
        self.feature_set = _require_bars(fs)
        self._si, self._sf = make_bar_state(self.feature_set)
        self._out = np.zeros((1, 2 + 2 * N_BAR_FEATURES))
        self._bar_ns = int(self._si[I_BAR_NS])

    def on_bar(
        self, ts_open_ns: int, high: float, low: float, close: float, volume: float
    ) -> Sequence[FeatureRow]:
        n = _bar_step(self._si, self._sf, ts_open_ns, high, low, close, volume, self._out)
        if n == 0:
            return ()
        o, nf = self._out, N_BAR_FEATURES
        return [
            FeatureRow(
                int(o[0, 0]) * self._bar_ns,
                o[0, 1] == 1.0,
                o[0, 2 + nf : 2 + 2 * nf].copy(),
                o[0, 2 : 2 + nf].copy(),
            )
        ]
