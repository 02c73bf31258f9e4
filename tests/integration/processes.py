"""The processes integration tests start, all through the product's own helper
(trading.process.ServerProcess): `hmmtrader` servers and nodes, with the test profile in
their environment."""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.profile import PROFILE
from trading.process import LOOPBACK, ServerProcess, child_env, free_port, venv_exe

HMMTRADER = venv_exe("hmmtrader")


def profile_env(
    extra: Mapping[str, str] | None = None, *, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A child's environment: this one without any HMMTRADER_* variable, plus the test
    profile and `extra`."""
    return child_env({**PROFILE, **(extra or {})}, base=base, drop_prefixes=("HMMTRADER_",))


def hmmtrader_server(
    home: Path,
    command: Sequence[str],
    log_path: Path,
    env: Mapping[str, str],
    *,
    extra: Sequence[str] = (),
    health_path: str = "/health",
    timeout_s: float = 120.0,
    cls: type[ServerProcess] = ServerProcess,
) -> ServerProcess:
    """`hmmtrader --home HOME COMMAND --port P` on a free port, logging every request (not
    started)."""
    port = free_port()
    cmd = [HMMTRADER, "--home", str(home), *command, "--port", str(port), "--log-level",
           "debug", "--access-log", *extra]  # fmt: skip
    return cls(
        f"hmmtrader {' '.join(command)}", cmd, log_path, env=env,
        url=f"http://{LOOPBACK}:{port}", health_path=health_path, timeout_s=timeout_s,
    )  # fmt: skip


class NodeProcess(ServerProcess):
    """`hmmtrader node --mode replay ...`: started without a health check (a replay node
    serves nothing of its own); `kill` signals its group and reaps it."""

    def start(self) -> NodeProcess:
        self.launch()
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.running():
            self.signal(sig)
            self.wait(30)


def node_process(
    home: Path, args: Sequence[str], log_path: Path, env: Mapping[str, str]
) -> NodeProcess:
    cmd = [HMMTRADER, "--home", str(home), "node", "--mode", "replay",
           "--symbols", "BTCUSDT,ETHUSDT", *args]  # fmt: skip
    return NodeProcess("hmmtrader node", cmd, log_path, env=env)
