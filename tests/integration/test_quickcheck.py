"""`hmmtrader quickcheck` against a running stack started here: a real inference server,
dashboard and ops API, a real registry with a production and a newer version, two synthetic
days in the lake. All five checks pass (the canary + promote cycle moves production); with
the inference server and the dashboard down their lines fail, clearly, and the exit is 1."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cli_env import cli, isolated_env
from tests.integration.mlflow_server import free_port
from tests.integration.node_env import ENV, SYMBOLS, node_env
from tests.integration.serving_env import HMMTRADER, TOKEN, ServerProcess, registry_at

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY1, DAY2 = "2025-01-01", "2025-01-02"


# a thinner synthetic market (2 quotes/s instead of 10): the checks, not the market, are tested
THIN = {**ENV, "HMMTRADER_SYNTHETIC__QUOTE_RATE_HZ": "2"}


@pytest.fixture(scope="module", autouse=True)
def fast_env() -> Iterator[None]:
    with isolated_env(THIN):
        yield


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two synthetic days; version 1 (trained on day 1) in production, version 2 (a few EM
    steps more on day 1) the newest: the canary's candidate, on day 2."""
    home = tmp_path_factory.mktemp("quickcheck") / "home"
    symbols = ",".join(SYMBOLS)
    assert cli(home, "ingest", "synthetic", "--symbols", symbols, "--start", DAY1,
               "--days", "2", "--seed", "7") == 0  # fmt: skip
    assert cli(home, "features", "--symbols", symbols, "--start", DAY1, "--end", DAY2) == 0
    assert cli(home, "train", "--symbols", symbols, "--start", DAY1, "--end", DAY1) == 0
    assert cli(home, "promote", "1", "--force", "--reason", "quickcheck test") == 0
    assert cli(home, "train", "--symbols", symbols, "--start", DAY1, "--end", DAY1,
               "--update", "production") == 0  # fmt: skip
    return home


def _quickcheck(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HMMTRADER, "--home", str(home), "quickcheck", *args],
        env={**env, "COLUMNS": "250"}, capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip


def _line(out: str, title: str) -> str:
    return next(line for line in out.splitlines() if title in line)


def test_quickcheck_passes_on_a_running_stack_and_names_what_is_down(
    home: Path, tmp_path: Path
) -> None:
    ports = {"serve": free_port(), "dashboard": free_port(), "ops": free_port()}
    env = node_env({
        **THIN,
        "HMMTRADER_SERVING__URL": f"http://127.0.0.1:{ports['serve']}",
        "HMMTRADER_DASHBOARD__URL": f"http://127.0.0.1:{ports['dashboard']}",
        "HMMTRADER_OPS__URL": f"http://127.0.0.1:{ports['ops']}",
        "HMMTRADER_OPS__TOKEN": TOKEN,
        "HMMTRADER_BACKTEST__WARMUP_S": "1800",
    })  # fmt: skip
    servers = [
        ServerProcess(home, ports["serve"], tmp_path / "serve.log", env),
        ServerProcess(home, ports["dashboard"], tmp_path / "dash.log", env,
                      command=("dashboard",)),
        ServerProcess(home, ports["ops"], tmp_path / "ops.log", env, command=("ops", "serve")),
    ]  # fmt: skip
    try:
        for server in servers:
            server.start()
        servers[0].wait_ready(1)
        done = _quickcheck(home, env, "--promote", "--hours", "0.25")
        out = done.stdout
        print(out)
        assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
        assert out.count("✔ PASS") == 5 and "✘ FAIL" not in out
        assert "quickcheck: 5 passed, 0 failed" in out
        assert "version 1" in _line(out, "inference server healthy")
        assert "trades.csv, guardrails.csv, state_timeline.csv, equity.csv written" in out
        assert "trading ENABLED" in _line(out, "ops API answers")
        canary = _line(out, "canary + promote cycle")
        assert "version 2" in canary
        production = registry_at(home).aliases()["production"]
        verdict = registry_at(home).info(2).canary
        if verdict == "passed":  # the cycle moved production; a failed canary must not
            assert "promoted: production 1 -> 2" in canary and production == 2
        else:
            assert "not promoted, production stays 1" in canary and production == 1

        servers[0].stop()
        servers[1].stop()
        done = _quickcheck(home, env, "--check", "inference", "--check", "dashboard",
                           "--check", "ops")  # fmt: skip
        out = done.stdout
        print(out)
        assert done.returncode == 1
        line = _line(out, "inference server healthy")
        assert (
            line.startswith("✘ FAIL")
            and (
                f"inference server not reachable at http://127.0.0.1:{ports['serve']} "
                "(connection refused): start it with `hmmtrader serve`"
            )
            in line
        )
        line = _line(out, "dashboard /metrics reachable")
        assert line.startswith("✘ FAIL") and "start it with `hmmtrader dashboard`" in line
        assert _line(out, "ops API answers").startswith("✔ PASS")
        assert "quickcheck: 1 passed, 2 failed (inference, dashboard)" in out
        assert "Traceback" not in out + done.stderr
    finally:
        for server in servers:
            server.stop()


def test_quickcheck_refuses_an_unknown_check(home: Path) -> None:
    done = _quickcheck(home, dict(os.environ), "--check", "nope")
    assert done.returncode == 1
    assert "unknown check 'nope': use inference, backtest, dashboard, ops, canary" in (
        done.stdout + done.stderr
    )
