"""Blue/green model slots: the active model answers, a standby slot takes the next version.

A version is loaded from the registry (`models:/<name>/<version>`), smoke-tested on the
input example it was logged with (the batch pyfunc and the online filter must agree and
give sane numbers), and only then swapped in. The swap is one reference assignment on the
event loop: a request that picked up the old model finishes on it.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from trading.errors import HmmTraderError
from trading.regime import kernel
from trading.regime.model import RegimeModel
from trading.regime.pyfunc import output_columns, predict_frame
from trading.regime.registry import Registry
from trading.regime.streams import ModelStreams, StreamHistory

log = logging.getLogger("hmmtrader.serving")


class ModelLoadError(HmmTraderError):
    """A version could not be loaded or failed its smoke test; it was not activated."""

    def __init__(self, version: int, stage: str, message: str) -> None:
        super().__init__(f"version {version} failed to {stage}: {message}")
        self.version = version
        self.stage = stage
        self.message = message


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class LoadedModel:
    name: str
    version: int
    model: RegimeModel
    streams: ModelStreams
    loaded_at: str = field(default_factory=now_iso)

    @property
    def feature_version(self) -> str:
        return self.model.feature_set.version

    def info(self) -> dict[str, Any]:
        m = self.model
        return {
            "version": self.version,
            "loaded_at": self.loaded_at,
            "feature_version": m.feature_set.version,
            "columns": m.columns,
            "n_states": m.n_states,
            "horizon_s": float(m.policy_settings.horizon_s),
            "feature_set": m.feature_set.to_dict(),
        }


def smoke_test(model: RegimeModel, example: pd.DataFrame | None) -> None:
    """The logged input example through the batch pyfunc path and the online filter: both
    must give finite numbers, states in range, posteriors summing to 1, and agree."""
    if example is None or len(example) == 0:
        raise ValueError("the version has no input example to smoke-test on")
    frame = predict_frame(model, example)
    missing = [c for c in output_columns(model.n_states) if c not in frame.columns]
    if missing:
        raise ValueError(f"predict output lacks {', '.join(missing)}")
    numeric = frame.drop(columns=["action"]).to_numpy(dtype=np.float64)
    if not np.isfinite(numeric).all():
        raise ValueError("predict gave non-finite numbers on the input example")
    states = frame["state"].to_numpy()
    if states.min() < 0 or states.max() >= model.n_states:
        raise ValueError(f"states out of range 0..{model.n_states - 1}")
    post = frame[[f"posterior_{k}" for k in range(model.n_states)]].to_numpy()
    if not np.allclose(post.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("posteriors do not sum to 1")
    streams = ModelStreams(model, StreamHistory(0))
    x = example[model.columns].to_numpy(dtype=np.float64)
    ts = (
        example["ts_ns"].to_numpy(dtype=np.int64)
        if "ts_ns" in example.columns
        else np.arange(len(x), dtype=np.int64) * model.step_ns
    )
    batch = model.predict_array(x, ts)
    for i in range(len(x)):
        online = streams.step("smoke", x[i], int(ts[i]))
        if not np.allclose(online, batch[i], rtol=1e-9, atol=1e-9):
            raise ValueError(f"online and batch inference disagree at example row {i}")
    if not np.isfinite(batch[:, kernel.OUT_POSTERIOR :]).all():
        raise ValueError("non-finite posteriors")


def load_version(registry: Registry, version: int, history: StreamHistory) -> LoadedModel:
    """Load and smoke-test one version (blocking: call it in a worker thread)."""
    try:
        pyfunc, version = registry.load_pyfunc(version)
        model = pyfunc.unwrap_python_model().model
        if not isinstance(model, RegimeModel):
            raise TypeError(f"the pyfunc wraps a {type(model).__name__}, not a RegimeModel")
        example = pyfunc.input_example
    except Exception as exc:  # MLflow, unpickling, a missing artifact: all are "load"
        raise ModelLoadError(version, "load", f"{type(exc).__name__}: {exc}") from exc
    try:
        smoke_test(model, example if isinstance(example, pd.DataFrame) else None)
    except Exception as exc:
        raise ModelLoadError(version, "pass its smoke test", str(exc)) from exc
    return LoadedModel(registry.name, version, model, ModelStreams(model, history))
