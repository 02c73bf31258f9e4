"""FEATURES_V1: the one definition, compiled with numba.

Both forms run exactly this code. The online form calls `process` once per event (quote,
trade, funding, clock); the batch form calls `run_batch`, which merges the lake's
quote, trade and funding arrays in time order and calls the very same per-event
functions in one compiled loop. Same operations in the same order give the same bits,
so batch == online is exact, not approximately true.

Time model. The grid has step G ns. The row stamped g describes the bucket (g - G, g]: it
uses only events with ts <= g (no look-ahead). A row is emitted when the first event
with ts > g arrives (or on `flush`). Ties at equal ts are processed funding, quotes,
trades. A silence longer than `max_gap_s` closes the segment: the next event starts a
new one with fresh state and a new warm-up (funding information is kept).

Per grid step, from the last quote and the bucket's trades and quote updates:
  mid, spread_bp, imbalance, microprice_bp, rv_bp (sqrt of the sum of squared 1-step
  log-mid returns over vol_window), sign_imbalance and signed_delta (trade count and
  volume imbalance over flow_window), bid_queue and ask_queue (decayed sums of best-level
  size changes, order-flow-imbalance style), autocorr_1/2 (return autocorrelation over
  autocorr_window), and optionally time_to_funding_h and funding_rate_bp.
Each is standardized against the previous standardize_window steps only (the current
value is not in its own mean/std), clipped to +-z_clip. Rolling sums are recomputed
from their ring buffer each time the ring wraps, so rounding never accumulates.
Invalid ticks (non-finite, non-positive price, crossed quote, non-positive trade size)
are skipped and counted, in both forms alike.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from trading.features.descriptor import FeatureParams

NS = 1_000_000_000

# event kinds
EV_FUNDING = 0
EV_QUOTE = 1
EV_TRADE = 2
EV_CLOCK = 3

# integer state slots
I_GRID = 0
I_MAX_GAP = 1
I_CUR = 2  # open bucket's grid time; 0 = no open segment
I_LAST_TS = 3
I_HAS_QUOTE = 4
I_STEPS = 5  # rows emitted in this segment
I_NV = 6
I_NF = 7
I_NA = 8
I_NZ = 9
I_POS_V = 10
I_POS_F = 11
I_POS_A = 12
I_POS_Z = 13
I_CNT_Z = 14
I_MIN_Z = 15
I_RAW_READY = 16  # steps before raw windows are full and standardization starts
I_NFEAT = 17
I_FUNDING = 18
I_HAS_FUND = 19
I_FUND_TS = 20
I_FUND_INTERVAL = 21
I_HAS_PREV_MID = 22
I_OFF_V = 23
I_OFF_F = 24
I_OFF_A = 25
I_OFF_Z = 26
I_OFF_ZS = 27
I_OFF_ZSHIFT = 28
I_SKIPPED = 29
I_SEGMENTS = 30
I_OFF_SCRATCH = 31  # per-step scratch: vector (4), raw (nfeat), z (nfeat)
I_SIZE = 32

# float state slots
F_BID = 0
F_ASK = 1
F_BSZ = 2
F_ASZ = 3
F_DECAY = 4
F_ZCLIP = 5
F_ACC_QB = 6
F_ACC_QA = 7
F_QB = 8
F_QA = 9
F_NB = 10
F_NS = 11
F_VB = 12
F_VS = 13
F_PREV_MID = 14
F_R1 = 15  # previous step's return
F_R2 = 16  # the one before
F_SUM_V = 17
F_SUM_F = 18  # 4 slots: 18..21
F_SUM_A = 22  # 3 slots: 22..24
F_FUND_RATE = 25
F_HEADER = 32

N_TICK_FEATURES = 11
FLOW_WIDTH = 4
AC_WIDTH = 3
_TINY = 1e-12
SCRATCH_VECTOR = 4

# No NRT (numba's reference counting): the kernels never allocate, and without it a call
# that passes the state arrays costs nothing instead of atomic increments per call.
_kernel = njit(cache=True, _nrt=False)  # type: ignore[call-overload]


def make_state(params: FeatureParams) -> tuple[np.ndarray, np.ndarray]:
    """Fresh (integer, float) state arrays for one symbol."""
    nfeat = N_TICK_FEATURES + (2 if params.funding else 0)
    nv = params.steps(params.vol_window_s)
    nf = params.steps(params.flow_window_s)
    na = params.steps(params.autocorr_window_s)
    nz = params.steps(params.standardize_window_s)
    si = np.zeros(I_SIZE, dtype=np.int64)
    si[I_GRID] = round(params.grid_s * NS)
    si[I_MAX_GAP] = round(params.max_gap_s * NS)
    si[I_NV], si[I_NF], si[I_NA], si[I_NZ] = nv, nf, na, nz
    si[I_MIN_Z] = params.steps(params.standardize_min_s)
    si[I_RAW_READY] = max(nv, nf, na + 2) + 1
    si[I_NFEAT] = nfeat
    si[I_FUNDING] = 1 if params.funding else 0
    si[I_FUND_INTERVAL] = round(params.funding_interval_s * NS)
    off = F_HEADER
    si[I_OFF_V] = off
    off += nv
    si[I_OFF_F] = off
    off += nf * FLOW_WIDTH
    si[I_OFF_A] = off
    off += na * AC_WIDTH
    si[I_OFF_Z] = off
    off += nz * nfeat
    si[I_OFF_ZS] = off
    off += 2 * nfeat
    si[I_OFF_ZSHIFT] = off
    off += nfeat
    si[I_OFF_SCRATCH] = off
    off += SCRATCH_VECTOR + 2 * nfeat
    sf = np.zeros(off, dtype=np.float64)
    sf[F_DECAY] = 0.5 ** (params.grid_s / params.queue_halflife_s)
    sf[F_ZCLIP] = params.z_clip
    return si, sf


def row_width(si: np.ndarray) -> int:
    """Output row: grid index (ts_ns = index * grid ns), ready, raw..., standardized..."""
    return 2 + 2 * int(si[I_NFEAT])


@_kernel
def _reset_segment(si: np.ndarray, sf: np.ndarray) -> None:
    for k in range(F_HEADER):
        if k != F_DECAY and k != F_ZCLIP and k != F_FUND_RATE:
            sf[k] = 0.0
    sf[F_HEADER:] = 0.0
    si[I_HAS_QUOTE] = 0
    si[I_STEPS] = 0
    si[I_POS_V] = 0
    si[I_POS_F] = 0
    si[I_POS_A] = 0
    si[I_POS_Z] = 0
    si[I_CNT_Z] = 0
    si[I_HAS_PREV_MID] = 0


@_kernel
def _push_vector(
    si: np.ndarray, sf: np.ndarray, pos_slot: int, off: int, n: int, sum_at: int, width: int
) -> None:
    """Push the `width` values in the scratch vector into a ring of n rows and keep the
    column sums at sf[sum_at:]; the sums are re-added exactly whenever the ring wraps."""
    src = si[I_OFF_SCRATCH]
    pos = si[pos_slot]
    base = off + pos * width
    for j in range(width):
        sf[sum_at + j] += sf[src + j] - sf[base + j]
        sf[base + j] = sf[src + j]
    pos += 1
    if pos == n:
        pos = 0
        for j in range(width):
            total = 0.0
            for k in range(n):
                total += sf[off + k * width + j]
            sf[sum_at + j] = total
    si[pos_slot] = pos


@_kernel
def _standardize(si: np.ndarray, sf: np.ndarray) -> bool:
    """z-score the scratch raw values against the previous window (past only) into the
    scratch z values, then push the raw values into the window."""
    nfeat = si[I_NFEAT]
    rb = si[I_OFF_SCRATCH] + SCRATCH_VECTOR  # raw values at sf[rb + j]
    zb = rb + nfeat  # z values at sf[zb + j]
    nz = si[I_NZ]
    cnt = si[I_CNT_Z]
    off = si[I_OFF_Z]
    zs = si[I_OFF_ZS]
    zshift = si[I_OFF_ZSHIFT]
    clip = sf[F_ZCLIP]
    ready = cnt >= si[I_MIN_Z]
    if cnt == 0:
        for j in range(nfeat):
            sf[zshift + j] = sf[rb + j]
    for j in range(nfeat):
        if ready:
            mean = sf[zs + 2 * j] / cnt
            var = sf[zs + 2 * j + 1] / cnt - mean * mean
            x = sf[rb + j] - sf[zshift + j]
            scale = abs(mean) + abs(sf[zshift + j])
            if var > 0.0 and math.sqrt(var) > _TINY * (scale + 1.0):
                value = (x - mean) / math.sqrt(var)
                if value > clip:
                    value = clip
                elif value < -clip:
                    value = -clip
                sf[zb + j] = value
            elif math.isfinite(x):
                sf[zb + j] = 0.0
            else:
                sf[zb + j] = math.nan
            if not math.isfinite(sf[zb + j]):
                ready = False
        else:
            sf[zb + j] = math.nan
    pos = si[I_POS_Z]
    base = off + pos * nfeat
    for j in range(nfeat):
        x = sf[rb + j] - sf[zshift + j]
        if cnt == nz:
            old = sf[base + j]
            sf[zs + 2 * j] -= old
            sf[zs + 2 * j + 1] -= old * old
        sf[zs + 2 * j] += x
        sf[zs + 2 * j + 1] += x * x
        sf[base + j] = x
    pos += 1
    if cnt < nz:
        si[I_CNT_Z] = cnt + 1
    if pos == nz:
        pos = 0
        for j in range(nfeat):
            s1 = 0.0
            s2 = 0.0
            for k in range(nz):
                v = sf[off + k * nfeat + j]
                s1 += v
                s2 += v * v
            sf[zs + 2 * j] = s1
            sf[zs + 2 * j + 1] = s2
    si[I_POS_Z] = pos
    return ready


@_kernel
def _close_step(si: np.ndarray, sf: np.ndarray, g: int, out: np.ndarray, n: int) -> int:
    """Compute the row of grid time g from the bucket and the state; write it to out[n]."""
    if si[I_HAS_QUOTE] == 0:
        for k in range(F_ACC_QB, F_ACC_QA + 1):
            sf[k] = 0.0
        for k in range(F_NB, F_VS + 1):
            sf[k] = 0.0
        return n
    nfeat = si[I_NFEAT]
    bid = sf[F_BID]
    ask = sf[F_ASK]
    bsz = sf[F_BSZ]
    asz = sf[F_ASZ]
    mid = 0.5 * (bid + ask)
    spread_bp = (ask - bid) / mid * 1e4
    depth = bsz + asz
    if depth > 0.0:
        imbalance = (bsz - asz) / depth
        micro_bp = ((bid * asz + ask * bsz) / depth - mid) / mid * 1e4
    else:
        imbalance = 0.0
        micro_bp = 0.0
    r = math.log(mid / sf[F_PREV_MID]) * 10000.0 if si[I_HAS_PREV_MID] == 1 else 0.0
    sf[F_PREV_MID] = mid
    si[I_HAS_PREV_MID] = 1

    vec = si[I_OFF_SCRATCH]
    sf[vec] = r * r
    _push_vector(si, sf, I_POS_V, si[I_OFF_V], si[I_NV], F_SUM_V, 1)
    rv_bp = math.sqrt(sf[F_SUM_V]) if sf[F_SUM_V] > 0.0 else 0.0

    sf[vec] = sf[F_NB] - sf[F_NS]
    sf[vec + 1] = sf[F_NB] + sf[F_NS]
    sf[vec + 2] = sf[F_VB] - sf[F_VS]
    sf[vec + 3] = sf[F_VB] + sf[F_VS]
    _push_vector(si, sf, I_POS_F, si[I_OFF_F], si[I_NF], F_SUM_F, FLOW_WIDTH)
    if sf[F_SUM_F + 1] > 0.5:  # at least one trade in the window (counts are exact)
        sign_imb = sf[F_SUM_F] / sf[F_SUM_F + 1]
        signed_delta = sf[F_SUM_F + 2] / sf[F_SUM_F + 3] if sf[F_SUM_F + 3] > 0.0 else 0.0
        signed_delta = min(1.0, max(-1.0, signed_delta))
    else:
        sign_imb = 0.0
        signed_delta = 0.0

    decay = sf[F_DECAY]
    sf[F_QB] = decay * sf[F_QB] + sf[F_ACC_QB]
    sf[F_QA] = decay * sf[F_QA] + sf[F_ACC_QA]

    sf[vec] = r * sf[F_R1]
    sf[vec + 1] = r * sf[F_R2]
    sf[vec + 2] = r * r
    _push_vector(si, sf, I_POS_A, si[I_OFF_A], si[I_NA], F_SUM_A, AC_WIDTH)
    sf[F_R2] = sf[F_R1]
    sf[F_R1] = r
    if sf[F_SUM_A + 2] > _TINY:
        ac1 = min(1.0, max(-1.0, sf[F_SUM_A] / sf[F_SUM_A + 2]))
        ac2 = min(1.0, max(-1.0, sf[F_SUM_A + 1] / sf[F_SUM_A + 2]))
    else:
        ac1 = 0.0
        ac2 = 0.0

    rb = vec + SCRATCH_VECTOR  # raw values at sf[rb + j]
    zb = rb + nfeat  # standardized values at sf[zb + j]
    sf[rb + 0] = mid
    sf[rb + 1] = spread_bp
    sf[rb + 2] = imbalance
    sf[rb + 3] = micro_bp
    sf[rb + 4] = rv_bp
    sf[rb + 5] = sign_imb
    sf[rb + 6] = signed_delta
    sf[rb + 7] = sf[F_QB]
    sf[rb + 8] = sf[F_QA]
    sf[rb + 9] = ac1
    sf[rb + 10] = ac2
    if si[I_FUNDING] == 1:
        if si[I_HAS_FUND] == 1:
            left = si[I_FUND_TS] + si[I_FUND_INTERVAL] - g
            sf[rb + 11] = max(left, 0) / 3.6e12
            sf[rb + 12] = sf[F_FUND_RATE] * 1e4
        else:
            sf[rb + 11] = math.nan
            sf[rb + 12] = math.nan

    steps = si[I_STEPS] + 1
    si[I_STEPS] = steps
    ready = False
    if steps >= si[I_RAW_READY]:
        ready = _standardize(si, sf)
    else:
        for j in range(nfeat):
            sf[zb + j] = math.nan
    out[n, 0] = g // si[I_GRID]  # the grid index: exact in a float64, unlike ns
    out[n, 1] = 1.0 if ready else 0.0
    for j in range(nfeat):
        out[n, 2 + j] = sf[rb + j]
        out[n, 2 + nfeat + j] = sf[zb + j] if ready else math.nan

    sf[F_ACC_QB] = 0.0
    sf[F_ACC_QA] = 0.0
    sf[F_NB] = 0.0
    sf[F_NS] = 0.0
    sf[F_VB] = 0.0
    sf[F_VS] = 0.0
    return n + 1


@_kernel
def _advance(si: np.ndarray, sf: np.ndarray, ts: int, out: np.ndarray, n: int) -> int:
    """Emit every pending grid row stamped before ts; close the segment after a long gap."""
    cur = si[I_CUR]
    if cur == 0:
        return n
    if ts - si[I_LAST_TS] > si[I_MAX_GAP]:
        n = _close_step(si, sf, cur, out, n)
        si[I_CUR] = 0
        return n
    grid = si[I_GRID]
    while cur < ts:
        n = _close_step(si, sf, cur, out, n)
        cur += grid
    si[I_CUR] = cur
    return n


@_kernel
def _open(si: np.ndarray, sf: np.ndarray, ts: int) -> None:
    if si[I_CUR] == 0:
        _reset_segment(si, sf)
        grid = si[I_GRID]
        si[I_CUR] = ((ts + grid - 1) // grid) * grid
        si[I_SEGMENTS] += 1
    if ts > si[I_LAST_TS]:
        si[I_LAST_TS] = ts


@_kernel
def _quote(
    si: np.ndarray,
    sf: np.ndarray,
    ts: int,
    bid: float,
    ask: float,
    bsz: float,
    asz: float,
    out: np.ndarray,
    n: int,
) -> int:
    sizes_ok = bsz >= 0.0 and asz >= 0.0 and math.isfinite(bsz) and math.isfinite(asz)
    if not (bid > 0.0 and ask >= bid and math.isfinite(ask) and sizes_ok):
        si[I_SKIPPED] += 1
        return n
    n = _advance(si, sf, ts, out, n)
    _open(si, sf, ts)
    if si[I_HAS_QUOTE] == 1:
        pbid = sf[F_BID]
        pask = sf[F_ASK]
        if bid > pbid:
            sf[F_ACC_QB] += bsz
        elif bid == pbid:
            sf[F_ACC_QB] += bsz - sf[F_BSZ]
        else:
            sf[F_ACC_QB] -= sf[F_BSZ]
        if ask < pask:
            sf[F_ACC_QA] += asz
        elif ask == pask:
            sf[F_ACC_QA] += asz - sf[F_ASZ]
        else:
            sf[F_ACC_QA] -= sf[F_ASZ]
    si[I_HAS_QUOTE] = 1
    sf[F_BID] = bid
    sf[F_ASK] = ask
    sf[F_BSZ] = bsz
    sf[F_ASZ] = asz
    return n


@_kernel
def _trade(
    si: np.ndarray,
    sf: np.ndarray,
    ts: int,
    price: float,
    qty: float,
    side: float,
    out: np.ndarray,
    n: int,
) -> int:
    if not (price > 0.0 and qty > 0.0 and math.isfinite(price) and math.isfinite(qty)):
        si[I_SKIPPED] += 1
        return n
    n = _advance(si, sf, ts, out, n)
    _open(si, sf, ts)
    if side > 0.0:
        sf[F_NB] += 1.0
        sf[F_VB] += qty
    elif side < 0.0:
        sf[F_NS] += 1.0
        sf[F_VS] += qty
    return n


@_kernel
def _funding(si: np.ndarray, sf: np.ndarray, ts: int, rate: float, out: np.ndarray, n: int) -> int:
    if not math.isfinite(rate):
        si[I_SKIPPED] += 1
        return n
    n = _advance(si, sf, ts, out, n)
    si[I_HAS_FUND] = 1
    si[I_FUND_TS] = ts
    sf[F_FUND_RATE] = rate
    return n


@_kernel
def process(
    si: np.ndarray,
    sf: np.ndarray,
    kind: int,
    ts: int,
    a: float,
    b: float,
    c: float,
    d: float,
    out: np.ndarray,
) -> int:
    """One event (the online form). Returns how many rows were written to out[0:n]."""
    if kind == EV_QUOTE:
        return _quote(si, sf, ts, a, b, c, d, out, 0)
    if kind == EV_TRADE:
        return _trade(si, sf, ts, a, b, c, out, 0)
    if kind == EV_FUNDING:
        return _funding(si, sf, ts, a, out, 0)
    return _advance(si, sf, ts, out, 0)


@_kernel
def run_batch(
    si: np.ndarray,
    sf: np.ndarray,
    q_ts: np.ndarray,
    q_bid: np.ndarray,
    q_ask: np.ndarray,
    q_bsz: np.ndarray,
    q_asz: np.ndarray,
    t_ts: np.ndarray,
    t_price: np.ndarray,
    t_qty: np.ndarray,
    t_side: np.ndarray,
    f_ts: np.ndarray,
    f_rate: np.ndarray,
    until: int,
    out: np.ndarray,
) -> int:
    """The batch form: every event in time order (ties: funding, quote, trade), then the
    clock at `until` (0 = no final flush). Returns the number of rows in out."""
    nq = q_ts.shape[0]
    nt = t_ts.shape[0]
    nfund = f_ts.shape[0]
    i = 0
    j = 0
    k = 0
    n = 0
    big = np.iinfo(np.int64).max
    while i < nq or j < nt or k < nfund:
        tq = q_ts[i] if i < nq else big
        tt = t_ts[j] if j < nt else big
        tf = f_ts[k] if k < nfund else big
        if tf <= tq and tf <= tt:
            n = _funding(si, sf, tf, f_rate[k], out, n)
            k += 1
        elif tq <= tt:
            n = _quote(si, sf, tq, q_bid[i], q_ask[i], q_bsz[i], q_asz[i], out, n)
            i += 1
        else:
            n = _trade(si, sf, tt, t_price[j], t_qty[j], float(t_side[j]), out, n)
            j += 1
    if until > 0:
        n = _advance(si, sf, until, out, n)
    return n
