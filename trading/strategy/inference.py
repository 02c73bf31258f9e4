"""The inference seam: the strategy asks "this symbol's feature row at this grid step ->
model output" through `Inference`, in process (here) or over HTTP (serving's client).

Both return the kernel's output layout (`trading.regime.kernel.OUT_*`) and keep the
per-symbol filter state on their side of the seam.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from trading.errors import HmmTraderError, InputError
from trading.features.descriptor import FeatureSet
from trading.regime.streams import ModelStreams, StreamHistory

if TYPE_CHECKING:
    from trading.regime.model import RegimeModel


class ModelMismatchError(InputError):
    """The model cannot read what the strategy computes (feature set or version)."""


class InferenceUnavailableError(HmmTraderError):
    """Inference did not answer (server down, timed out, refused): the strategy takes no
    new risk on that step, counts LATENCY and tries again later."""


class Inference(Protocol):
    version: str  # the model version that answers, e.g. "3"
    feature_set: FeatureSet
    n_states: int
    horizon_s: float  # the policy's label horizon: how long a position is meant to be held
    # the model's calibrated drift threshold (its own training scores' quantile); the DRIFT
    # guardrail never blocks below it
    drift_limit: float

    def step(self, symbol: str, row: np.ndarray, ts_ns: int) -> np.ndarray: ...


class InProcessInference:
    """A registry model run in this process, one online filter per symbol. Pass the
    history of the model it replaces to take over its streams (see trading.regime.streams).
    Either feature set: the strategy computes FEATURES_V1 from ticks and BARS_V1 from bars."""

    def __init__(
        self, model: RegimeModel, version: int | str, history: StreamHistory | None = None
    ) -> None:
        self.model = model
        self.version = str(version)
        self.feature_set = model.feature_set
        self.n_states = model.n_states
        self.horizon_s = model.horizon_s
        self.drift_limit = model.drift_limit()
        self.history = history if history is not None else StreamHistory(0)
        self._streams = ModelStreams(model, self.history)

    def step(self, symbol: str, row: np.ndarray, ts_ns: int) -> np.ndarray:
        return self._streams.step(symbol, row, ts_ns)
