"""Helpers for tests against real MLflow tracking servers on 127.0.0.1: a free port, an
`mlflow server` process in its own process group (killed as a group: it forks uvicorn
workers that outlive a plain kill), and a throw-away PostgreSQL database per test run.

Nothing here contacts another host.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

MLFLOW = Path(sys.executable).with_name("mlflow")
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
HEALTH_TIMEOUT_S = 180.0  # ~13 s on an idle 2-core machine; far more under load


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MlflowServer:
    """`mlflow server` with a backend store and proxied artifacts (clients upload and
    download through the server into `artifacts`)."""

    backend_uri: str
    artifacts: Path
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MlflowServer:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
        }
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            env.pop(key, None)
        args = [
            str(MLFLOW), "server",
            "--backend-store-uri", self.backend_uri,
            "--serve-artifacts", "--artifacts-destination", str(self.artifacts),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.artifacts.parent,
                start_new_session=True,
            )
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def wait_healthy(self, timeout_s: float = HEALTH_TIMEOUT_S) -> float:
        """Seconds until GET /health answered 200; raise (with the log's tail) if the
        process dies or the timeout passes."""
        assert self.process is not None, "start() first"
        began = time.monotonic()
        while time.monotonic() - began < timeout_s:
            if self.healthy():
                return time.monotonic() - began
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            time.sleep(0.25)
        raise TimeoutError(f"mlflow server not healthy after {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL whatever is left after 15 s."""
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session: the leader's pid is the group id
        for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while self._group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not self._group_alive(pgid):
                break
        self.process.wait(timeout=5)
        self.process = None

    def _group_alive(self, pgid: int) -> bool:
        assert self.process is not None
        self.process.poll()  # reap the leader, or it stays in the group as a zombie
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True


# ---- PostgreSQL ---------------------------------------------------------------------
def postgres_problem() -> str | None:
    """None when the local PostgreSQL answers, else why not."""
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(_dsn("postgres"), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable: {' '.join(str(exc).split())}"
    return None


def _dsn(database: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def sqlalchemy_uri(database: str) -> str:
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def pg_query(database: str, sql: str) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(_dsn(database), connect_timeout=5) as conn:
        return list(conn.execute(sql).fetchall())  # type: ignore[arg-type]


@contextmanager
def postgres_database(prefix: str = "hmmtrader_test") -> Iterator[str]:
    """A new, uniquely named database; dropped afterwards (connections terminated)."""
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_dsn("postgres"), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(_dsn("postgres"), autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def database_exists(name: str) -> bool:
    return bool(pg_query("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"))
