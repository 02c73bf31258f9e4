"""Inference-server test helpers: a real registry (MLflow, SQLite under a state root) with
real fitted versions, and a real `hmmtrader serve` process on a free loopback port."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.integration.mlflow_server import free_port
from tests.regime_fixtures import fast_settings, fitted_model, synthetic_dataset
from trading.regime.config import RegistrySettings
from trading.regime.model import RegimeModel
from trading.regime.pyfunc import input_example, signature_of
from trading.regime.registry import TAG_FINGERPRINT, Registry

HMMTRADER = str(Path(sys.executable).parent / "hmmtrader")
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


@dataclass
class ServerProcess:
    home: Path
    port: int
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)
    command: tuple[str, ...] = ("serve",)  # ("ops", "serve"): the ops API

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        cmd = [HMMTRADER, "--home", str(self.home), *self.command, "--port", str(self.port),
               "--log-level", "debug", "--access-log", *self.extra]  # fmt: skip
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed by the child's exit)
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not healthy in {timeout_s} s: {self.log()[-3000:]}")

    def wait_ready(self, version: int | None = None, timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = httpx.get(self.url + "/ready", timeout=5).json()
            if body["ready"] and (version is None or body["version"] == version):
                return body
            time.sleep(0.2)
        raise AssertionError(f"not ready with version {version}: {body}; {self.log()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def server_env(overrides: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HMMTRADER_")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    env.update(
        {
            "HMMTRADER_SERVING__TOKEN": TOKEN,
            "HMMTRADER_SERVING__POLL_INTERVAL_S": "0.5",
            "NO_PROXY": "127.0.0.1,localhost",
            "DO_NOT_TRACK": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
    )
    env.update(overrides or {})
    return env


def server(home: Path, log_path: Path, overrides: dict[str, str] | None = None) -> ServerProcess:
    return ServerProcess(home, free_port(), log_path, server_env(overrides))
