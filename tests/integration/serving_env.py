"""Inference-server test helpers: a real registry (MLflow, SQLite under a state root) with
real fitted versions, and a real `hmmtrader serve` process on a free loopback port."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.integration.processes import hmmtrader_server, profile_env
from tests.regime_fixtures import fast_settings, fitted_model, synthetic_dataset
from trading.process import ServerProcess
from trading.regime.config import RegistrySettings
from trading.regime.model import RegimeModel
from trading.regime.pyfunc import input_example, signature_of
from trading.regime.registry import TAG_FINGERPRINT, Registry

TOKEN = "s3cret-test-token-7f2a"
SECONDS = 6 * 3600  # synthetic hours per model


def model_and_rows(k: int) -> tuple[RegimeModel, np.ndarray, np.ndarray]:
    """A real model with k states fitted (fast settings) on 6 synthetic hours, and the
    feature rows (ts_ns, X) it was fit on."""
    settings = fast_settings(k_min=k, k_max=k)
    model, _ = fitted_model(seconds=SECONDS, settings=settings)
    data, _ = synthetic_dataset(seconds=SECONDS)
    ts, X = data.frames["BTCUSDT"]
    return model, ts, X


def register(
    registry: Registry, model: RegimeModel, ts: np.ndarray, X: np.ndarray, tag: str
) -> int:
    """Register `model` as a new version (the pipeline's path, minus the training files)."""
    reg = registry.register(
        model,
        run_name=f"serving test {tag}",
        params={"tag": tag},
        metrics={"rows": float(len(X))},
        version_tags={TAG_FINGERPRINT: tag, "kind": "test"},
        write_files=lambda d: d.mkdir(parents=True, exist_ok=True),
        signature=signature_of(model),
        input_example=input_example(model, X, ts),
        training_config={"tag": tag},
    )
    return reg.version


def broken(model: RegimeModel) -> RegimeModel:
    """A model that loads but gives NaN (its smoke test must fail)."""
    bad = copy.deepcopy(model)
    bad.hmm.means_ = np.full_like(bad.hmm.means_, np.nan)
    bad._compiled = None
    return bad


def registry_at(home: Path) -> Registry:
    return Registry(RegistrySettings(), home)


class InferenceServer(ServerProcess):
    """`hmmtrader serve`, with a wait for the version it answers with."""

    def wait_ready(self, version: int | None = None, timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = httpx.get(self.url + "/ready", timeout=5).json()
            if body["ready"] and (version is None or body["version"] == version):
                return body
            time.sleep(0.2)
        raise AssertionError(f"not ready with version {version}: {body}; {self.log()[-2000:]}")


def server_env(overrides: dict[str, str] | None = None) -> dict[str, str]:
    return profile_env(
        {
            "HMMTRADER_SERVING__TOKEN": TOKEN,
            "HMMTRADER_SERVING__POLL_INTERVAL_S": "0.5",
            **(overrides or {}),
        }
    )


def server(home: Path, log_path: Path, overrides: dict[str, str] | None = None) -> InferenceServer:
    srv = hmmtrader_server(home, ("serve",), log_path, server_env(overrides), cls=InferenceServer)
    assert isinstance(srv, InferenceServer)
    return srv
