# mypy: disable-error-code="no-untyped-def"
"""Compiled per-step inference: HMM forward filter, policy-head trees, calibration, drift.

One step is O(K^2 + trees + features * bins) and allocation-free. The batch form
(`run_batch`) loops over rows calling the same `_step` the online form calls one row at a
time, so both give bit-identical results. The input of a step is one FEATURES_V1 (or
BARS_V1) row in file order: standardized columns then raw_ columns.

Output row layout (`OUT_*`): state, p_down, p_flat, p_up, action (-1 SELL, 0 HOLD, 1 BUY),
confidence, exp_edge_bp, drift_score, out_of_distribution (1.0 or 0.0), then the K state
posteriors.

Out of distribution: a row with a standardized column or a standardized HMM input beyond
+-max_abs_z (`decide[4]`; the features are clipped at the feature set's z_clip, so training
never saw more) is no evidence the model can weigh. The filter treats it as a missing
observation (it only predicts), and the step answers HOLD with confidence 0 and no edge.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

_kernel: Any = njit(cache=True, nogil=True)

OUT_STATE, OUT_P_DOWN, OUT_P_FLAT, OUT_P_UP = 0, 1, 2, 3
OUT_ACTION, OUT_CONFIDENCE, OUT_EDGE, OUT_DRIFT = 4, 5, 6, 7
OUT_OOD = 8
OUT_POSTERIOR = 9
N_CLASSES = 3  # DOWN, FLAT, UP
CAL_TEMPERATURE, CAL_SIGMOID, CAL_ISOTONIC = 0, 1, 2
LOG_FLOOR = 1e-3  # log() inputs are floored here (raw units, e.g. 0.001 bp)
_LOG_2PI = math.log(2.0 * math.pi)


@_kernel
def transform_inputs(x, in_idx, in_log, in_mu, in_sd, out):
    """HMM inputs of one row: selected columns, log() where asked, standardized."""
    for d in range(in_idx.shape[0]):
        v = x[in_idx[d]]
        if in_log[d]:
            v = math.log(max(v, LOG_FLOOR))
        out[d] = (v - in_mu[d]) / in_sd[d]


@_kernel
def emission_logp(z, means, linv, logdet, out):
    """Gaussian log-density of z under each state (linv: inverse Cholesky factors)."""
    k_states, dim = means.shape
    for k in range(k_states):
        q = 0.0
        for i in range(dim):
            acc = 0.0
            for j in range(i + 1):
                acc += linv[k, i, j] * (z[j] - means[k, j])
            q += acc * acc
        out[k] = -0.5 * (dim * _LOG_2PI + logdet[k] + q)


@_kernel
def forward_step(alpha, reset, startprob, transmat, logb, pred):
    """Scaled forward recursion: alpha <- normalize((alpha @ A) * b). O(K^2)."""
    k_states = alpha.shape[0]
    peak = logb[0]
    for k in range(1, k_states):
        peak = max(peak, logb[k])
    for j in range(k_states):
        if reset:
            pred[j] = startprob[j]
        else:
            acc = 0.0
            for i in range(k_states):
                acc += alpha[i] * transmat[i, j]
            pred[j] = acc
    total = 0.0
    for j in range(k_states):
        pred[j] *= math.exp(logb[j] - peak)
        total += pred[j]
    if not total > 0.0:  # the prior rules out every likely state: restart from the emissions
        total = 0.0
        for j in range(k_states):
            pred[j] = math.exp(logb[j] - peak)
            total += pred[j]
    for j in range(k_states):
        alpha[j] = pred[j] / total


@_kernel
def tree_raw(f, roots, tree_class, t_feat, t_thr, t_left, t_right, t_miss_left, t_leaf, t_value,
             baseline, out):  # fmt: skip
    """Raw (logit) scores of a histogram gradient-boosting ensemble for one row."""
    for c in range(out.shape[0]):
        out[c] = baseline[c]
    for t in range(roots.shape[0]):
        n = roots[t]
        while not t_leaf[n]:
            v = f[t_feat[n]]
            if math.isnan(v):
                n = t_left[n] if t_miss_left[n] else t_right[n]
            elif v <= t_thr[n]:
                n = t_left[n]
            else:
                n = t_right[n]
        out[tree_class[t]] += t_value[n]


@_kernel
def _interp(x, xs, ys):
    # numpy.interp with clipping at both ends (IsotonicRegression(out_of_bounds="clip"))
    n = xs.shape[0]
    if n == 1 or x <= xs[0]:
        return ys[0]
    if x >= xs[n - 1]:
        return ys[n - 1]
    lo, hi = 0, n - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if xs[mid] <= x:
            lo = mid
        else:
            hi = mid
    slope = (ys[hi] - ys[lo]) / (xs[hi] - xs[lo])
    return slope * (x - xs[lo]) + ys[lo]


@_kernel
def calibrate(raw, method, beta, sig_a, sig_b, iso_x, iso_y, iso_off, out):
    """Calibrated class probabilities from raw scores, as CalibratedClassifierCV does."""
    n = raw.shape[0]
    if method == CAL_TEMPERATURE:
        peak = beta * raw[0]
        for c in range(1, n):
            peak = max(peak, beta * raw[c])
        total = 0.0
        for c in range(n):
            out[c] = math.exp(beta * raw[c] - peak)
            total += out[c]
        for c in range(n):
            out[c] /= total
    else:
        total = 0.0
        for c in range(n):
            if method == CAL_SIGMOID:
                out[c] = 1.0 / (1.0 + math.exp(sig_a[c] * raw[c] + sig_b[c]))
            else:
                lo, hi = iso_off[c], iso_off[c + 1]
                out[c] = _interp(raw[c], iso_x[lo:hi], iso_y[lo:hi])
            total += out[c]
        for c in range(n):
            out[c] = out[c] / total if total != 0.0 else 1.0 / n
    for c in range(n):
        if 1.0 < out[c] <= 1.0 + 1e-5:
            out[c] = 1.0


@_kernel
def _drift_term(counts, ref_logp, f, b, denom):
    q = (counts[f, b] + 0.5) / denom
    return q * (math.log(q) - ref_logp[f, b])


@_kernel
def drift_update(z, edges, ref_logp, ring, counts, terms, dstate, min_rows):
    """Add one row to the rolling window; mean KL(window || reference) over features.

    Once the window is full only the two bins a step touches per feature change, so only
    their terms are recomputed (terms holds q * log(q / p) per feature and bin)."""
    window, n_feat = ring.shape
    n_bins = counts.shape[1]
    pos, filled = dstate[0], dstate[1]
    full = filled == window
    for f in range(n_feat):
        b = 0
        v = z[f]
        while b < n_bins - 1 and v >= edges[f, b]:  # searchsorted(edges, v, "right")
            b += 1
        old = ring[pos, f]
        if full:
            counts[f, old] -= 1
        ring[pos, f] = b
        counts[f, b] += 1
        if full and old != b:
            denom = window + 0.5 * n_bins
            terms[f, old] = _drift_term(counts, ref_logp, f, old, denom)
            terms[f, b] = _drift_term(counts, ref_logp, f, b, denom)
    dstate[0] = (pos + 1) % window
    dstate[1] = min(filled + 1, window)
    filled = dstate[1]
    if filled < min_rows:
        return 0.0
    if not full:  # the denominator changed: every term
        denom = filled + 0.5 * n_bins
        for f in range(n_feat):
            for b in range(n_bins):
                terms[f, b] = _drift_term(counts, ref_logp, f, b, denom)
    total = 0.0
    for f in range(n_feat):
        for b in range(n_bins):
            total += terms[f, b]
    return total / n_feat


@_kernel
def _step(x, reset, hmm_i, hmm_f, startprob, transmat, means, linv, logdet,
          z_idx, roots, tree_class, t_feat, t_thr, t_left, t_right, t_miss_left, t_leaf,
          t_value, baseline, opt_i, opt_f, sig_a, sig_b, iso_x, iso_y, iso_off,
          class_mean_bp, state_cost_bp, decide, edges, ref_logp,
          alpha, ring, counts, terms, dstate, work, out):  # fmt: skip
    for i in range(x.shape[0]):
        if not math.isfinite(x[i]):
            return False
    k_states = startprob.shape[0]
    n_in = means.shape[1]
    n_z = z_idx.shape[0]
    # work layout: [hmm inputs (n_in) | log b (K) | pred (K) | policy features | raw (3) | proba (3)]
    zin = work[0:n_in]
    logb = work[n_in : n_in + k_states]
    pred = work[n_in + k_states : n_in + 2 * k_states]
    f0 = n_in + 2 * k_states
    feats = work[f0 : f0 + k_states + n_z + n_in]
    raw = work[f0 + k_states + n_z + n_in : f0 + k_states + n_z + n_in + N_CLASSES]
    proba = work[
        f0 + k_states + n_z + n_in + N_CLASSES : f0 + k_states + n_z + n_in + 2 * N_CLASSES
    ]

    transform_inputs(x, hmm_i[0, :], hmm_i[1, :], hmm_f[0, :], hmm_f[1, :], zin)
    max_abs_z = decide[4]
    ood = False
    for i in range(n_z):
        if abs(x[z_idx[i]]) > max_abs_z:
            ood = True
    for d in range(n_in):
        if not abs(zin[d]) <= max_abs_z:  # also an input that overflowed to inf
            ood = True
    if ood:  # a missing observation: no emission evidence, the filter only predicts
        for k in range(k_states):
            logb[k] = 0.0
    else:
        emission_logp(zin, means, linv, logdet, logb)
    forward_step(alpha, reset, startprob, transmat, logb, pred)

    best = 0
    for k in range(k_states):
        feats[k] = alpha[k]
        if alpha[k] > alpha[best]:
            best = k
    for i in range(n_z):
        feats[k_states + i] = x[z_idx[i]]
    for d in range(n_in):
        feats[k_states + n_z + d] = zin[d]
    tree_raw(feats, roots, tree_class, t_feat, t_thr, t_left, t_right, t_miss_left, t_leaf,
             t_value, baseline, raw)  # fmt: skip
    calibrate(raw, opt_i[0], opt_f[0], sig_a, sig_b, iso_x, iso_y, iso_off, proba)

    exp_ret = 0.0
    for c in range(N_CLASSES):
        exp_ret += proba[c] * class_mean_bp[c]
    cost = 0.0
    for k in range(k_states):
        cost += alpha[k] * state_cost_bp[k]
    edge = 0.0
    if exp_ret > cost:
        edge = exp_ret - cost
    elif exp_ret < -cost:
        edge = exp_ret + cost
    act_threshold, min_edge_bp, drift_threshold, drift_scale = (
        decide[0],
        decide[1],
        decide[2],
        decide[3],
    )
    action, confidence = 0, proba[1]
    if proba[2] >= act_threshold and edge > 0.0 and edge >= min_edge_bp:
        action, confidence = 1, proba[2]
    elif proba[0] >= act_threshold and edge < 0.0 and -edge >= min_edge_bp:
        action, confidence = -1, proba[0]
    if ood:
        action, confidence, edge = 0, 0.0, 0.0
    for i in range(n_z):
        feats[i] = x[z_idx[i]]  # reuse as the drift input
    drift = drift_update(feats[:n_z], edges, ref_logp, ring, counts, terms, dstate, opt_i[1])
    if drift > drift_threshold:
        confidence *= drift_scale

    out[OUT_STATE] = best
    out[OUT_P_DOWN] = proba[0]
    out[OUT_P_FLAT] = proba[1]
    out[OUT_P_UP] = proba[2]
    out[OUT_ACTION] = action
    out[OUT_CONFIDENCE] = confidence
    out[OUT_EDGE] = edge
    out[OUT_DRIFT] = drift
    out[OUT_OOD] = 1.0 if ood else 0.0
    for k in range(k_states):
        out[OUT_POSTERIOR + k] = alpha[k]
    return True


@_kernel
def run_batch(X, resets, hmm_i, hmm_f, startprob, transmat, means, linv, logdet,
              z_idx, roots, tree_class, t_feat, t_thr, t_left, t_right, t_miss_left, t_leaf,
              t_value, baseline, opt_i, opt_f, sig_a, sig_b, iso_x, iso_y, iso_off,
              class_mean_bp, state_cost_bp, decide, edges, ref_logp,
              alpha, ring, counts, terms, dstate, work, out):  # fmt: skip
    """Every row through _step; returns the index of the first non-finite row, or -1."""
    for r in range(X.shape[0]):
        ok = _step(X[r], resets[r], hmm_i, hmm_f, startprob, transmat, means, linv, logdet,
                   z_idx, roots, tree_class, t_feat, t_thr, t_left, t_right, t_miss_left, t_leaf,
                   t_value, baseline, opt_i, opt_f, sig_a, sig_b, iso_x, iso_y, iso_off,
                   class_mean_bp, state_cost_bp, decide, edges, ref_logp,
                   alpha, ring, counts, terms, dstate, work, out[r])  # fmt: skip
        if not ok:
            return r
    return -1


@_kernel
def filter_batch(X, resets, hmm_i, hmm_f, startprob, transmat, means, linv, logdet, out):
    """Filtered posteriors P(state_t | rows up to t) and standardized HMM inputs per row.

    out: (rows, K + n_in). The same functions `_step` uses, without the policy head."""
    k_states = startprob.shape[0]
    n_in = means.shape[1]
    alpha = np.zeros(k_states)
    logb = np.zeros(k_states)
    pred = np.zeros(k_states)
    zin = np.zeros(n_in)
    for r in range(X.shape[0]):
        transform_inputs(X[r], hmm_i[0, :], hmm_i[1, :], hmm_f[0, :], hmm_f[1, :], zin)
        emission_logp(zin, means, linv, logdet, logb)
        forward_step(alpha, resets[r] or r == 0, startprob, transmat, logb, pred)
        for k in range(k_states):
            out[r, k] = alpha[k]
        for d in range(n_in):
            out[r, k_states + d] = zin[d]
