"""Child processes that serve on loopback (a Prefect or MLflow server, `hmmtrader serve`,
a node, a worker): a free port, the child's environment, waiting until it is healthy, and
stopping its whole process group. The product (the demo's Prefect server, `bench serve`)
and the tests start every such process through `ServerProcess`."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from trading.env import offline_defaults
from trading.errors import HmmTraderError

LOOPBACK = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent
# what a child started here must not inherit: the MLflow URIs an in-process registry writes
# into os.environ, and a Prefect API URL meant for this process only
NOT_INHERITED = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL")


class ProcessError(HmmTraderError):
    """A child server did not start, died, or did not become healthy in time."""


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on right now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None when
    the process is gone (Linux)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: with the pid, it names one
    process (a reused pid has another), or None."""
    fields = proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def group_pids(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = proc_stat(int(stat.parent.name))
        if fields and fields[0] != "Z" and len(fields) > 2 and int(fields[2]) == pgid:
            out.append(int(stat.parent.name))
    return out


def venv_exe(name: str) -> str:
    """A console script of this environment (hmmtrader, prefect, mlflow)."""
    return str(VENV_BIN / name)


def child_env(
    extra: Mapping[str, str] | None = None,
    *,
    base: Mapping[str, str] | None = None,
    drop_prefixes: Sequence[str] = (),
) -> dict[str, str]:
    """The environment of a child: `base` (default os.environ) without NOT_INHERITED and the
    variables starting with `drop_prefixes`, with no telemetry, no proxy for loopback and
    this environment's bin first on PATH; then `extra`."""
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if k not in NOT_INHERITED and not k.startswith(tuple(drop_prefixes))
    }
    env.update(offline_defaults())
    env["DO_NOT_TRACK"] = "true"  # MLflow honours only the literal "true"
    env["NO_PROXY"] = env["no_proxy"] = f"{LOOPBACK},localhost"
    env["PATH"] = str(VENV_BIN) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def answers_200(response: httpx.Response) -> bool:
    return response.status_code == 200


class ServerProcess:
    """One child in its own process group, its output in a log file.

    `url` is where it serves (e.g. http://127.0.0.1:PORT). `launch()` returns at once (do
    other work meanwhile), `wait_healthy()` polls GET `url + health_path` until
    `healthy(response)`; `start()` does both. `stop()` sends SIGTERM to
    the group, then SIGKILL to what is left, so forked workers (uvicorn's, MLflow's) go too.
    Usable as a context manager (started on enter, stopped on exit)."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        url: str | None = None,
        health_path: str | None = None,
        healthy: Callable[[httpx.Response], bool] = answers_200,
        timeout_s: float = 120.0,
    ) -> None:
        self.name = name
        self.cmd = [str(part) for part in cmd]
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else child_env()
        self.cwd = cwd
        self.url = url or ""
        self.health_path = health_path
        self.healthy = healthy
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.launched_at = 0.0

    # ---- start ------------------------------------------------------------------------------
    def launch(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        self.launched_at = time.monotonic()
        return self

    def wait_healthy(self, timeout_s: float | None = None) -> float:
        """Seconds from the launch until the health check passed; ProcessError (with the
        log's end) if the child exits first or `timeout_s` (default: the constructor's,
        counted from the launch) passes."""
        if self.proc is None:
            raise ProcessError(f"{self.name}: launch() it first")
        if not self.url or self.health_path is None:
            raise ProcessError(f"{self.name}: no url and health_path to wait for")
        health_url = self.url + self.health_path
        deadline = self.launched_at + (self.timeout_s if timeout_s is None else timeout_s)
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ProcessError(
                    f"{self.name} exited with code {self.proc.returncode} before it was "
                    f"healthy; the end of {self.log_path}:\n{self.log_tail()}"
                )
            try:
                response = httpx.get(health_url, timeout=2.0)
                if self.healthy(response):
                    return time.monotonic() - self.launched_at
                last = f"HTTP {response.status_code}: {response.text[:300]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
        raise ProcessError(
            f"{self.name} not healthy {time.monotonic() - self.launched_at:.0f} s after its "
            f"launch (GET {health_url}: {last}); the end of {self.log_path}:\n"
            f"{self.log_tail()}"
        )

    def start(self) -> Self:
        self.launch()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    # ---- while it runs ----------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout_s: float | None = None) -> int:
        """The exit code, once the child exited (subprocess.TimeoutExpired after
        `timeout_s`)."""
        if self.proc is None:
            raise ProcessError(f"{self.name}: launch() it first")
        return self.proc.wait(timeout_s)

    def signal(self, sig: int) -> None:
        """Send `sig` to the child's process group (nothing if it is gone)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:]) or "(empty log)"

    # ---- stop -------------------------------------------------------------------------------
    def stop(self, term_s: float = 20.0, kill_s: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL whatever is left after `term_s`; the exit
        code (None if it was never launched)."""
        if self.proc is None:
            return None
        pgid = self.proc.pid  # start_new_session: the leader's pid is the group id
        for sig, wait_s in ((signal.SIGTERM, term_s), (signal.SIGKILL, kill_s)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while self._group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self._group_alive(pgid):
                break
        try:
            return self.proc.wait(timeout=kill_s)
        except subprocess.TimeoutExpired:
            return None

    def _group_alive(self, pgid: int) -> bool:
        assert self.proc is not None
        self.proc.poll()  # reap the leader, or it stays in the group as a zombie
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True

    def __enter__(self) -> Self:
        return self if self.running() else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
