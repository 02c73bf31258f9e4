"""A local `prefect server start` process on 127.0.0.1 (SQLite under PREFECT_HOME, or the
database a connection URL names): the demo's and the tests' Prefect API."""

from __future__ import annotations

import os
from pathlib import Path

from trading.process import LOOPBACK, ServerProcess, child_env, free_port, venv_exe


class LocalPrefectServer(ServerProcess):
    """`with LocalPrefectServer(home) as server: ... server.api_url ...`, or `launch()`,
    other work, then `wait_healthy()`."""

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
        env = child_env(
            {
                "PREFECT_HOME": str(self.prefect_home),
                "PREFECT_UI_ENABLED": os.environ.get("PREFECT_UI_ENABLED", "true"),
                # the UI's pages call this API; without it they look for 127.0.0.1:4200
                "PREFECT_UI_API_URL": f"http://{LOOPBACK}:{self.port}/api",
                **(
                    {"PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url} if database_url else {}
                ),
                **(extra_env or {}),
            }
        )
        super().__init__(
            "prefect server",
            [venv_exe("prefect"), "server", "start", "--host", LOOPBACK, "--port", str(self.port)],
            log_path or self.prefect_home / "server.log",
            env=env,
            url=f"http://{LOOPBACK}:{self.port}",
            health_path="/api/health",
            timeout_s=timeout_s,
        )

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def ui_url(self) -> str:
        return self.url

    def launch(self) -> LocalPrefectServer:
        self.prefect_home.mkdir(parents=True, exist_ok=True)
        return super().launch()
