"""The regime model bundle: HMM + policy head + drift reference + input transform.

`RegimeModel` is plain data (picklable, no server needed). `predict` runs the compiled
kernel over a sequence of feature rows; `online()` gives a per-symbol `OnlineRegime`
that takes one row per grid step and returns the same numbers the batch form gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trading.errors import InputError
from trading.features.descriptor import FeatureSet
from trading.regime import kernel
from trading.regime.config import DriftSettings, PolicySettings
from trading.regime.dataset import row_columns
from trading.regime.hmm import ModelFitError, full_covariances
from trading.regime.policy import PolicyArrays, export_policy

ACTIONS = {-1: "SELL", 0: "HOLD", 1: "BUY"}
DEFAULT_MAX_ABS_Z = 10.0  # out-of-distribution bound when the feature set names no z_clip


class FeatureInputError(InputError):
    """Rows handed to the model do not match its feature set (count, order, NaN)."""


def input_transform(X: np.ndarray, index: np.ndarray, log: np.ndarray) -> np.ndarray:
    """HMM inputs before standardization (the kernel's transform_inputs, vectorized)."""
    Z = X[:, index].copy()
    Z[:, log] = np.log(np.maximum(Z[:, log], kernel.LOG_FLOOR))
    return Z


@dataclass
class RegimeModel:
    feature_set: FeatureSet
    inputs: list[str]  # HMM inputs as configured, e.g. "log(raw_rv_bp)"
    input_index: np.ndarray  # into row_columns(feature_set)
    input_log: np.ndarray  # bool per input
    input_mu: np.ndarray
    input_sd: np.ndarray
    hmm: Any  # hmmlearn GaussianHMM, states ordered by ascending volatility
    state_order: np.ndarray  # state i of this model was state state_order[i] of the fit
    policy: Any  # sklearn CalibratedClassifierCV over classes DOWN, FLAT, UP
    class_mean_bp: np.ndarray  # mean forward return of each class in training
    state_cost_bp: np.ndarray  # cost an action must beat, per state
    drift_edges: np.ndarray  # features x (bins - 1): reference quantile edges
    drift_ref_logp: np.ndarray  # features x bins: log reference probabilities
    policy_settings: PolicySettings
    drift_settings: DriftSettings
    step_ns: int
    info: dict[str, Any] = field(default_factory=dict)
    max_abs_z: float | None = None  # out-of-distribution bound; None: see ood_bound()
    # the drift threshold calibrated on the training window (train.calibrate_drift); None
    # (models from before the calibration): drift_settings.threshold
    drift_threshold: float | None = None
    _compiled: Any = field(default=None, repr=False, compare=False)

    @property
    def n_states(self) -> int:
        return int(self.hmm.n_components)

    @property
    def columns(self) -> list[str]:
        """The input row: standardized columns, then raw_ columns of the feature set."""
        return row_columns(self.feature_set)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_compiled"] = None
        return state

    def compiled(self) -> Compiled:
        if self._compiled is None:
            self._compiled = Compiled.build(self)
        return self._compiled

    @property
    def horizon_s(self) -> float:
        """The policy's label horizon in seconds: how long a position is meant to be held
        (BARS_V1: policy.horizon_bars bars)."""
        steps = self.policy_settings.horizon_steps(self.feature_set.name, self.step_ns / 1e9)
        return steps * self.step_ns / 1e9

    def drift_limit(self) -> float:
        """The drift score above which confidence is scaled down: the calibrated threshold
        recorded with the model, else the configured one."""
        if self.drift_threshold is not None:
            return float(self.drift_threshold)
        return float(self.drift_settings.threshold)

    def ood_bound(self) -> float:
        """|z| beyond which a row is out of distribution (kernel: HOLD, confidence 0): the
        configured bound, else the feature set's z_clip (its standardized columns are
        clipped there, so the model never saw more)."""
        if self.max_abs_z is not None:
            return float(self.max_abs_z)
        return float(self.feature_set.params.get("z_clip", DEFAULT_MAX_ABS_Z))

    def set_ood_bound(self, max_abs_z: float | None) -> None:
        """Another out-of-distribution bound (None: the default); filters made after this
        use it."""
        self.max_abs_z = max_abs_z
        self._compiled = None

    def check_rows(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.columns):
            got = f"{X.shape[1]} columns" if X.ndim == 2 else f"an array of shape {X.shape}"
            raise FeatureInputError(
                f"{self.feature_set.version} rows have {len(self.columns)} columns "
                f"({', '.join(self.columns)}); got {got}"
            )
        bad = ~np.isfinite(X)
        if bad.any():
            cols = [self.columns[i] for i in np.flatnonzero(bad.any(axis=0))]
            raise FeatureInputError(
                f"{int(bad.sum())} non-finite value(s) in column(s) {', '.join(cols)}"
            )
        return np.ascontiguousarray(X)

    def resets_of(self, n: int, ts_ns: np.ndarray | None) -> np.ndarray:
        resets = np.zeros(n, dtype=np.bool_)
        if n:
            resets[0] = True
        if ts_ns is not None and len(ts_ns) != n:
            raise FeatureInputError(f"{len(ts_ns)} timestamps for {n} rows")
        if ts_ns is not None and n > 1:
            ts = np.asarray(ts_ns, dtype=np.int64)
            resets[1:] = np.diff(ts) != self.step_ns
        return resets

    def predict_array(self, X: np.ndarray, ts_ns: np.ndarray | None = None) -> np.ndarray:
        """Kernel output rows (see kernel.OUT_*) for one symbol's rows in time order.
        The filter restarts where ts_ns skips a grid step (and at the first row)."""
        X = self.check_rows(X)
        c = self.compiled()
        state = c.new_state()
        out = np.zeros((len(X), kernel.OUT_POSTERIOR + self.n_states))
        kernel.run_batch(X, self.resets_of(len(X), ts_ns), *c.params, *state, out)
        return out

    def filter(self, X: np.ndarray, resets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Filtered state posteriors and standardized HMM inputs of each row."""
        X = self.check_rows(X)
        out = np.zeros((len(X), self.n_states + len(self.inputs)))
        kernel.filter_batch(
            np.ascontiguousarray(X, dtype=np.float64), resets, *hmm_params(self), out
        )
        return out[:, : self.n_states], out[:, self.n_states :]

    def policy_features(self, X: np.ndarray, posteriors: np.ndarray, zin: np.ndarray) -> np.ndarray:
        """The policy head's input: posteriors, standardized features, HMM inputs."""
        return np.hstack([posteriors, X[:, : len(self.feature_set.columns)], zin])

    def online(self) -> OnlineRegime:
        return OnlineRegime(self)


def hmm_params(m: RegimeModel) -> tuple[np.ndarray, ...]:
    """Kernel arguments of the input transform and the HMM (states in model order)."""
    hmm = m.hmm
    covars = full_covariances(hmm)
    try:
        chol = np.linalg.cholesky(covars)
    except np.linalg.LinAlgError:  # as hmmlearn does: retry with min_covar on the diagonal
        try:
            chol = np.linalg.cholesky(covars + hmm.min_covar * np.eye(covars.shape[1]))
        except np.linalg.LinAlgError as exc:
            raise ModelFitError(f"a state's covariance is not positive definite: {exc}") from None
    logdet = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    return (
        np.vstack([m.input_index, m.input_log.astype(np.int64)]).astype(np.int64),
        np.vstack([m.input_mu, m.input_sd]).astype(np.float64),
        np.asarray(hmm.startprob_, dtype=np.float64),
        np.ascontiguousarray(hmm.transmat_, dtype=np.float64),
        np.ascontiguousarray(hmm.means_, dtype=np.float64),
        np.ascontiguousarray(np.linalg.inv(chol)),
        logdet,
    )


@dataclass
class Compiled:
    params: tuple[Any, ...]  # kernel arguments after (x, reset), in order
    n_states: int
    work_size: int
    window: int
    n_drift: int
    n_bins: int

    @classmethod
    def build(cls, m: RegimeModel) -> Compiled:
        p: PolicyArrays = export_policy(m.policy)
        n_z = len(m.feature_set.columns)
        n_in = len(m.inputs)
        k = m.n_states
        d = m.drift_settings
        window = max(1, round(d.window_s * 1e9 / m.step_ns))
        params = (
            *hmm_params(m),
            np.arange(n_z, dtype=np.int64),
            p.roots, p.tree_class, p.t_feat, p.t_thr, p.t_left, p.t_right, p.t_miss_left,
            p.t_leaf, p.t_value, p.baseline,
            np.array([p.method, d.min_rows], dtype=np.int64),
            np.array([p.beta], dtype=np.float64),
            p.sig_a, p.sig_b, p.iso_x, p.iso_y, p.iso_off,
            np.asarray(m.class_mean_bp, dtype=np.float64),
            np.asarray(m.state_cost_bp, dtype=np.float64),
            np.array(
                [m.policy_settings.act_threshold, m.policy_settings.min_edge_bp,
                 m.drift_limit(), d.confidence_scale, m.ood_bound()],
                dtype=np.float64,
            ),
            np.ascontiguousarray(m.drift_edges, dtype=np.float64),
            np.ascontiguousarray(m.drift_ref_logp, dtype=np.float64),
        )  # fmt: skip
        work = n_in + 2 * k + (k + n_z + n_in) + 2 * kernel.N_CLASSES
        return cls(params, k, work, window, m.drift_ref_logp.shape[0], m.drift_ref_logp.shape[1])

    def new_state(self) -> tuple[np.ndarray, ...]:
        return (
            np.zeros(self.n_states),
            np.zeros((self.window, self.n_drift), dtype=np.int16),  # bin indices (bins <= 100)
            np.zeros((self.n_drift, self.n_bins), dtype=np.int64),
            np.zeros((self.n_drift, self.n_bins)),
            np.zeros(2, dtype=np.int64),
            np.zeros(self.work_size),
        )


@dataclass(frozen=True, slots=True)
class StepResult:
    state: int
    posterior: np.ndarray
    action: str  # BUY / SELL / HOLD
    confidence: float
    exp_edge_bp: float
    drift_score: float
    p_down: float
    p_flat: float
    p_up: float
    out_of_distribution: bool


def output_table(out: np.ndarray) -> dict[str, Any]:
    """Kernel output rows (kernel.OUT_* layout) as named columns: state, posterior_<k>,
    action (BUY / SELL / HOLD), confidence, exp_edge_bp, drift_score, p_down, p_flat, p_up,
    out_of_distribution."""
    data: dict[str, Any] = {"state": out[:, kernel.OUT_STATE].astype(np.int64)}
    for s in range(out.shape[1] - kernel.OUT_POSTERIOR):
        data[f"posterior_{s}"] = out[:, kernel.OUT_POSTERIOR + s]
    data["action"] = [ACTIONS[int(a)] for a in out[:, kernel.OUT_ACTION]]
    data["confidence"] = out[:, kernel.OUT_CONFIDENCE]
    data["exp_edge_bp"] = out[:, kernel.OUT_EDGE]
    data["drift_score"] = out[:, kernel.OUT_DRIFT]
    data["p_down"] = out[:, kernel.OUT_P_DOWN]
    data["p_flat"] = out[:, kernel.OUT_P_FLAT]
    data["p_up"] = out[:, kernel.OUT_P_UP]
    data["out_of_distribution"] = out[:, kernel.OUT_OOD] > 0
    return data


def result_of(out: np.ndarray) -> StepResult:
    return StepResult(
        state=int(out[kernel.OUT_STATE]),
        posterior=out[kernel.OUT_POSTERIOR :].copy(),
        action=ACTIONS[int(out[kernel.OUT_ACTION])],
        confidence=float(out[kernel.OUT_CONFIDENCE]),
        exp_edge_bp=float(out[kernel.OUT_EDGE]),
        drift_score=float(out[kernel.OUT_DRIFT]),
        p_down=float(out[kernel.OUT_P_DOWN]),
        p_flat=float(out[kernel.OUT_P_FLAT]),
        p_up=float(out[kernel.OUT_P_UP]),
        out_of_distribution=bool(out[kernel.OUT_OOD] > 0),
    )


class OnlineRegime:
    """Per-symbol online inference: one feature row per grid step, O(K^2) filter step."""

    def __init__(self, model: RegimeModel) -> None:
        self.model = model
        c = model.compiled()
        self._params = c.params
        self._state = c.new_state()
        self._width = len(model.columns)
        self._out = np.zeros(kernel.OUT_POSTERIOR + c.n_states)
        self._last_ts: int | None = None
        self._step_ns = model.step_ns

    @property
    def last_ts(self) -> int | None:
        """Grid timestamp of the last row stepped (None before the first)."""
        return self._last_ts

    def reset(self) -> None:
        self._state = self.model.compiled().new_state()
        self._last_ts = None

    def step_array(self, row: np.ndarray, ts_ns: int | None = None) -> np.ndarray:
        """Kernel output (kernel.OUT_* layout) for the next row; the array is reused."""
        if row.shape != (self._width,) or row.dtype != np.float64:
            if row.ndim != 1:
                raise FeatureInputError(f"one row per step: got an array of shape {row.shape}")
            row = self.model.check_rows(np.atleast_2d(row))[0]
        reset = self._last_ts is None or (
            ts_ns is not None and ts_ns - self._last_ts != self._step_ns
        )
        if not kernel._step(row, reset, *self._params, *self._state, self._out):
            self.model.check_rows(np.atleast_2d(row))  # raises, naming the column; state untouched
        self._last_ts = ts_ns if ts_ns is not None else (self._last_ts or 0) + self._step_ns
        return self._out

    def step(self, row: np.ndarray, ts_ns: int | None = None) -> StepResult:
        return result_of(self.step_array(np.asarray(row, dtype=np.float64), ts_ns))
