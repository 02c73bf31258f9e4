"""`hmmtrader up | down | status`: the whole stack on one machine, from one command (the
laptop path; systemd's hmmtrader.target stays the production path).

Six parts, each its own process group with its log under <home>/up/logs/: the inference
server, a trading node (replay by default), the dashboard with the ops API, a Prefect
server and a worker on the `hmmtrader` work pool, and the MLflow UI. Each takes its
configured port when it is free, else a free one. What was started is recorded in
<home>/up/stack.json (pids with their start times, ports, URLs, logs), so that `status`
and `down` work from any shell. A part that crashes is shown as down; the others keep
running (nothing ties their lives together)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from trading.errors import HmmTraderError, InputError
from trading.paths import StatePaths
from trading.process import (
    LOOPBACK,
    ServerProcess,
    child_env,
    free_port,
    group_pids,
    proc_stat,
    start_ticks,
    venv_exe,
)
from trading.settings import AppConfig

WORK_POOL = "hmmtrader"  # prefect.yaml's deployments run on it
NodeMode = Literal["replay", "paper", "testnet"]
STACK_FILE = "stack.json"


class StackError(HmmTraderError):
    """The stack cannot be started, or its record is unreadable."""


@dataclass
class Part:
    """One process of the stack, as recorded in stack.json."""

    name: str
    title: str
    cmd: list[str]
    url: str  # what a person opens
    health: str  # GET this for liveness
    log: str
    port: int
    pid: int | None = None
    started_ticks: str | None = None  # /proc start time: a reused pid is not ours
    env: dict[str, str] = field(default_factory=dict)  # beyond the inherited environment
    links: dict[str, str] = field(default_factory=dict)  # further URLs worth printing


@dataclass(frozen=True)
class UpOptions:
    node_mode: NodeMode = "replay"
    speed: float = 1.0  # replay pace: real time, so that the screen moves
    exchange_url: str | None = None
    parts: tuple[str, ...] = ()  # empty: all
    prefect_port: int = 4200  # taken: a free one
    mlflow_port: int = 5000
    timeout_s: float = 180.0


@dataclass(frozen=True)
class PartStatus:
    name: str
    title: str
    state: str  # up / starting / down / exited
    pid: int | None
    url: str
    log: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PART_NAMES = ("prefect", "worker", "mlflow", "inference", "dashboard", "node")


def stack_dir(config: AppConfig) -> Path:
    return StatePaths(config.home.resolve()).home / "up"  # absolute: logs print as paths


def _port(preferred: int) -> int:
    """The configured port when nothing listens on it, else a free one."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, preferred))
            return preferred
        except OSError:
            return free_port()


def plan(config: AppConfig, opts: UpOptions, config_dir: Path | None = None) -> list[Part]:
    """The parts to start, with their ports, commands and URLs (nothing started)."""
    from trading.regime.registry import default_tracking_uri

    s = config.settings
    home = config.home.resolve()
    logs = stack_dir(config) / "logs"
    hmm = [venv_exe("hmmtrader"), "--home", str(home)]
    if config_dir is not None:
        hmm += ["--config-dir", str(config_dir.resolve())]
    prefect_port = _port(opts.prefect_port)
    prefect_api = f"http://{LOOPBACK}:{prefect_port}/api"
    prefect_env = {"PREFECT_HOME": str(StatePaths(home).prefect), "HMMTRADER_HOME": str(home)}
    parts: list[Part] = []

    def add(name: str, title: str, cmd: list[str], port: int, health: str, path: str = "/",
            env: dict[str, str] | None = None, links: dict[str, str] | None = None) -> None:  # fmt: skip
        url = f"http://{LOOPBACK}:{port}"
        parts.append(Part(name, title, cmd, url + path, url + health, str(logs / f"{name}.log"),
                          port, env=env or {}, links=links or {}))  # fmt: skip

    add("prefect", "Prefect server and UI",
        [venv_exe("prefect"), "server", "start", "--host", LOOPBACK, "--port", str(prefect_port)],
        prefect_port, "/api/health",
        env={**prefect_env, "PREFECT_UI_ENABLED": "true", "PREFECT_UI_API_URL": prefect_api},
        links={"api": prefect_api})  # fmt: skip
    worker_port = free_port()
    add("worker", f"Prefect worker (pool {WORK_POOL})",
        [venv_exe("prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process",
         "--with-healthcheck"],
        worker_port, "/health", "/health",
        env={**prefect_env, "PREFECT_API_URL": prefect_api,
             "PREFECT_WORKER_WEBSERVER_HOST": LOOPBACK,
             "PREFECT_WORKER_WEBSERVER_PORT": str(worker_port)})  # fmt: skip
    tracking = s.registry.tracking_uri or default_tracking_uri(home)
    if tracking.startswith(("http://", "https://")):
        pass  # a tracking server already serves the UI: nothing to start
    else:
        port = _port(opts.mlflow_port)
        add("mlflow", "MLflow UI (registry)",
            [venv_exe("mlflow"), "ui", "--backend-store-uri", tracking, "--host", LOOPBACK,
             "--port", str(port), "--workers", "1",
             # /metrics for Prometheus (deploy/prometheus/prometheus.yml scrapes it)
             "--expose-prometheus", str(stack_dir(config) / "mlflow-metrics")],
            port, "/health", "/#/models",
            env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # fmt: skip
    port = _port(s.serving.port)
    add("inference", "Inference server", [*hmm, "serve", "--port", str(port)], port, "/health",
        "/ready", links={"docs": f"http://{LOOPBACK}:{port}/docs"})  # fmt: skip
    port = _port(s.dashboard.port)
    add("dashboard", "Dashboard and ops API", [*hmm, "dashboard", "--port", str(port)], port,
        "/health", "/", env={"HMMTRADER_OPS__PREFECT_API_URL": prefect_api},
        links={"ops status": f"http://{LOOPBACK}:{port}/status"})  # fmt: skip
    port = _port(s.node.metrics_port) if s.node.metrics_port else free_port()
    node = [*hmm, "node", "--mode", opts.node_mode]
    if opts.node_mode == "replay":
        node += ["--speed", f"{opts.speed:g}"]
    if opts.exchange_url:
        node += ["--exchange-url", opts.exchange_url]
    add("node", f"Trading node ({opts.node_mode})", node, port, "/metrics", "/metrics",
        env={"HMMTRADER_NODE__METRICS_PORT": str(port),
             "HMMTRADER_NODE__METRICS_HOST": LOOPBACK})  # fmt: skip
    if opts.parts:
        unknown = sorted(set(opts.parts) - set(PART_NAMES))
        if unknown:
            raise InputError(f"unknown part(s) {', '.join(unknown)}: use {', '.join(PART_NAMES)}")
        parts = [p for p in parts if p.name in opts.parts]
    return parts


# ---- the record -----------------------------------------------------------------------
def read_record(config: AppConfig) -> list[Part]:
    path = stack_dir(config) / STACK_FILE
    if not path.is_file():
        return []
    try:
        return [Part(**p) for p in json.loads(path.read_text())["parts"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise StackError(f"{path} is unreadable ({exc}): stop what it started by hand") from None


def _write_record(config: AppConfig, parts: list[Part]) -> None:
    path = stack_dir(config) / STACK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    body = {"home": str(config.home.resolve()), "started": dt.datetime.now(dt.UTC).isoformat(
        timespec="seconds"), "parts": [asdict(p) for p in parts]}  # fmt: skip
    tmp.write_text(json.dumps(body, indent=2))
    tmp.replace(path)


def alive(part: Part) -> bool:
    """The recorded process still runs (and is the one we started: same start time)."""
    if part.pid is None:
        return False
    fields = proc_stat(part.pid)
    if fields is None or fields[0] == "Z":  # gone, or dead and not yet reaped
        return False
    return part.started_ticks is not None and start_ticks(part.pid) == part.started_ticks


# ---- up -------------------------------------------------------------------------------
def up(
    config: AppConfig,
    opts: UpOptions,
    config_dir: Path | None = None,
    echo: Callable[[str], None] = lambda text: None,
) -> list[PartStatus]:
    """Start every part, record it, wait until each is healthy (or failed); the status of
    each. Refused while a recorded part still runs."""
    running = [p.name for p in read_record(config) if alive(p)]
    if running:
        raise InputError(
            f"the stack of {config.home} is already up ({', '.join(running)} running): "
            "hmmtrader status shows it, hmmtrader down stops it"
        )
    parts = plan(config, opts, config_dir)
    launched: dict[str, ServerProcess] = {}

    def launch(part: Part) -> None:
        proc = ServerProcess(part.title, part.cmd, Path(part.log), env=child_env(part.env),
                             url=_base(part), health_path=_path(part),
                             timeout_s=opts.timeout_s)  # fmt: skip
        Path(part.log).parent.mkdir(parents=True, exist_ok=True)
        Path(part.log).write_text("")  # this run's log only
        proc.launch()
        part.pid = proc.pid
        part.started_ticks = start_ticks(proc.pid) if proc.pid else None
        launched[part.name] = proc
        _write_record(config, parts_started())
        echo(f"started {part.title} (pid {part.pid}, port {part.port})")

    def parts_started() -> list[Part]:
        return [p for p in parts if p.pid is not None]

    later = [p for p in parts if p.name == "worker"]  # it needs the Prefect server up
    for part in parts:
        if part not in later:
            launch(part)
    failed: dict[str, str] = {}
    for name, proc in list(launched.items()):
        try:
            took = proc.wait_healthy()
            echo(f"{proc.name} healthy after {took:.1f} s")
        except HmmTraderError as exc:
            failed[name] = str(exc).splitlines()[0]
            echo(f"{proc.name} FAILED: {failed[name]}")
        if name == "prefect" and name not in failed:
            for part in later:
                launch(part)
                try:
                    launched[part.name].wait_healthy()
                except HmmTraderError as exc:
                    failed[part.name] = str(exc).splitlines()[0]
    if "prefect" in failed:
        for part in later:
            failed[part.name] = "not started: the Prefect server did not come up"
    return status(config, failed)


def _base(part: Part) -> str:
    return f"http://{LOOPBACK}:{part.port}"


def _path(part: Part) -> str:
    return part.health.removeprefix(_base(part))


# ---- status ---------------------------------------------------------------------------
def status(config: AppConfig, notes: dict[str, str] | None = None) -> list[PartStatus]:
    """Each recorded part: up (its health answers 200), starting (running, no answer
    yet), or down (its process is gone), with the end of its log when it is not up."""
    out = []
    for part in read_record(config):
        state, detail = "down", (notes or {}).get(part.name, "")
        if alive(part):
            try:
                ok = httpx.get(part.health, timeout=3.0).status_code == 200
            except httpx.HTTPError:
                ok = False
            state = "up" if ok else "starting"
        if state == "down" and not detail:
            detail = f"process {part.pid} is gone; its log ends: {_last_line(Path(part.log))}"
        elif state == "starting" and not detail:
            detail = f"running, {part.health} does not answer yet"
        out.append(PartStatus(part.name, part.title, state, part.pid, part.url, part.log, detail))
    if not out and notes:
        raise StackError("; ".join(notes.values()))
    return out


def _last_line(log: Path) -> str:
    try:
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return lines[-1][-300:] if lines else ""


# ---- down -----------------------------------------------------------------------------
def down(
    config: AppConfig, term_s: float = 20.0, echo: Callable[[str], None] = lambda text: None
) -> list[str]:
    """SIGTERM every recorded part's process group (the node stops cleanly), SIGKILL what
    is left after `term_s`; forget the record. The names of the parts that were running."""
    parts = read_record(config)
    running = [p for p in parts if alive(p)]
    for part in running:
        assert part.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(part.pid, signal.SIGTERM)
        echo(f"stopping {part.title} (pid {part.pid})")
    deadline = time.monotonic() + term_s
    while time.monotonic() < deadline and any(_group_alive(p) for p in running):
        time.sleep(0.2)
    for part in running:
        if _group_alive(part):
            assert part.pid is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(part.pid, signal.SIGKILL)
            echo(f"{part.title} did not stop in {term_s:.0f} s: killed")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_group_alive(p) for p in running):
        time.sleep(0.1)
    (stack_dir(config) / STACK_FILE).unlink(missing_ok=True)
    return [p.name for p in running]


def _group_alive(part: Part) -> bool:
    """Some process of the part's group is left (its workers count)."""
    return part.pid is not None and bool(group_pids(part.pid))
