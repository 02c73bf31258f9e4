"""`hmmtrader demo` end to end (the README's first command, here on the test profile, one
night of 3-hour days, as the flow tests), and its printed commands open UIs that show the runs."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from hmmtrader.cli import run
from tests.integration.cli_env import isolated_env
from tests.integration.prefect_env import BIN, PROJECT
from tests.profile import LENIENT, THIN
from trading.process import ServerProcess, child_env, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _ui(command: str, port: int, health: str, log: Path, extra: dict[str, str]) -> ServerProcess:
    """A UI command the demo printed, on another free port (its only change)."""
    command = re.sub(r"^PORT=\d+;", f"PORT={port};", command)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return ServerProcess(
        command.split()[0], ["bash", "-c", command], log, env=child_env(extra, base=base),
        cwd=PROJECT, url=f"http://127.0.0.1:{port}", health_path=health, timeout_s=180,
    )  # fmt: skip


def test_demo_runs_a_night_and_its_ui_commands_show_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the real console script in its own process, as `make demo` runs it (Prefect's logging
    # set up there, not on pytest's captured streams)
    home = tmp_path / "home"
    # the replay node's metrics on a free port (8070 may be another test's)
    metrics = {"HMMTRADER_NODE__METRICS_PORT": str(free_port())}
    with isolated_env({**LENIENT, **THIN, **metrics, "COLUMNS": "200"}):
        env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [str(BIN / "hmmtrader"), "--home", str(home), "demo", "--nights", "1", "--hours", "3"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "Demo finished" in out and "promoted" in out
    assert f"hmmtrader --home {home} up; or only the UIs" in out  # the whole stack, one command
    # MLflow's own lines (log_model's warnings) stay out; --debug shows them
    assert " mlflow." not in out + done.stderr, [
        line for line in (out + done.stderr).splitlines() if " mlflow." in line
    ]
    # the trading node replayed the last hour against the production version
    assert "node replay stopped cleanly" in out, out[-3000:]
    assert re.search(r"hmm-regime\s+│\s+1\s+│\s+new\s+│\s+passed", out)
    commands = [line.strip() for line in out.splitlines() if "--port" in line]
    prefect_cmd = next(c for c in commands if "prefect server start" in c)
    mlflow_cmd = next(c for c in commands if "mlflow ui" in c)
    assert str(home.resolve()) in prefect_cmd and str(home.resolve()) in mlflow_cmd

    # both UIs at once, each on a free port (the printed commands' only change);
    # MLFLOW_WORKERS=1: `mlflow ui` starts one uvicorn worker instead of four, and no job
    # runner (MLflow's GenAI jobs, unused here)
    prefect_ui = _ui(prefect_cmd, free_port(), "/api/health", tmp_path / "prefect-ui.log", {})
    mlflow_ui = _ui(mlflow_cmd, free_port(), "/health", tmp_path / "mlflow-ui.log",
                    {"MLFLOW_WORKERS": "1", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # fmt: skip
    with prefect_ui.launch(), mlflow_ui.launch():
        prefect_ui.wait_healthy()
        api = f"{prefect_ui.url}/api"
        runs = httpx.post(f"{api}/flow_runs/filter", json={"limit": 50}).json()
        names = {r["name"]: r["state"]["type"] for r in runs}
        assert names.get("nightly-retrain-2024-01-02") == "COMPLETED", names
        assert httpx.get(f"{prefect_ui.url}/").status_code == 200  # the UI
        # the UI's pages take their API from /ui-settings: this port, not 4200
        ui_api = httpx.get(f"{prefect_ui.url}/ui-settings").json()["api_url"]
        assert ui_api == api and httpx.get(f"{ui_api}/health").status_code == 200
        prefect_ui.stop()

        mlflow_ui.wait_healthy()
        got = httpx.get(
            f"{mlflow_ui.url}/api/2.0/mlflow/registered-models/get",
            params={"name": "hmm-regime"},
        ).json()
        aliases = {a["alias"]: a["version"] for a in got["registered_model"]["aliases"]}
        assert aliases["production"] == "1"

    assert run(["--home", str(home), "demo", "--nights", "0"]) == 1
    assert "--nights must be between 1 and 5" in capsys.readouterr().err
    assert run(["--home", str(home), "demo", "--hours", "25"]) == 1
    assert "--hours must be between 2 and 24" in capsys.readouterr().err
