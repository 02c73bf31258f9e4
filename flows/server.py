"""A local `prefect server start` process on 127.0.0.1 (SQLite under PREFECT_HOME, or the
database a connection URL names): the demo's and the tests' Prefect API."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from trading.errors import HmmTraderError


class PrefectServerError(HmmTraderError):
    """The Prefect server did not start."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prefect_exe() -> str:
    here = Path(sys.executable).parent / "prefect"
    return str(here) if here.exists() else (shutil.which("prefect") or "prefect")


def server_env(prefect_home: Path, database_url: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_ENABLED": os.environ.get("PREFECT_UI_ENABLED", "true"),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    env.pop("PREFECT_API_URL", None)
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    return env


class LocalPrefectServer:
    """Start with `with LocalPrefectServer(home) as server: server.api_url ...`."""

    def __init__(
        self,
        prefect_home: Path,
        port: int | None = None,
        database_url: str | None = None,
        extra_env: dict[str, str] | None = None,
        log_path: Path | None = None,
        timeout_s: float = 90.0,
    ) -> None:
        self.prefect_home = Path(prefect_home)
        self.port = port or free_port()
        self.database_url = database_url
        self.extra_env = extra_env or {}
        self.log_path = log_path or self.prefect_home / "server.log"
        self.timeout_s = timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self._launched = 0.0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalPrefectServer:
        return self.launch().wait_healthy()

    def launch(self) -> LocalPrefectServer:
        """Start the process and return at once (do other work, then `wait_healthy`)."""
        self.prefect_home.mkdir(parents=True, exist_ok=True)
        env = {**server_env(self.prefect_home, self.database_url), **self.extra_env}
        log = open(self.log_path, "ab")  # noqa: SIM115 (kept open for the child's lifetime)
        self.process = subprocess.Popen(
            [prefect_exe(), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._launched = time.monotonic()
        return self

    def wait_healthy(self) -> LocalPrefectServer:
        assert self.process is not None, "launch() first"
        deadline = self._launched + self.timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrefectServerError(
                    f"prefect server exited with {self.process.returncode}; log: {self.log_path}"
                    f"\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise PrefectServerError(
            f"prefect server not healthy after {self.timeout_s:.0f} s; log: {self.log_path}"
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # the whole process group: the server's uvicorn and services too
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass

    def __enter__(self) -> LocalPrefectServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
