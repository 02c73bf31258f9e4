"""Feature-set descriptors: a name, an ordered column list, the parameters and a hash.

A descriptor travels with every feature file (Parquet metadata) and every model. Code that
receives features of another set (other name, columns or parameters) fails with
`FeatureVersionError` naming both versions, instead of silently mixing them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, model_validator

from trading.errors import HmmTraderError
from trading.frozen import Frozen

FEATURES_V1 = "FEATURES_V1"
BARS_V1 = "BARS_V1"
METADATA_KEY = b"hmmtrader.feature_set"


class FeatureVersionError(HmmTraderError):
    """Features of one set were handed to code that expects another."""


class FeatureParams(Frozen):
    """Parameters of FEATURES_V1 (all durations in seconds). Part of the descriptor hash."""

    grid_s: float = Field(default=1.0, gt=0, le=60)
    vol_window_s: float = Field(default=60.0, gt=0)  # realized volatility window
    flow_window_s: float = Field(default=10.0, gt=0)  # trade-sign imbalance / signed delta
    queue_halflife_s: float = Field(default=5.0, gt=0)  # decay of best-level size changes
    autocorr_window_s: float = Field(default=300.0, gt=0)  # return autocorrelation window
    standardize_window_s: float = Field(default=4500.0, gt=0)  # rolling z-score (75 min)
    standardize_min_s: float = Field(default=600.0, gt=0)  # warm-up before rows are ready
    z_clip: float = Field(default=10.0, gt=0)
    max_gap_s: float = Field(default=60.0, gt=0)  # a longer silence restarts the features
    funding: bool = False  # add time-to-funding and funding-rate (perpetuals)
    funding_interval_s: float = Field(default=8 * 3600.0, gt=0)

    @model_validator(mode="after")
    def _windows(self) -> FeatureParams:
        for name in (
            "vol_window_s",
            "flow_window_s",
            "autocorr_window_s",
            "standardize_window_s",
            "standardize_min_s",
            "max_gap_s",
        ):
            value = getattr(self, name)
            if value < self.grid_s:
                raise ValueError(f"{name} ({value}) is shorter than grid_s ({self.grid_s})")
        if self.standardize_min_s > self.standardize_window_s:
            raise ValueError(
                f"standardize_min_s ({self.standardize_min_s}) exceeds "
                f"standardize_window_s ({self.standardize_window_s})"
            )
        return self

    def steps(self, seconds: float) -> int:
        """A duration in grid steps (at least 1)."""
        return max(1, round(seconds / self.grid_s))


class BarParams(Frozen):
    """Parameters of BARS_V1 (1-minute klines; windows in bars)."""

    # the lake's bars are 1-minute bars (ingest refuses others): fixed at 60
    bar_s: float = Field(default=60.0, ge=60.0, le=60.0)
    vol_window: int = Field(default=30, ge=2)  # Parkinson volatility window
    volume_window: int = Field(default=240, ge=2)  # volume z-score window
    autocorr_window: int = Field(default=120, ge=4)
    standardize_window: int = Field(default=1440, ge=10)
    standardize_min: int = Field(default=120, ge=2)
    z_clip: float = Field(default=10.0, gt=0)
    max_gap_bars: int = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _windows(self) -> BarParams:
        if self.standardize_min > self.standardize_window:
            raise ValueError("standardize_min exceeds standardize_window")
        return self


# FEATURES_V1 base quantities, in order. Every one is standardized (model input `<name>`)
# and also kept raw (`raw_<name>`) for audit, the policy head's cost model and backtests.
TICK_FEATURES: tuple[str, ...] = (
    "mid",  # (bid + ask) / 2
    "spread_bp",  # (ask - bid) / mid
    "imbalance",  # (bid_size - ask_size) / (bid_size + ask_size), in [-1, 1]
    "microprice_bp",  # size-weighted microprice minus mid
    "rv_bp",  # sqrt(sum of squared 1-step log-mid returns over vol_window)
    "sign_imbalance",  # (buys - sells) / trades over flow_window
    "signed_delta",  # volume-weighted signed trade delta over flow_window, in [-1, 1]
    "bid_queue",  # decayed sum of best-bid size changes (order-flow style)
    "ask_queue",  # decayed sum of best-ask size changes
    "autocorr_1",  # return autocorrelation at lag 1 step over autocorr_window
    "autocorr_2",  # ... at lag 2 steps
)
FUNDING_FEATURES: tuple[str, ...] = ("time_to_funding_h", "funding_rate_bp")
BAR_FEATURES: tuple[str, ...] = (
    "log_return_bp",
    "parkinson_bp",
    "volume_z",
    "autocorr_1",
)


@dataclass(frozen=True)
class FeatureSet:
    """What a feature file or a model was built with."""

    name: str
    base: tuple[str, ...]
    params: dict[str, Any] = field(hash=False)

    @property
    def columns(self) -> list[str]:
        """Model inputs, in order: the standardized values."""
        return list(self.base)

    @property
    def raw_columns(self) -> list[str]:
        return [f"raw_{name}" for name in self.base]

    @property
    def hash(self) -> str:
        payload = json.dumps(
            {"name": self.name, "columns": self.columns, "params": self.params},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def version(self) -> str:
        """Human-readable identity, e.g. FEATURES_V1@3fa2c1d09b6e4a7f."""
        return f"{self.name}@{self.hash}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "columns": self.columns,
            "raw_columns": self.raw_columns,
            "params": self.params,
            "hash": self.hash,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSet:
        try:
            fs = cls(str(data["name"]), tuple(data["columns"]), dict(data["params"]))
        except (KeyError, TypeError) as exc:
            raise FeatureVersionError(f"malformed feature-set descriptor: {exc}") from exc
        if "hash" in data and data["hash"] != fs.hash:
            raise FeatureVersionError(
                f"feature-set descriptor {fs.name} says hash {data['hash']} but its content "
                f"hashes to {fs.hash}: the descriptor was edited"
            )
        return fs

    @classmethod
    def from_json(cls, text: str | bytes) -> FeatureSet:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FeatureVersionError(f"feature-set descriptor is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise FeatureVersionError("feature-set descriptor must be a JSON object")
        return cls.from_dict(data)

    def feature_params(self) -> FeatureParams:
        if self.name != FEATURES_V1:
            raise FeatureVersionError(f"{self.version} is not a {FEATURES_V1} set")
        return FeatureParams(**self.params)

    def bar_params(self) -> BarParams:
        if self.name != BARS_V1:
            raise FeatureVersionError(f"{self.version} is not a {BARS_V1} set")
        return BarParams(**self.params)

    def require(self, other: FeatureSet, what: str = "features") -> None:
        """Raise unless `other` (what was received) is exactly this set."""
        if other.name != self.name or other.hash != self.hash:
            changed = sorted(
                k
                for k in set(self.params) | set(other.params)
                if self.params.get(k) != other.params.get(k)
            )
            detail = f" (parameters differ: {', '.join(changed)})" if changed else ""
            if other.columns != self.columns:
                detail += " (columns differ)"
            raise FeatureVersionError(
                f"{what} are {other.version} but {self.version} is expected{detail}; "
                f"recompute them with `hmmtrader features` using the expected parameters"
            )


def feature_kind(fs: FeatureSet) -> str:
    """The lake kind of a feature set's files: features_v1, bars_v1."""
    return fs.name.lower()


def features_v1(params: FeatureParams | None = None) -> FeatureSet:
    params = params or FeatureParams()
    base = TICK_FEATURES + (FUNDING_FEATURES if params.funding else ())
    return FeatureSet(FEATURES_V1, base, params.model_dump())


def bars_v1(params: BarParams | None = None) -> FeatureSet:
    params = params or BarParams()
    return FeatureSet(BARS_V1, BAR_FEATURES, params.model_dump())
