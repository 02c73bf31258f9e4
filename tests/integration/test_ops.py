"""The ops API as a real `hmmtrader ops serve` process on 127.0.0.1 over a real node state
file, its CLI client as real `hmmtrader ops ...` processes, and POST /retrain against a
real `prefect server` (one of each per module): status from the node's heartbeat, the
kill switch (auth, validation, persistence), `--local`, and flow runs of a deployment."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from flows.server import LocalPrefectServer
from serving.ops.app import create_ops_app
from tests.integration.prefect_env import new_server
from tests.integration.processes import HMMTRADER, hmmtrader_server, profile_env
from trading.node.state import NodeState, state_path
from trading.process import free_port
from trading.settings import AppConfig, load_settings

pytestmark = [pytest.mark.integration]

TOKEN = "ops-test-token-5d1c9e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEPLOYMENT = "nightly-retrain/nightly-retrain"
BODY: dict[str, Any] = {
    "mode": "replay",
    "symbols": ["BTCUSDT", "ETHUSDT"],
    "trader_id": "HMMTRADER-001",
    "pid": 4242,
    "model": {"inference": "in_process", "version": "3", "healthy": True, "last_error": None,
              "latency_blocks": 0},
    "positions": [{"symbol": "BTCUSDT", "side": "LONG", "qty": 0.002, "avg_px": 42000.0,
                   "unrealized_pnl_usd": 0.12}],
    "realized_pnl_usd": 1.5,
    "unrealized_pnl_usd": 0.12,
    "orders": 10,
    "market_time": "2024-01-02T03:04:05+00:00",
    "blocks": {"MIN_CONF": 3},
}  # fmt: skip


@dataclass
class Ops:
    home: Path
    url: str
    env: dict[str, str]
    log_path: Path
    prefect: LocalPrefectServer
    proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def db(self) -> Path:
        return self.home / "node" / "node.db"

    def state(self) -> NodeState:
        return NodeState(self.db)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        return httpx.post(self.url + path, json=body, headers=headers, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.cli_many([(args, env)])[0]

    def cli_many(
        self, calls: list[tuple[tuple[str, ...], dict[str, str]]]
    ) -> list[subprocess.CompletedProcess[str]]:
        """`hmmtrader ops ARGS` processes run at once (env: overrides); their results."""
        procs = [
            (args, subprocess.Popen(
                [HMMTRADER, "ops", *args],
                env={**self.env, "HMMTRADER_OPS__URL": self.url, **env},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))
            for args, env in calls
        ]  # fmt: skip
        done = []
        for args, proc in procs:
            out, err = proc.communicate(timeout=60)
            done.append(subprocess.CompletedProcess(list(args), proc.returncode, out, err))
        return done


def _env(home: Path, prefect: LocalPrefectServer, root: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return profile_env(
        {
            "HMMTRADER_HOME": str(home),
            "HMMTRADER_OPS__TOKEN": TOKEN,
            "PREFECT_API_URL": prefect.api_url,
            "PREFECT_HOME": str(root / "prefect-client"),
        },
        base=base,
    )


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrefectServer]:
    """Launched at once, waited for only by the retrain tests (which run last)."""
    server = new_server(tmp_path_factory.mktemp("prefect")).launch()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory, prefect: LocalPrefectServer) -> Iterator[Ops]:
    root = tmp_path_factory.mktemp("ops")
    home = root / "home"
    home.mkdir()  # a --home that does not exist is refused (a typo)
    env = _env(home, prefect, root)
    server = hmmtrader_server(home, ("ops", "serve"), root / "ops.log", env)
    o = Ops(home, server.url, env, server.log_path, prefect)
    server.start()
    o.proc = server.proc
    try:
        yield o
    finally:
        server.stop()


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics:\n{text}"
    return float(match.group(1))


# ---- (a) status from the node's heartbeat ---------------------------------------------------
def test_status_before_during_and_after_a_node_session(ops: Ops) -> None:
    s = ops.get("/status").json()
    assert s["trading_enabled"] is True and s["kill_switch"]["engaged"] is False
    assert s["node"] == {"running": False, "session": None, "heartbeat_at": None,
                         "heartbeat_age_s": None, "ended_cleanly": None}  # fmt: skip
    for key in ("mode", "symbols", "model_version", "positions", "realized_pnl_usd",
                "unrealized_pnl_usd", "ml_health", "orders", "market_time", "blocks"):  # fmt: skip
        assert s[key] is None, key
    m = ops.get("/metrics").text
    assert _metric(m, "hmmtrader_trading_enabled") == 1
    assert _metric(m, "hmmtrader_node_running") == 0

    # the node (here: the test) starts a session and heartbeats
    state = ops.state()
    session = state.start_session("replay", "ops-test", pid=4242).session
    state.heartbeat(session.id, BODY, cursor_ns=1)
    s = ops.get("/status").json()
    assert s["node"]["running"] is True and s["node"]["session"] == session.id, s
    assert s["node"]["ended_cleanly"] is None and 0 <= s["node"]["heartbeat_age_s"] < 10
    assert s["mode"] == "replay" and s["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert s["model_version"] == "3" and s["ml_health"]["inference"] == "in_process"
    assert s["ml_health"]["healthy"] is True and s["ml_health"]["latency_blocks"] == 0
    assert s["positions"] == BODY["positions"]
    assert s["realized_pnl_usd"] == 1.5 and s["unrealized_pnl_usd"] == 0.12
    assert s["orders"] == 10 and s["blocks"] == {"MIN_CONF": 3}
    assert s["market_time"] == BODY["market_time"] and s["snapshot_errors"] == []
    m = ops.get("/metrics").text
    assert _metric(m, "hmmtrader_node_running") == 1
    assert 0 <= _metric(m, "hmmtrader_node_heartbeat_age_seconds") < 10

    state.end_session(session.id)
    s = ops.get("/status").json()
    assert s["node"]["running"] is False and s["node"]["ended_cleanly"] is True
    assert s["positions"] == BODY["positions"]  # the last snapshot stays readable
    assert _metric(ops.get("/metrics").text, "hmmtrader_node_running") == 0

    schemas = ops.get("/openapi.json").json()["components"]["schemas"]
    assert {"StatusResponse", "NodeInfo", "KillSwitch", "KillRequest"} <= set(schemas)


# ---- (b) the kill switch over HTTP ----------------------------------------------------------
def test_kill_and_enable_auth_validation_and_persistence(ops: Ops) -> None:
    body = {"reason": "test kill", "flatten": False}
    r = ops.post("/kill", body)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text
    r = ops.post("/kill", body, {"Authorization": "Bearer nope"})
    assert r.status_code == 403 and "wrong bearer token" in r.text, r.text
    r = ops.post("/kill", {"flatten": "bad"})  # no token: refused before the body is read
    assert r.status_code == 401, r.text
    assert ops.state().switch().engaged is False

    r = ops.post("/kill", body, AUTH)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["engaged"] is True and out["flatten"] is False and out["trading_enabled"] is False
    assert out["changed_by"] == "ops-api" and out["reason"] == "test kill"
    switch = ops.state().switch()  # persisted in the node's file
    assert switch.engaged is True and switch.flatten is False and switch.reason == "test kill"
    s = ops.get("/status").json()
    assert s["trading_enabled"] is False and s["kill_switch"]["reason"] == "test kill"
    assert _metric(ops.get("/metrics").text, "hmmtrader_trading_enabled") == 0

    r = ops.post("/kill", {"reason": "flatten by default"}, AUTH)
    assert r.status_code == 200 and r.json()["flatten"] is True, r.text
    assert ops.state().switch().flatten is True

    for bad, field in (
        ({"flatten": True}, "body.reason"),
        ({"reason": "x", "extra": 1}, "body.extra"),
        ({"reason": "   "}, "body.reason"),
        ({"reason": "x" * 501}, "body.reason"),
        ({"reason": "x", "flatten": "yes"}, "body.flatten"),
    ):
        r = ops.post("/kill", bad, AUTH)
        assert r.status_code == 422 and field in r.json()["detail"], (bad, r.text)
    r = ops.post("/enable", {"reason": "ok", "flatten": True}, AUTH)
    assert r.status_code == 422 and "body.flatten" in r.json()["detail"], r.text
    r = ops.post("/enable", {}, AUTH)
    assert r.status_code == 422 and "body.reason" in r.json()["detail"], r.text
    r = ops.post("/enable", {"reason": "ok"})
    assert r.status_code == 401, r.text
    assert ops.state().switch().engaged is True

    r = ops.post("/enable", {"reason": "checked, back on"}, AUTH)
    assert r.status_code == 200 and r.json()["trading_enabled"] is True, r.text
    assert ops.state().switch().engaged is False
    s = ops.get("/status").json()
    assert s["trading_enabled"] is True and s["kill_switch"]["reason"] == "checked, back on"
    actions = [(e["action"], e["actor"]) for e in ops.state().events(3)]
    assert actions == [("enable", "ops-api"), ("engage", "ops-api"), ("engage", "ops-api")]


# ---- (c) the CLI ----------------------------------------------------------------------------
def test_cli_against_the_server_and_local(ops: Ops) -> None:
    done = ops.cli("kill", "--reason", "cli kill", "--no-flatten")
    assert done.returncode == 0, done.stderr
    assert "trading DISABLED" in done.stdout and "cli kill" in done.stdout, done.stdout
    switch = ops.state().switch()
    assert switch.engaged and not switch.flatten and switch.changed_by == "ops-api"

    done = ops.cli("status")
    assert done.returncode == 0, done.stderr
    assert "trading DISABLED" in done.stdout and "cli kill" in done.stdout, done.stdout
    assert "node: NOT running" in done.stdout and "version 3" in done.stdout, done.stdout
    assert "BTCUSDT" in done.stdout and "+1.50 USD" in done.stdout, done.stdout
    done = ops.cli("status", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["trading_enabled"] is False

    done = ops.cli("enable", "--reason", "cli enable")
    assert done.returncode == 0 and "trading ENABLED" in done.stdout, done.stdout + done.stderr
    assert ops.state().switch().engaged is False

    # --local: the state file directly (the API address given is dead on purpose)
    dead = f"http://127.0.0.1:{free_port()}"
    done = ops.cli("kill", "--local", "--reason", "api down", HMMTRADER_OPS__URL=dead)
    assert done.returncode == 0, done.stderr
    assert "--local" in done.stdout and str(ops.db) in done.stdout.replace("\n", ""), done.stdout
    switch = ops.state().switch()
    assert switch.engaged and switch.flatten and switch.changed_by.startswith("ops-cli")
    assert ops.get("/status").json()["kill_switch"]["reason"] == "api down"  # same file
    done = ops.cli("status", "--local", "--json", HMMTRADER_OPS__URL=dead)
    assert done.returncode == 0 and json.loads(done.stdout)["trading_enabled"] is False
    done = ops.cli("enable", "--local", "--reason", "api back", HMMTRADER_OPS__URL=dead)
    assert done.returncode == 0 and "trading ENABLED" in done.stdout, done.stderr
    assert ops.state().switch().engaged is False

    # failures, all at once: one line on stderr each, exit code 1
    unreachable = [(("status",), {"HMMTRADER_OPS__URL": dead}),
                   (("kill", "--reason", "x"), {"HMMTRADER_OPS__URL": dead})]  # fmt: skip
    wrong, blank, taken = (
        (("kill", "--reason", "x"), {"HMMTRADER_OPS__TOKEN": "wrong"}),
        (("kill", "--reason", " "), {}),
        (("serve", "--port", str(ops.port)), {}),  # the port is taken
    )
    results = ops.cli_many([*unreachable, wrong, blank, taken])
    for done in results:
        assert done.returncode == 1, (done.args, done.stdout, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (done.args, done.stderr)
    for done in results[:2]:
        assert f"ops API not reachable at {dead}" in done.stderr, done.stderr
        assert "hmmtrader ops serve" in done.stderr and "--local" in done.stderr
    assert "403 wrong bearer token" in results[2].stderr, results[2].stderr
    assert "--reason" in results[3].stderr, results[3].stderr
    assert f"cannot listen on 127.0.0.1:{ops.port}" in results[4].stderr, results[4].stderr
    assert ops.state().switch().engaged is False


# ---- (d) retrain on a real Prefect server ---------------------------------------------------
async def _create_deployment(api_url: str, name: str) -> str:
    from prefect.client.orchestration import PrefectClient

    flow_name, deployment_name = name.split("/")
    async with PrefectClient(api_url) as client:
        flow_id = await client.create_flow_from_name(flow_name)
        return str(await client.create_deployment(flow_id, deployment_name))


def _in_process(ops: Ops, **ops_settings: Any) -> AppConfig:
    config = load_settings()
    ops_settings = {"token": SecretStr(TOKEN), **ops_settings}
    settings = config.settings.model_copy(
        update={
            "home": ops.home,
            "ops": config.settings.ops.model_copy(update=ops_settings),
            "node": config.settings.node.model_copy(update={"kill_db": None}),
        }
    )
    return config.model_copy(update={"settings": settings})


def _asgi_post(config: AppConfig, path: str, headers: dict[str, str]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_ops_app(config))
        async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
            return await client.post(path, headers=headers)

    return asyncio.run(go())


def test_retrain_creates_a_flow_run_of_the_deployment(ops: Ops) -> None:
    ops.prefect.wait_healthy()
    deployment_id = asyncio.run(_create_deployment(ops.prefect.api_url, DEPLOYMENT))

    assert ops.post("/retrain").status_code == 401
    r = ops.post("/retrain", None, AUTH)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["deployment"] == DEPLOYMENT and out["prefect_api_url"] == ops.prefect.api_url
    assert out["state"] == "Scheduled" and out["flow_run_name"], out
    run = httpx.get(f"{ops.prefect.api_url}/flow_runs/{out['flow_run_id']}", timeout=10).json()
    assert run["deployment_id"] == deployment_id, run

    done = ops.cli("retrain")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip().splitlines()[-1]
    run = httpx.get(f"{ops.prefect.api_url}/flow_runs/{uuid.UUID(run_id)}", timeout=10).json()
    assert run["deployment_id"] == deployment_id and run_id != out["flow_run_id"]
    assert TOKEN not in ops.log()  # it went over the wire with every POST, never into the log


def test_retrain_errors(ops: Ops, monkeypatch: pytest.MonkeyPatch) -> None:
    ops.prefect.wait_healthy()
    missing = _in_process(ops, prefect_api_url=ops.prefect.api_url,
                          deployment="nightly-retrain/missing")  # fmt: skip
    r = _asgi_post(missing, "/retrain", AUTH)
    assert r.status_code == 404, r.text
    detail = r.json()["detail"]
    assert "'nightly-retrain/missing' not found" in detail and ops.prefect.api_url in detail
    assert "prefect --no-prompt deploy --all" in detail

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    r = _asgi_post(_in_process(ops, prefect_api_url=None), "/retrain", AUTH)
    assert r.status_code == 503, r.text
    assert "set PREFECT_API_URL or ops.prefect_api_url" in r.json()["detail"]

    dead = f"http://127.0.0.1:{free_port()}/api"
    r = _asgi_post(_in_process(ops, prefect_api_url=dead), "/retrain", AUTH)
    assert r.status_code == 503 and f"Prefect API not reachable at {dead}" in r.text, r.text

    no_token = _in_process(ops, token=None, prefect_api_url=ops.prefect.api_url)
    r = _asgi_post(no_token, "/retrain", AUTH)
    assert r.status_code == 403 and "set HMMTRADER_OPS__TOKEN" in r.text, r.text
    assert state_path(no_token) == ops.db
