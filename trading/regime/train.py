"""Fit a RegimeModel on a Dataset: walk-forward split, HMM search, stable labels, policy
head, drift reference, quality figures. Nothing here talks to MLflow (see registry)."""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trading.features.descriptor import BARS_V1, FeatureSet
from trading.regime.config import DriftSettings, PolicySettings, RegimeSettings
from trading.regime.dataset import (
    CLASS_NAMES,
    Dataset,
    Part,
    TrainingDataError,
    forward_labels,
    row_columns,
    walk_forward,
)
from trading.regime.hmm import (
    Candidate,
    KChoice,
    ModelFitError,
    mean_dwell_steps,
    relabel,
    search,
    state_entropy,
)
from trading.regime.kernel import OUT_ACTION, OUT_DRIFT
from trading.regime.model import RegimeModel, input_transform

Progress = Callable[[str], None]


@dataclass
class TrainReport:
    candidates: list[Candidate]
    metrics: dict[str, float]
    params: dict[str, Any]
    state_table: list[dict[str, Any]]  # per state: share, dwell, feature means, cost
    transmat: np.ndarray
    split: dict[str, Any]
    timeline: dict[str, np.ndarray] = field(default_factory=dict)  # for the plot
    k_choice: KChoice | None = None


def volatility_column(fs: FeatureSet) -> str:
    return "raw_parkinson_bp" if fs.name == BARS_V1 else "raw_rv_bp"


def _resolve_inputs(
    fs: FeatureSet, inputs: list[tuple[str, bool]]
) -> tuple[np.ndarray, np.ndarray]:
    columns = row_columns(fs)
    missing = [name for name, _ in inputs if name not in columns]
    if missing:
        raise TrainingDataError(
            f"regime.inputs names {', '.join(missing)}, not a column of {fs.version} "
            f"(columns: {', '.join(columns)})"
        )
    index = np.array([columns.index(name) for name, _ in inputs], dtype=np.int64)
    return index, np.array([log for _, log in inputs], dtype=np.bool_)


def _check_rows(split_rows: int, minimum: int, what: str, data: Dataset) -> None:
    if split_rows < minimum:
        raise TrainingDataError(
            f"too few feature rows for the {what} window: {split_rows:,} < {minimum:,} "
            f"({data.rows:,} rows of {', '.join(data.symbols)} {data.start}..{data.end}); "
            "train on a longer range or lower the regime.min_* settings"
        )


def _labelled(model: RegimeModel, part: Part, policy: PolicySettings) -> tuple[np.ndarray, ...]:
    """Policy features, classes, forward returns and costs of the labelled rows, and the
    labelled-row mask over all rows of the part (segments in order)."""
    feats, ys, fwds, costs, keeps = [], [], [], [], []
    fs = model.feature_set
    for seg in part.segments:
        post, zin = model.filter(seg.X, model.resets_of(len(seg.ts_ns), None))
        y, fwd, cost = forward_labels(seg, fs, policy, model.step_ns)
        keep = y >= 0
        feats.append(model.policy_features(seg.X, post, zin)[keep])
        ys.append(y[keep])
        fwds.append(fwd[keep])
        costs.append(cost[keep])
        keeps.append(keep)
    if not feats:
        empty = np.zeros(0)
        return np.zeros((0, 0)), np.zeros(0, dtype=np.int64), empty, empty, empty.astype(bool)
    return tuple(np.concatenate(parts) for parts in (feats, ys, fwds, costs, keeps))


def _drift_reference(Z: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    qs = np.arange(1, bins) / bins
    edges = np.quantile(Z, qs, axis=0).T.copy()  # features x (bins - 1)
    logp = np.zeros((Z.shape[1], bins))
    for f in range(Z.shape[1]):
        idx = np.searchsorted(edges[f], Z[:, f], side="right")
        counts = np.bincount(idx, minlength=bins)
        logp[f] = np.log((counts + 0.5) / (len(Z) + 0.5 * bins))
    return edges, logp


def fit_regime_model(
    data: Dataset,
    regime: RegimeSettings,
    policy: PolicySettings,
    drift: DriftSettings,
    progress: Progress | None = None,
) -> tuple[RegimeModel, TrainReport]:
    fs = data.feature_set
    began = time.perf_counter()
    split = walk_forward(data, regime.validation_fraction, regime.embargo_s)
    _check_rows(split.train.rows, regime.min_train_rows, "fitting", data)
    _check_rows(split.validation.rows, regime.min_validation_rows, "validation", data)
    index, log = _resolve_inputs(fs, regime.inputs_for(fs.name))
    X_tr, len_tr, resets_tr = split.train.stacked()
    X_va, len_va, resets_va = split.validation.stacked()
    raw_tr = input_transform(X_tr, index, log)
    mu, sd = raw_tr.mean(axis=0), raw_tr.std(axis=0)
    constant = sd <= 1e-9 * np.maximum(np.abs(mu), 1.0)
    if constant.any():
        flat = [regime.inputs_for(fs.name)[i][0] for i in np.flatnonzero(constant)]
        raise TrainingDataError(
            f"HMM input(s) {', '.join(flat)} are constant in the training window"
        )
    Z_tr = (raw_tr - mu) / sd
    Z_va = (input_transform(X_va, index, log) - mu) / sd

    hmm: Any
    hmm, candidates, k_choice = search(
        (Z_tr, len_tr), (Z_va, len_va), regime, progress, step_s=data.step_ns / 1e9
    )
    k = int(hmm.n_components)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smoothed = hmm.predict_proba(Z_tr, len_tr)
    vol = X_tr[:, row_columns(fs).index(volatility_column(fs))]
    order_stat = (smoothed * vol[:, None]).sum(axis=0) / np.maximum(smoothed.sum(axis=0), 1e-12)
    perm = relabel(hmm, order_stat)

    model = RegimeModel(
        feature_set=fs,
        inputs=list(regime.inputs[fs.name]),
        input_index=index,
        input_log=log,
        input_mu=mu,
        input_sd=sd,
        hmm=hmm,
        state_order=perm,
        policy=None,
        class_mean_bp=np.zeros(3),
        state_cost_bp=np.zeros(k),
        drift_edges=np.zeros((0, 0)),
        drift_ref_logp=np.zeros((0, 0)),
        policy_settings=policy,
        drift_settings=drift,
        step_ns=data.step_ns,
    )
    post_tr, _ = model.filter(X_tr, resets_tr)
    post_va, _ = model.filter(X_va, resets_va)
    states_tr, states_va = post_tr.argmax(axis=1), post_va.argmax(axis=1)
    entropy = state_entropy(states_va, k)
    if entropy <= regime.min_state_entropy:
        raise ModelFitError(
            f"degenerate model: state entropy {entropy:.3f} nats on validation is not above "
            f"regime.min_state_entropy {regime.min_state_entropy} (one state holds "
            f"{np.bincount(states_va, minlength=k).max() / len(states_va):.1%} of the rows)"
        )

    # state costs: median spread seen in each state (BARS_V1: the configured round trip)
    if fs.name == BARS_V1:
        model.state_cost_bp = np.full(k, policy.round_trip_bp())
    else:
        spread = X_tr[:, row_columns(fs).index("raw_spread_bp")]
        overall = float(np.median(spread))
        model.state_cost_bp = (
            np.array(
                [
                    float(np.median(spread[states_tr == s])) if (states_tr == s).any() else overall
                    for s in range(k)
                ]
            )
            + policy.extra_cost_bp
        )
    model.drift_edges, model.drift_ref_logp = _drift_reference(
        X_tr[:, : len(fs.columns)], drift.bins
    )

    if progress:
        progress("policy head")
    cal_cut = split.validation_start_ns + int(
        (
            max(int(split.validation.ts().max()), split.validation_start_ns)
            - split.validation_start_ns
        )
        * policy.calibration_fraction
    )
    cal_part = data.part(split.validation_start_ns, cal_cut)
    test_part = data.part(cal_cut, int(split.validation.ts().max()) + data.step_ns)
    F_tr, y_tr, fwd_tr, _, _ = _labelled(model, split.train, policy)
    F_cal, y_cal, _, _, _ = _labelled(model, cal_part, policy)
    from trading.regime.policy import fit_policy

    model.policy = fit_policy(F_tr, y_tr, F_cal, y_cal, policy, regime.seed)
    model.class_mean_bp = np.array(
        [float(fwd_tr[y_tr == c].mean()) if (y_tr == c).any() else 0.0 for c in range(3)]
    )
    model.drift_threshold, drift_metrics = calibrate_drift(model, split.train, drift)
    model._compiled = None  # calibrating compiled the kernel with the configured threshold
    metrics = _metrics(
        model, candidates, hmm, Z_tr, len_tr, states_va, resets_va, test_part, policy
    )
    metrics.update(drift_metrics)
    metrics.update(_k_metrics(k_choice))
    metrics["fit_s"] = time.perf_counter() - began
    report = TrainReport(
        candidates=candidates,
        metrics=metrics,
        params=_params(regime, policy, drift, fs),
        state_table=_state_table(model, X_tr, states_tr, resets_tr, states_va, resets_va),
        transmat=np.asarray(hmm.transmat_),
        split={
            "train_rows": split.train.rows,
            "validation_rows": split.validation.rows,
            "calibration_rows": cal_part.rows,
            "test_rows": test_part.rows,
            "train_end_ns": split.train_end_ns,
            "validation_start_ns": split.validation_start_ns,
            "embargo_s": regime.embargo_s,
        },
        timeline=_timeline(data, model),
        k_choice=k_choice,
    )
    return model, report


def drift_scores(model: RegimeModel, part: Part) -> np.ndarray:
    """The model's rolling drift score on every row of the part, each segment run as one
    stream (the window fills anew at a segment start, as online); rows before the window
    holds drift.min_rows rows have no score and are left out."""
    out = []
    for seg in part.segments:
        score = model.predict_array(seg.X, seg.ts_ns)[:, OUT_DRIFT]
        out.append(score[model.drift_settings.min_rows - 1 :])
    return np.concatenate(out) if out else np.zeros(0)


def calibrate_drift(
    model: RegimeModel, train: Part, drift: DriftSettings
) -> tuple[float, dict[str, float]]:
    """The drift threshold of the model: the calibration_quantile of its own rolling drift
    score over the training rows, floored at drift.threshold (None: drift.threshold).
    Features of a quiet, autocorrelated series (an hour of 1-minute bars) sit far from the
    whole window's quantile bins most of the time, so a fixed threshold can flag most of
    the training data as drift; the quantile states what is unusual for this model."""
    scores = drift_scores(model, train)
    q = drift.calibration_quantile
    quantile = float(np.quantile(scores, q)) if (q is not None and len(scores)) else 0.0
    threshold = max(quantile, drift.threshold) if q is not None else drift.threshold
    metrics = {
        "drift_threshold": threshold,
        "drift_train_quantile": quantile,
        "drift_train_median": float(np.median(scores)) if len(scores) else 0.0,
        "drift_train_above_threshold": float((scores > threshold).mean()) if len(scores) else 0.0,
    }
    return threshold, metrics


def _k_metrics(choice: KChoice) -> dict[str, float]:
    out = {
        "k_best_heldout": float(choice.best_k),
        "k_at_edge": float(choice.at_edge),
        "k_at_edge_high": float(choice.edge == "k_max"),
    }
    for k, value in choice.per_k.items():
        out[f"val_loglik_per_row_k{k}"] = value
    return out


def _metrics(
    model: RegimeModel,
    candidates: list[Candidate],
    hmm: Any,
    Z_tr: np.ndarray,
    len_tr: list[int],
    states_va: np.ndarray,
    resets_va: np.ndarray,
    test: Part,
    policy: PolicySettings,
) -> dict[str, float]:
    k = model.n_states
    chosen = next(c for c in candidates if c.chosen)
    out: dict[str, float] = {
        "n_states": float(k),
        "val_bic": chosen.val_bic,
        "val_loglik": chosen.val_loglik,
        "val_loglik_per_row": chosen.val_loglik_per_row,
        "train_loglik": chosen.train_loglik,
        "state_entropy": state_entropy(states_va, k),
        "candidates_failed": float(sum(not c.ok for c in candidates)),
    }
    dwell = mean_dwell_steps(states_va, resets_va, k) * model.step_ns / 1e9
    for s in range(k):
        out[f"dwell_s_state_{s}"] = float(dwell[s]) if np.isfinite(dwell[s]) else 0.0
    F_te, y_te, fwd_te, cost_te, labelled = _labelled(model, test, policy)
    if len(y_te):
        proba = model.policy.predict_proba(F_te)
        eps = 1e-15
        out["policy_test_rows"] = float(len(y_te))
        out["policy_log_loss"] = float(
            -np.log(np.clip(proba[np.arange(len(y_te)), y_te], eps, 1)).mean()
        )
        base = np.bincount(y_te, minlength=3) / len(y_te)
        out["policy_log_loss_base_rate"] = float(-np.log(np.clip(base[y_te], eps, 1)).mean())
        out["policy_accuracy"] = float((proba.argmax(axis=1) == y_te).mean())
        onehot = np.eye(3)[y_te]
        out["policy_brier"] = float(((proba - onehot) ** 2).sum(axis=1).mean())
        # actions on the test window, from the compiled kernel (what trading would do)
        action = np.concatenate(
            [model.predict_array(seg.X, seg.ts_ns)[:, OUT_ACTION] for seg in test.segments]
        )[labelled]
        traded = action != 0
        out["policy_action_rate"] = float(traded.mean())
        if traded.any():
            net = np.sign(action[traded]) * fwd_te[traded] - cost_te[traded]
            out["policy_hit_rate"] = float((net > 0).mean())
            out["policy_mean_net_bp"] = float(net.mean())
    for c, name in enumerate(CLASS_NAMES):
        out[f"class_mean_bp_{name.lower()}"] = float(model.class_mean_bp[c])
    return out


def _state_table(
    model: RegimeModel,
    X_tr: np.ndarray,
    states_tr: np.ndarray,
    resets_tr: np.ndarray,
    states_va: np.ndarray,
    resets_va: np.ndarray,
) -> list[dict[str, Any]]:
    fs = model.feature_set
    cols = row_columns(fs)
    dwell = mean_dwell_steps(states_tr, resets_tr, model.n_states) * model.step_ns / 1e9
    rows = []
    for s in range(model.n_states):
        sel = states_tr == s
        row: dict[str, Any] = {
            "state": s,
            "share_train": float(sel.mean()),
            "share_validation": float((states_va == s).mean()) if len(states_va) else 0.0,
            "mean_dwell_s": float(dwell[s]) if np.isfinite(dwell[s]) else 0.0,
            "cost_bp": float(model.state_cost_bp[s]),
        }
        for name in fs.raw_columns:
            values = X_tr[sel, cols.index(name)]
            row[f"mean_{name}"] = float(values.mean()) if len(values) else float("nan")
        rows.append(row)
    return rows


def _timeline(data: Dataset, model: RegimeModel, max_points: int = 20_000) -> dict[str, np.ndarray]:
    """First symbol's decoded states and price, downsampled, for the state-timeline plot."""
    symbol = data.symbols[0]
    ts, X = data.frames[symbol]
    stride = max(1, len(ts) // max_points)
    post, _ = model.filter(X, model.resets_of(len(X), ts))
    cols = row_columns(model.feature_set)
    price_col = "raw_mid" if "raw_mid" in cols else None
    price = (
        X[:, cols.index(price_col)]
        if price_col
        else np.exp(np.cumsum(X[:, cols.index("raw_log_return_bp")]) / 1e4)
    )
    return {
        "symbol": np.array([symbol]),
        "ts_ns": ts[::stride],
        "state": post.argmax(axis=1)[::stride],
        "price": price[::stride],
    }


def _params(
    regime: RegimeSettings, policy: PolicySettings, drift: DriftSettings, fs: FeatureSet
) -> dict[str, Any]:
    params: dict[str, Any] = {"feature_version": fs.version}
    for prefix, section in (("regime", regime), ("policy", policy), ("drift", drift)):
        for key, value in section.model_dump().items():
            if key == "inputs":
                value = value.get(fs.name)
            params[f"{prefix}.{key}"] = value
    return params


def partial_fit(
    model: RegimeModel, data: Dataset, regime: RegimeSettings
) -> tuple[RegimeModel, dict[str, float]]:
    """A few EM steps of the model's HMM on a recent window: a NEW model (the given one
    is not touched). The standardization and the policy head are kept; states are put in
    volatility order again so their ids keep their meaning."""
    model.feature_set.require(data.feature_set, "partial_fit data")
    part = data.part(min(int(ts[0]) for ts, _ in data.frames.values()), 2**62)
    _check_rows(part.rows, regime.min_validation_rows, "partial_fit", data)
    X, lengths, _ = part.stacked()
    Z = (input_transform(X, model.input_index, model.input_log) - model.input_mu) / model.input_sd
    hmm = copy.deepcopy(model.hmm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = float(hmm.score(Z, lengths))
        hmm.init_params = ""
        hmm.params = "stmc"
        hmm.n_iter = regime.partial_fit_iter
        hmm.tol = 0.0
        hmm.fit(Z, lengths)
        after = float(hmm.score(Z, lengths))
        smoothed = hmm.predict_proba(Z, lengths)
    vol = X[:, row_columns(model.feature_set).index(volatility_column(model.feature_set))]
    stat = (smoothed * vol[:, None]).sum(axis=0) / np.maximum(smoothed.sum(axis=0), 1e-12)
    perm = relabel(hmm, stat)
    new = copy.copy(model)
    new._compiled = None
    new.hmm = hmm
    new.state_order = model.state_order[perm]
    new.info = {**model.info, "partial_fit_rows": part.rows}
    return new, {
        "partial_fit_loglik_before": before,
        "partial_fit_loglik_after": after,
        "partial_fit_rows": float(part.rows),
        "partial_fit_relabelled": float(not np.array_equal(perm, np.arange(len(perm)))),
    }
