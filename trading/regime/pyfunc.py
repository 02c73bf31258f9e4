"""The MLflow pyfunc flavour of a RegimeModel: artifacts, signature, predict on a frame.

`predict` takes one symbol's feature rows in time order (the feature file's columns:
standardized then raw_, optional ts_ns) and returns per row: state, posterior_<k>, action,
confidence, exp_edge_bp, drift_score, the class probabilities and out_of_distribution. The forward filter
starts at the first row and restarts where ts_ns skips a grid step.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from trading.regime.model import FeatureInputError, RegimeModel, output_table

MODEL_FILE = "regime_model.pkl"
PARAM_FEATURE_VERSION = "feature_version"


def output_columns(k: int) -> list[str]:
    return [
        "state",
        *[f"posterior_{s}" for s in range(k)],
        "action",
        "confidence",
        "exp_edge_bp",
        "drift_score",
        "p_down",
        "p_flat",
        "p_up",
        "out_of_distribution",
    ]


def predict_frame(
    model: RegimeModel, frame: pd.DataFrame, feature_version: str | None = None
) -> pd.DataFrame:
    if feature_version and feature_version != model.feature_set.version:
        raise FeatureInputError(
            f"rows are {feature_version} but the model was trained on {model.feature_set.version}"
        )
    missing = [c for c in model.columns if c not in frame.columns]
    if missing:
        raise FeatureInputError(
            f"{model.feature_set.version} input lacks column(s) {', '.join(missing)}"
        )
    X = frame[model.columns].to_numpy(dtype=np.float64)
    ts = frame["ts_ns"].to_numpy(dtype=np.int64) if "ts_ns" in frame.columns else None
    out = model.predict_array(X, ts)
    data = output_table(out)
    return pd.DataFrame(data, index=frame.index)


class RegimePyfunc(PythonModel):
    """Loads the pickled RegimeModel from the version's artifacts."""

    def load_context(self, context: Any) -> None:
        with open(context.artifacts["regime_model"], "rb") as fh:
            self.model: RegimeModel = pickle.load(fh)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        version = (params or {}).get(PARAM_FEATURE_VERSION) or None
        return predict_frame(self.model, model_input, version)


def signature_of(model: RegimeModel) -> ModelSignature:
    in_specs: list[ColSpec | TensorSpec] = [ColSpec("double", c) for c in model.columns]
    inputs = Schema([*in_specs, ColSpec("long", "ts_ns", required=False)])
    out_specs: list[ColSpec | TensorSpec] = [ColSpec("long", "state")]
    out_specs += [ColSpec("double", f"posterior_{s}") for s in range(model.n_states)]
    out_specs += [ColSpec("string", "action")]
    out_specs += [
        ColSpec("double", c)
        for c in ("confidence", "exp_edge_bp", "drift_score", "p_down", "p_flat", "p_up")
    ]
    out_specs += [ColSpec("boolean", "out_of_distribution")]
    params = ParamSchema([ParamSpec(PARAM_FEATURE_VERSION, "string", "")])
    return ModelSignature(inputs=inputs, outputs=Schema(out_specs), params=params)


def input_example(
    model: RegimeModel, X: np.ndarray, ts_ns: np.ndarray, rows: int = 5
) -> pd.DataFrame:
    frame = pd.DataFrame(X[:rows], columns=model.columns)
    frame["ts_ns"] = ts_ns[:rows].astype(np.int64)
    return frame


def write_artifacts(
    model: RegimeModel, directory: Path, training_config: dict[str, Any]
) -> dict[str, str]:
    """The version's files: the pickled model plus readable JSON copies of its parts."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "regime_model": directory / MODEL_FILE,
        "feature_set": directory / "feature_set.json",
        "drift_reference": directory / "drift_reference.json",
        "state_labels": directory / "state_labels.json",
        "training_config": directory / "training_config.json",
    }
    with open(files["regime_model"], "wb") as fh:
        pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)
    files["feature_set"].write_text(model.feature_set.to_json())
    files["drift_reference"].write_text(
        json.dumps(
            {
                "columns": model.feature_set.columns,
                "edges": model.drift_edges.tolist(),
                "log_probabilities": model.drift_ref_logp.tolist(),
                "settings": model.drift_settings.model_dump(),
                "threshold": model.drift_limit(),  # calibrated on the training window
            }
        )
    )
    files["state_labels"].write_text(
        json.dumps(
            {
                "order": "ascending volatility (state 0 = calmest)",
                "fit_state_of": model.state_order.tolist(),
                "states": model.info.get("state_table", []),
            },
            default=float,
        )
    )
    files["training_config"].write_text(json.dumps(training_config, default=str, indent=1))
    return {name: str(path) for name, path in files.items()}
