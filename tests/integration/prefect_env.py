"""Prefect integration-test helpers: a real `prefect server` (SQLite or PostgreSQL), its
REST API, the `prefect` CLI and a process worker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from flows.server import LocalPrefectServer
from tests.integration.processes import profile_env
from tests.shared import shared_dir
from trading.process import ServerProcess, child_env, venv_exe

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def server_extra_env() -> dict[str, str]:
    """Scheduler loops every 2 s (default 60) so cron runs appear while the test waits."""
    return {
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }


def _build_migrated(path: Path) -> None:
    path.mkdir(parents=True)
    env = child_env({"PREFECT_HOME": str(path), "PREFECT_LOGGING_LEVEL": "WARNING"},
                    drop_prefixes=("PREFECT_",))  # fmt: skip
    subprocess.run(
        [venv_exe("prefect"), "server", "database", "upgrade", "-y"], env=env, cwd=path,
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip


def migrated_database() -> Path:
    """An empty Prefect SQLite database with every migration applied, built once per run:
    a server spends about 9 s of CPU migrating a new one (15 s to healthy instead of 6)."""
    return shared_dir("prefect-db", _build_migrated) / "prefect.db"


def new_server(
    tmp: Path, database_url: str | None = None, timeout_s: float = 180
) -> LocalPrefectServer:
    """Not started yet. `timeout_s` counts from the launch: generous, as several servers
    may start at once on a busy machine (and one launched early may be waited for later).
    On SQLite it starts from a copy of the run's migrated database."""
    prefect_home = tmp / "prefect-server"
    if database_url is None:
        prefect_home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(migrated_database(), prefect_home / "prefect.db")
    return LocalPrefectServer(
        prefect_home, database_url=database_url, extra_env=server_extra_env(),
        timeout_s=timeout_s,
    )  # fmt: skip


@contextmanager
def prefect_server(tmp: Path, database_url: str | None = None) -> Iterator[LocalPrefectServer]:
    with new_server(tmp, database_url) as server:
        yield server


class Api:
    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=30)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.client.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def get(self, path: str) -> Any:
        response = self.client.get(path)
        response.raise_for_status()
        return response.json()

    def flow_runs(self, **filters: Any) -> list[dict[str, Any]]:
        return list(self.post("/flow_runs/filter", {"flow_runs": filters, "limit": 200}))

    def latest_artifact(self, key: str) -> dict[str, Any]:
        return dict(self.get(f"/artifacts/{key}/latest"))

    def artifacts(self, flow_run_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """All artifacts, or those of the given flow runs."""
        body: dict[str, Any] = {"limit": 200, "sort": "CREATED_DESC"}
        if flow_run_ids is not None:
            body["flow_runs"] = {"id": {"any_": list(flow_run_ids)}}
        return list(self.post("/artifacts/filter", body))

    def wait_run(self, run_id: str, timeout_s: float) -> dict[str, Any]:
        """The run once it is final; AssertionError after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.get(f"/flow_runs/{run_id}")
            if run["state"] and run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED",
                                                         "CANCELLED"):  # fmt: skip
                return dict(run)
            time.sleep(1)
        raise AssertionError(f"flow run {run_id} did not finish in {timeout_s:.0f} s")


def cli_env(api_url: str, prefect_home: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment of `prefect` CLI and worker processes: the test profile and `extra`,
    on the server at `api_url` (nothing inherited of HMMTRADER_* or PREFECT_*)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return profile_env(
        {
            "PREFECT_API_URL": api_url,
            "PREFECT_HOME": str(prefect_home),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_CLI_COLORS": "false",
            **extra,
        },
        base=base,
    )


def prefect_cli(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        [str(BIN / "prefect"), *args], cwd=PROJECT, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@contextmanager
def worker(env: dict[str, str], log: Path, pool: str = "hmmtrader") -> Iterator[ServerProcess]:
    """`prefect worker start` on `pool` for the block (its process group stopped after)."""
    process = ServerProcess(
        "prefect worker",
        [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"],
        log, env=env, cwd=PROJECT,
    )  # fmt: skip
    with process.launch():
        yield process
