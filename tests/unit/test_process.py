"""The one server-process helper (trading.process) on small real children: health, a child
that dies, a timeout, and a stop that takes the whole process group; atomic writes; the
model slots' swap."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from trading.atomic import atomic_path, atomic_write_text
from trading.process import ProcessError, ServerProcess, child_env, free_port


def _http_server(tmp_path: Path, port: int, shell_prefix: str = "") -> ServerProcess:
    serve = f"{sys.executable} -m http.server {port} --bind 127.0.0.1 --directory {tmp_path}"
    return ServerProcess(
        "http.server", ["bash", "-c", f"{shell_prefix}{serve}"], tmp_path / "server.log",
        url=f"http://127.0.0.1:{port}", health_path="/", timeout_s=30,
    )  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_waits_for_health_and_stop_takes_the_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "sleeper.pid"
    # a grandchild that would outlive a plain kill of the leader
    server = _http_server(tmp_path, free_port(), f"sleep 600 & echo $! > {pidfile}; ")
    with server:
        assert server.running()
        sleeper = int(pidfile.read_text())
        assert _alive(sleeper)
    assert not server.running()
    deadline = time.monotonic() + 5
    while _alive(sleeper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(sleeper)
    assert "GET / " in server.log()  # the health check reached it


def test_a_child_that_exits_is_an_error_with_its_log(tmp_path: Path) -> None:
    server = ServerProcess(
        "broken", ["bash", "-c", "echo cannot bind >&2; exit 3"], tmp_path / "broken.log",
        url=f"http://127.0.0.1:{free_port()}", health_path="/health", timeout_s=30,
    )  # fmt: skip
    with pytest.raises(ProcessError, match=r"(?s)broken exited with code 3.*cannot bind"):
        server.start()


def test_not_healthy_in_time_is_an_error_and_nothing_is_left(tmp_path: Path) -> None:
    server = ServerProcess(
        "silent", ["sleep", "600"], tmp_path / "silent.log",
        url=f"http://127.0.0.1:{free_port()}", health_path="/", timeout_s=1.5,
    )  # fmt: skip
    began = time.monotonic()
    with pytest.raises(ProcessError, match="silent not healthy"):
        server.start()
    assert time.monotonic() - began < 20
    assert not server.running()


def test_child_env_drops_what_a_child_must_not_inherit() -> None:
    base = {
        "PATH": "/usr/bin",
        "MLFLOW_TRACKING_URI": "sqlite:///x.db",
        "HMMTRADER_HOME": "/somewhere",
        "HMMTRADER_REGIME__K_MAX": "9",
        "KEEP": "1",
    }
    env = child_env({"EXTRA": "2"}, base=base, drop_prefixes=("HMMTRADER_",))
    assert env["KEEP"] == "1" and env["EXTRA"] == "2"
    assert not [k for k in env if k.startswith("HMMTRADER_") or k == "MLFLOW_TRACKING_URI"]
    assert env["DO_NOT_TRACK"] == "true" and env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["PATH"].startswith(str(Path(sys.executable).parent) + os.pathsep)
    assert "127.0.0.1" in env["NO_PROXY"]


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "summary.json"
    atomic_write_text(target, "first")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half of a second version")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["summary.json"]  # no temp left
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
