"""`hmmtrader demo` end to end (the README's first command, here on the fast test
settings and one night), and its printed commands open UIs that show the runs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from hmmtrader.cli import run
from tests.integration.cli_env import isolated_env
from tests.integration.mlflow_server import free_port
from tests.integration.prefect_env import BIN, FAST, LENIENT, PROJECT

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


def _launch(
    command: str, port: int, log: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    command = re.sub(r"--port \d+", f"--port {port}", command)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env |= {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true", "NO_PROXY": "127.0.0.1,localhost"}  # fmt: skip
    env |= extra_env or {}
    with open(log, "wb") as out:
        return subprocess.Popen(["bash", "-c", command], cwd=PROJECT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def _wait_healthy(process: subprocess.Popen[bytes], port: int, health: str, log: Path) -> None:
    """Until GET `health` answers 200 (the process must stay up)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-2000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}{health}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise AssertionError(f"{process.args!r} not healthy: {log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass


def test_demo_runs_a_night_and_its_ui_commands_show_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the real console script in its own process, as `make demo` runs it (Prefect's logging
    # set up there, not on pytest's captured streams)
    home = tmp_path / "home"
    # the replay node's metrics on a free port (8070 may be another test's)
    metrics = {"HMMTRADER_NODE__METRICS_PORT": str(free_port())}
    with isolated_env({**FAST, **LENIENT, **metrics, "COLUMNS": "200"}):
        env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [str(BIN / "hmmtrader"), "--home", str(home), "demo", "--nights", "1", "--hours", "8"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "Demo finished" in out and "promoted" in out
    # the trading node replayed the last hour against the production version
    assert "node replay stopped cleanly" in out, out[-3000:]
    assert re.search(r"hmm-regime\s+│\s+1\s+│\s+new\s+│\s+passed", out)
    commands = [line.strip() for line in out.splitlines() if "--port" in line]
    prefect_cmd = next(c for c in commands if "prefect server start" in c)
    mlflow_cmd = next(c for c in commands if "mlflow ui" in c)
    assert str(home.resolve()) in prefect_cmd and str(home.resolve()) in mlflow_cmd

    # both UIs at once, each on a free port (the printed commands' only change);
    # MLFLOW_WORKERS=1: `mlflow ui` starts one uvicorn worker instead of four
    prefect_port, mlflow_port = free_port(), free_port()
    prefect_log, mlflow_log = tmp_path / "prefect-ui.log", tmp_path / "mlflow-ui.log"
    prefect_ui = _launch(prefect_cmd, prefect_port, prefect_log)
    try:
        mlflow_ui = _launch(mlflow_cmd, mlflow_port, mlflow_log, {"MLFLOW_WORKERS": "1"})
        try:
            _wait_healthy(prefect_ui, prefect_port, "/api/health", prefect_log)
            api = f"http://127.0.0.1:{prefect_port}/api"
            runs = httpx.post(f"{api}/flow_runs/filter", json={"limit": 50}).json()
            names = {r["name"]: r["state"]["type"] for r in runs}
            assert names.get("nightly-retrain-2024-01-02") == "COMPLETED", names
            assert httpx.get(f"http://127.0.0.1:{prefect_port}/").status_code == 200  # the UI
            _stop(prefect_ui)

            _wait_healthy(mlflow_ui, mlflow_port, "/health", mlflow_log)
            got = httpx.get(
                f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow/registered-models/get",
                params={"name": "hmm-regime"},
            ).json()
            aliases = {a["alias"]: a["version"] for a in got["registered_model"]["aliases"]}
            assert aliases["production"] == "1"
        finally:
            _stop(mlflow_ui)
    finally:
        _stop(prefect_ui)

    assert run(["--home", str(home), "demo", "--nights", "0"]) == 1
    assert "--nights must be between 1 and 5" in capsys.readouterr().err
    assert run(["--home", str(home), "demo", "--hours", "25"]) == 1
    assert "--hours must be between 2 and 24" in capsys.readouterr().err
