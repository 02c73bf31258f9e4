"""Trading-node test helpers: a state root with production trained on the shared world's
first day, `hmmtrader node` as a real process, and waits on what it writes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.processes import NodeProcess, hmmtrader_server, profile_env
from tests.profile import DAY1
from trading.node.state import NodeState
from trading.process import ServerProcess

DAY = DAY1


def node_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return profile_env(
        {
            "HMMTRADER_NODE__HEARTBEAT_S": "0.3",
            "HMMTRADER_NODE__SWITCH_POLL_S": "0.1",
            "HMMTRADER_NODE__METRICS_PORT": "0",  # a test that reads them sets a free port
            **(extra or {}),
        }
    )


def state_of(db: Path) -> NodeState:
    return NodeState(db)


def status_body(db: Path) -> dict[str, Any]:
    snap = NodeState(db).status() if db.exists() else None
    return snap[0] if snap else {}


def ops_server(home: Path, log_path: Path, env: dict[str, str]) -> ServerProcess:
    """`hmmtrader ops serve` on a free loopback port (not started)."""
    return hmmtrader_server(home, ("ops", "serve"), log_path, env)


def wait_for(what: str, check: Callable[[], Any], proc: NodeProcess, timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if not proc.running():
            raise AssertionError(f"node exited ({proc.wait()}) before {what}: {proc.log()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {proc.log()[-3000:]}")
