"""Policy head: histogram gradient boosting on (filtered state posteriors + features),
predicting DOWN / FLAT / UP of the forward return net of costs, calibrated with
scikit-learn's CalibratedClassifierCV on a later, disjoint window.

`export_policy` flattens the fitted ensemble and its calibrators into arrays for the
compiled per-step kernel; a test checks it reproduces `predict_proba`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trading.regime.config import PolicySettings
from trading.regime.dataset import CLASS_NAMES, TrainingDataError
from trading.regime.kernel import CAL_ISOTONIC, CAL_SIGMOID, CAL_TEMPERATURE

MIN_CLASS_ROWS = 20


def fit_policy(
    F_train: np.ndarray,
    y_train: np.ndarray,
    F_cal: np.ndarray,
    y_cal: np.ndarray,
    settings: PolicySettings,
    seed: int,
) -> object:
    """A calibrated classifier (classes 0, 1, 2) fitted on train, calibrated on cal."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.frozen import FrozenEstimator

    for name, y in (("training", y_train), ("calibration", y_cal)):
        counts = np.bincount(y, minlength=3)
        if (counts < MIN_CLASS_ROWS).any():
            detail = ", ".join(f"{c} {n}" for c, n in zip(CLASS_NAMES, counts, strict=True))
            raise TrainingDataError(
                f"policy head: the {name} window needs at least {MIN_CLASS_ROWS} rows of "
                f"every class, has {detail}; use more data, another horizon_s or lower costs"
            )
    gbm = HistGradientBoostingClassifier(
        max_iter=settings.max_iter,
        learning_rate=settings.learning_rate,
        max_leaf_nodes=settings.max_leaf_nodes,
        min_samples_leaf=settings.min_samples_leaf,
        l2_regularization=settings.l2_regularization,
        early_stopping=False,
        random_state=seed,
    )
    gbm.fit(F_train, y_train)
    calibrated = CalibratedClassifierCV(FrozenEstimator(gbm), method=settings.calibration)
    calibrated.fit(F_cal, y_cal)
    return calibrated


@dataclass(frozen=True)
class PolicyArrays:
    """The fitted head as flat arrays (see kernel.tree_raw and kernel.calibrate)."""

    roots: np.ndarray
    tree_class: np.ndarray
    t_feat: np.ndarray
    t_thr: np.ndarray
    t_left: np.ndarray
    t_right: np.ndarray
    t_miss_left: np.ndarray
    t_leaf: np.ndarray
    t_value: np.ndarray
    baseline: np.ndarray
    method: int
    beta: float
    sig_a: np.ndarray
    sig_b: np.ndarray
    iso_x: np.ndarray
    iso_y: np.ndarray
    iso_off: np.ndarray


def export_policy(calibrated: object) -> PolicyArrays:
    pipeline = calibrated.calibrated_classifiers_[0]  # type: ignore[attr-defined]
    gbm = pipeline.estimator.estimator  # FrozenEstimator -> the fitted booster
    if list(gbm.classes_) != [0, 1, 2]:
        raise TrainingDataError(f"policy head classes are {list(gbm.classes_)}, expected 0, 1, 2")
    nodes, roots, tree_class, offset = [], [], [], 0
    for per_iteration in gbm._predictors:
        for cls, predictor in enumerate(per_iteration):
            n = predictor.nodes
            if n["is_categorical"].any():
                raise TrainingDataError("categorical splits are not supported by the policy kernel")
            nodes.append(n)
            roots.append(offset)
            tree_class.append(cls)
            offset += len(n)
    allnodes = np.concatenate(nodes)
    starts = np.repeat(np.array(roots, dtype=np.int64), [len(n) for n in nodes])
    cal = pipeline.calibrators
    method = {"temperature": CAL_TEMPERATURE, "sigmoid": CAL_SIGMOID, "isotonic": CAL_ISOTONIC}[
        pipeline.method
    ]
    beta = float(cal[0].beta_) if method == CAL_TEMPERATURE else 1.0
    sig_a = np.array([c.a_ for c in cal] if method == CAL_SIGMOID else [0.0] * 3, dtype=np.float64)
    sig_b = np.array([c.b_ for c in cal] if method == CAL_SIGMOID else [0.0] * 3, dtype=np.float64)
    if method == CAL_ISOTONIC:
        xs = [np.asarray(c.X_thresholds_, dtype=np.float64) for c in cal]
        ys = [np.asarray(c.y_thresholds_, dtype=np.float64) for c in cal]
    else:
        xs, ys = [np.zeros(1)] * 3, [np.zeros(1)] * 3
    iso_off = np.cumsum([0, *[len(x) for x in xs]]).astype(np.int64)
    return PolicyArrays(
        roots=np.array(roots, dtype=np.int64),
        tree_class=np.array(tree_class, dtype=np.int64),
        t_feat=allnodes["feature_idx"].astype(np.int64),
        t_thr=allnodes["num_threshold"].astype(np.float64),
        t_left=allnodes["left"].astype(np.int64) + starts,
        t_right=allnodes["right"].astype(np.int64) + starts,
        t_miss_left=allnodes["missing_go_to_left"].astype(np.bool_),
        t_leaf=allnodes["is_leaf"].astype(np.bool_),
        t_value=allnodes["value"].astype(np.float64),
        baseline=np.asarray(gbm._baseline_prediction, dtype=np.float64).ravel(),
        method=method,
        beta=beta,
        sig_a=sig_a,
        sig_b=sig_b,
        iso_x=np.concatenate(xs),
        iso_y=np.concatenate(ys),
        iso_off=iso_off,
    )
