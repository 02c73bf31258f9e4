"""`mlflow server` on a free loopback port, with a backend store and proxied artifacts
(clients upload and download through the server into `artifacts`), in its own process
group through the product's helper (it forks uvicorn workers that outlive a plain kill)."""

from __future__ import annotations

from pathlib import Path

from trading.process import LOOPBACK, ServerProcess, child_env, free_port, venv_exe

HEALTH_TIMEOUT_S = 180.0  # ~13 s on an idle 2-core machine; far more under load


class MlflowServer(ServerProcess):
    def __init__(self, backend_uri: str, artifacts: Path, log: Path) -> None:
        self.artifacts = artifacts
        artifacts.mkdir(parents=True, exist_ok=True)
        port = free_port()
        super().__init__(
            "mlflow server",
            [venv_exe("mlflow"), "server", "--backend-store-uri", backend_uri,
             "--serve-artifacts", "--artifacts-destination", str(artifacts),
             "--host", LOOPBACK, "--port", str(port), "--workers", "1"],
            log, env=child_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}),
            cwd=artifacts.parent, url=f"http://{LOOPBACK}:{port}", health_path="/health",
            timeout_s=HEALTH_TIMEOUT_S,
        )  # fmt: skip
