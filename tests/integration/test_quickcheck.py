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

from tests.integration.cli_env import isolated_env
from tests.integration.node_env import node_env
from tests.integration.processes import HMMTRADER, hmmtrader_server
from tests.integration.serving_env import TOKEN, InferenceServer, registry_at
from tests.integration.worlds import thin_home
from tests.profile import THIN

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def fast_env() -> Iterator[None]:
    with isolated_env(THIN):
        yield


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared thin world: two synthetic days; version 1 (trained on day 1) in
    production, version 2 (a few EM steps more on day 1) the newest: the canary's
    candidate, on day 2."""
    return thin_home(tmp_path_factory.mktemp("quickcheck") / "home")


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
    env = node_env({**THIN, "HMMTRADER_OPS__TOKEN": TOKEN})
    serve = hmmtrader_server(home, ("serve",), tmp_path / "serve.log", env, cls=InferenceServer)
    board = hmmtrader_server(home, ("dashboard",), tmp_path / "dash.log", env)
    ops = hmmtrader_server(home, ("ops", "serve"), tmp_path / "ops.log", env)
    servers = [serve, board, ops]
    env |= {
        "HMMTRADER_SERVING__URL": serve.url,
        "HMMTRADER_DASHBOARD__URL": board.url,
        "HMMTRADER_OPS__URL": ops.url,
    }
    try:
        for server in servers:  # all three start at once
            server.launch()
        for server in servers:
            server.wait_healthy()
        assert isinstance(serve, InferenceServer)
        serve.wait_ready(1)
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
                f"inference server not reachable at {serve.url} "
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
    assert done.returncode == 2  # a usage error: the choices are listed
    assert "'nope' is not one of 'inference', 'backtest', 'dashboard', 'ops', 'canary'" in (
        done.stdout + done.stderr
    )
