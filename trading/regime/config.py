"""Configuration of the regime model, its policy head, drift and the model registry."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from trading.features.descriptor import BARS_V1, FEATURES_V1
from trading.frozen import DAY_S, MAX_BP, Frozen

_INPUT = re.compile(r"^(?:(log)\((\w+)\)|(\w+))$")
CovarianceType = Literal["full", "diag", "spherical", "tied"]
Calibration = Literal["temperature", "sigmoid", "isotonic"]
# the drift score is a mean KL divergence (nats) against the reference's quantile bins,
# each holding about 1/bins of it: it stays below log(bins) <= log(100) ~ 4.6, so a larger
# threshold never acts; 10 is the most the settings accept
MAX_DRIFT = 10.0


def parse_input(text: str) -> tuple[str, bool]:
    """'log(raw_rv_bp)' -> ('raw_rv_bp', True); 'imbalance' -> ('imbalance', False)."""
    match = _INPUT.match(text.strip())
    if not match:
        raise ValueError(f"HMM input {text!r} must be a column name or log(<column>)")
    if match.group(1):
        return match.group(2), True
    return match.group(3), False


class RegimeSettings(Frozen):
    """HMM regime detector: inputs, model search and splits."""

    feature_set: Literal["features_v1", "bars_v1"] = "features_v1"
    # HMM inputs per feature set: columns of the feature file (standardized or raw_), log()
    # for positive raw quantities. The model standardizes them with training statistics.
    inputs: dict[str, list[str]] = Field(
        default_factory=lambda: {
            FEATURES_V1: ["log(raw_spread_bp)", "log(raw_rv_bp)"],
            BARS_V1: ["log(raw_parkinson_bp)", "volume_z"],
        }
    )
    covariance_type: CovarianceType = "full"
    k_min: int = Field(default=3, ge=2, le=10)
    k_max: int = Field(default=5, ge=2, le=10)
    # K is the smallest number of states whose held-out (validation) log-likelihood per row
    # is at most this far (nats) below the best K's: a larger K must gain more than this per
    # held-out row to be chosen. Per row, so the rule does not drift with the sample size.
    k_min_gain_per_row: float = Field(default=0.05, ge=0, le=10)
    restarts: int = Field(default=3, ge=1, le=20)  # random initialisations per K
    max_iter: int = Field(default=100, ge=1, le=10_000)  # EM iterations per fit
    tol_per_row: float = Field(default=1e-5, gt=0)  # EM stops when log-lik gain < this * rows
    seed: int = Field(default=42, ge=0)
    validation_fraction: float = Field(default=0.2, gt=0, lt=0.9)  # last part of the range
    # gap between fitting and validation
    embargo_s: float = Field(default=600.0, ge=0, le=7 * DAY_S)
    min_train_rows: int = Field(default=2_000, ge=50)
    min_validation_rows: int = Field(default=500, ge=20)
    min_state_entropy: float = Field(default=0.1, ge=0)  # nats, decoded states on validation
    # fits with a shorter-lived state are skipped (0: off)
    min_dwell_s: float = Field(default=0.0, ge=0, le=DAY_S)
    partial_fit_iter: int = Field(default=5, ge=1, le=1_000)  # EM steps of partial_fit

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, items in value.items():
            if name not in (FEATURES_V1, BARS_V1):
                raise ValueError(f"inputs: unknown feature set {name!r}")
            if not items:
                raise ValueError(f"inputs.{name}: at least one input is required")
            for item in items:
                parse_input(item)
        return value

    @model_validator(mode="after")
    def _k_range(self) -> RegimeSettings:
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) exceeds k_max ({self.k_max})")
        return self

    def inputs_for(self, feature_set_name: str) -> list[tuple[str, bool]]:
        items = self.inputs.get(feature_set_name)
        if not items:
            raise ValueError(f"regime.inputs has no entry for {feature_set_name}")
        return [parse_input(item) for item in items]


class PolicySettings(Frozen):
    """Policy head: direction of the forward return net of costs -> BUY / SELL / HOLD.

    FEATURES_V1 (ticks) uses horizon_s and extra_cost_bp (on top of each row's spread);
    BARS_V1 (1-minute bars, no spread) uses horizon_bars and the per-side bar_fee_bp and
    bar_slippage_bp (see `horizon_steps`, `round_trip_bp`). act_threshold and min_edge_bp
    (bp after the round trip) apply to both."""

    horizon_s: float = Field(default=60.0, gt=0, le=DAY_S)  # FEATURES_V1 forward-return horizon
    # FEATURES_V1, added to the spread: 2 x 10 bp Binance spot taker fees + 2 bp slippage
    extra_cost_bp: float = Field(default=22.0, ge=0, le=MAX_BP)
    act_threshold: float = Field(default=0.6, gt=0, lt=1)  # class probability to act
    min_edge_bp: float = Field(default=8.0, ge=0, le=MAX_BP)  # expected edge after costs to act
    # BARS_V1: forward-return horizon in bars (1 hour of 1-minute bars: the typical move
    # then exceeds the round trip), costs per side (a round trip pays them twice)
    horizon_bars: int = Field(default=60, ge=1, le=10_000)
    bar_fee_bp: float = Field(default=10.0, ge=0, le=MAX_BP)  # Binance spot taker fee per side
    bar_slippage_bp: float = Field(default=1.0, ge=0, le=MAX_BP)  # per side
    max_iter: int = Field(default=60, ge=1, le=5_000)  # boosting iterations
    learning_rate: float = Field(default=0.1, gt=0, le=1)
    max_leaf_nodes: int = Field(default=8, ge=2, le=255)
    min_samples_leaf: int = Field(default=200, ge=1)
    l2_regularization: float = Field(default=1.0, ge=0)
    calibration: Calibration = "temperature"
    calibration_fraction: float = Field(default=0.5, gt=0, lt=1)  # of the validation window

    def horizon_steps(self, feature_set_name: str, step_s: float) -> int:
        """The label horizon in rows: horizon_bars for BARS_V1, horizon_s / grid else."""
        if feature_set_name == BARS_V1:
            # a policy pickled before horizon_bars existed: its default
            return int(getattr(self, "horizon_bars", 60))
        return max(1, round(self.horizon_s / step_s))

    def round_trip_bp(self) -> float:
        """BARS_V1 cost of a round trip (no spread in bars): fee and slippage, both sides."""
        return 2.0 * (self.bar_fee_bp + self.bar_slippage_bp)


class DriftSettings(Frozen):
    """Feature drift: KL divergence of a recent window against the training reference."""

    bins: int = Field(default=10, ge=3, le=100)  # quantile bins of the reference
    window_s: float = Field(default=3600.0, gt=0, le=7 * DAY_S)  # recent window scored
    min_rows: int = Field(default=60, ge=1)  # fewer rows in the window: score 0
    # above the threshold confidence is scaled down. With calibration_quantile set, the
    # model's threshold is that quantile of its own rolling score over the training rows,
    # but never below `threshold` (a floor: a quiet training window does not make the alarm
    # fire on noise); None: `threshold` as is. The model records the threshold it uses.
    threshold: float = Field(default=0.5, gt=0, le=MAX_DRIFT)
    calibration_quantile: float | None = Field(default=0.99, ge=0.5, lt=1)
    confidence_scale: float = Field(default=0.5, ge=0, le=1)


class RegistrySettings(Frozen):
    """MLflow tracking and model registry."""

    tracking_uri: str | None = None  # default: sqlite:///<home>/mlflow/mlflow.db
    experiment: str = Field(default="hmm-regime", min_length=1)
    model_name: str = Field(default="hmm-regime", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
