"""The check a registry version must pass before anything trades or serves it (see
trading.regime.slots)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from trading.regime import kernel
from trading.regime.model import RegimeModel
from trading.regime.pyfunc import output_columns, predict_frame
from trading.regime.streams import ModelStreams, StreamHistory


def unwrap(pyfunc: Any) -> tuple[RegimeModel, pd.DataFrame | None]:
    """The RegimeModel inside a loaded MLflow pyfunc, and the input example it was logged
    with (None when it has none)."""
    model = pyfunc.unwrap_python_model().model
    if not isinstance(model, RegimeModel):
        raise TypeError(f"the pyfunc wraps a {type(model).__name__}, not a RegimeModel")
    example = pyfunc.input_example
    return model, example if isinstance(example, pd.DataFrame) else None


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
