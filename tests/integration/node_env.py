"""Trading-node test helpers: a state root with one synthetic day in the lake and a real
registered production version, and `hmmtrader node` as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.cli_env import cli
from tests.integration.mlflow_server import free_port
from tests.integration.serving_env import HMMTRADER, ServerProcess
from trading.node.state import NodeState

SYMBOLS = ("BTCUSDT", "ETHUSDT")
DAY = "2025-01-01"
# shorter warm-up than the default 75 min: the features are warm after 30 min
ENV = {
    "HMMTRADER_BACKTEST__WARMUP_S": "1800",
    "HMMTRADER_REGIME__RESTARTS": "1",
    "HMMTRADER_REGIME__K_MIN": "3",
    "HMMTRADER_REGIME__K_MAX": "4",
    "HMMTRADER_REGIME__MAX_ITER": "40",
}
SYMBOL_ARGS = ("--symbol", "BTCUSDT.BINANCE", "--symbol", "ETHUSDT.BINANCE")


def build_home(home: Path) -> None:
    """One synthetic day of both symbols in the lake; a model trained on it (the real
    pipeline, fast settings) as production."""
    symbols = ",".join(SYMBOLS)
    assert cli(home, "ingest", "synthetic", "--symbols", symbols, "--start", DAY,
               "--days", "1", "--seed", "7") == 0  # fmt: skip
    assert cli(home, "features", "--symbols", symbols, "--start", DAY, "--end", DAY) == 0
    assert cli(home, "train", "--symbols", symbols, "--start", DAY, "--end", DAY) == 0
    assert cli(home, "promote", "1", "--force", "--reason", "node tests") == 0


def node_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HMMTRADER_")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    env.update(ENV)
    env.update(
        {
            "NO_PROXY": "127.0.0.1,localhost",
            "DO_NOT_TRACK": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "HMMTRADER_NODE__HEARTBEAT_S": "0.3",
            "HMMTRADER_NODE__SWITCH_POLL_S": "0.1",
            "HMMTRADER_NODE__METRICS_PORT": "0",  # a test that reads them sets a free port
        }
    )
    env.update(extra or {})
    return env


@dataclass
class NodeProcess:
    home: Path
    args: list[str]
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NodeProcess:
        cmd = [HMMTRADER, "--home", str(self.home), "node", "--mode", "replay", *SYMBOL_ARGS,
               *self.args]  # fmt: skip
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed by the child's exit)
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        return self

    def wait(self, timeout_s: float = 240) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout_s)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def state_of(db: Path) -> NodeState:
    return NodeState(db)


def status_body(db: Path) -> dict[str, Any]:
    snap = NodeState(db).status() if db.exists() else None
    return snap[0] if snap else {}


def ops_server(home: Path, log_path: Path, env: dict[str, str]) -> ServerProcess:
    """`hmmtrader ops serve` on a free loopback port (not started)."""
    return ServerProcess(home, free_port(), log_path, env, command=("ops", "serve"))


def wait_for(what: str, check: Callable[[], Any], proc: NodeProcess, timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc.proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"node exited ({proc.proc.returncode}) before {what}: "
                                 f"{proc.log()[-3000:]}")  # fmt: skip
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {proc.log()[-3000:]}")
