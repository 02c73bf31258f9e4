"""The dashboard's JSON API in process (FastAPI's test client): live status + history from
the state file, past run directories (NaN KPIs as null, downsampled series, 404s), the
WebSocket's first message and the kill switch behind the ops token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from serving.ops.dashboard import create_dashboard_app
from trading.node.state import open_state
from trading.settings import AppConfig

TOKEN = "dashboard-test-token"


@pytest.fixture
def app_config(config: AppConfig, tmp_path: Path) -> AppConfig:
    ops = config.settings.ops.model_copy(update={"token": SecretStr(TOKEN)})
    board = config.settings.dashboard.model_copy(update={"runs_dir": tmp_path / "runs"})
    settings = config.settings.model_copy(update={"ops": ops, "dashboard": board})
    return config.model_copy(update={"settings": settings})


def _run_dir(root: Path, name: str, rows: int) -> Path:
    run = root / name
    run.mkdir(parents=True)
    summary = {"net_pnl_usd": 1.25, "sharpe": float("nan"), "trades": 2, "model_version": 3,
               "window_start": "2025-01-01T00:30:00+00:00", "settings": {"big": True}}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))  # NaN, as the reports write it
    lines = ["time,ts_ns,equity_usd"] + [f"t{i},{i},{10_000 + i}" for i in range(rows)]
    (run / "equity.csv").write_text("\n".join(lines) + "\n")
    timeline = ["time,ts_ns,symbol,state,confidence"] + [
        f"t{i},{i},{sym},{i % 3},0.5" for i in range(rows) for sym in ("BTCUSDT", "ETHUSDT")
    ]
    (run / "state_timeline.csv").write_text("\n".join(timeline) + "\n")
    (run / "guardrails.csv").write_text(
        "time,ts_ns,symbol,reason,detail\nt,1,BTCUSDT,SPREAD,x\nt,2,BTCUSDT,SPREAD,y\n"
        "t,3,ETHUSDT,LATENCY,z\n"
    )
    return run


def test_runs_list_and_detail(app_config: AppConfig, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _run_dir(root, "backtest-v3-x", rows=5000)
    (root / "no-summary").mkdir()
    client = TestClient(create_dashboard_app(app_config))
    runs = client.get("/api/runs").json()
    assert [r["name"] for r in runs] == ["backtest-v3-x"]
    assert runs[0]["model_version"] == "3" and runs[0]["net_pnl_usd"] == 1.25
    detail = client.get("/api/runs/backtest-v3-x").json()
    assert detail["summary"]["sharpe"] is None and "settings" not in detail["summary"]
    max_points = app_config.settings.dashboard.max_points
    assert 0 < len(detail["equity"]) <= max_points and detail["equity"][0] == ["t0", 10_000.0]
    assert set(detail["states"]) == {"BTCUSDT", "ETHUSDT"}
    assert len(detail["states"]["BTCUSDT"]) <= max_points
    assert detail["guardrails"] == {"SPREAD": {"BTCUSDT": 2}, "LATENCY": {"ETHUSDT": 1}}
    for bad in ("nope", "%2E%2E", "no-summary"):  # %2E%2E: ".." past the client's normalizing
        response = client.get(f"/api/runs/{bad}")
        assert response.status_code == 404, bad
        assert "GET /api/runs lists them" in response.json()["detail"], bad


def test_a_canary_is_a_past_run_with_both_curves_and_its_report(
    app_config: AppConfig, tmp_path: Path
) -> None:
    root = tmp_path / "runs"
    canary = root / "canary-v4-x"
    _run_dir(canary, "candidate", rows=10)
    first = _run_dir(root, "canary-v3-y", rows=10)  # production's backtest, an earlier canary
    (canary / "production").mkdir()
    (canary / "production" / "summary.json").write_text(json.dumps({"net_pnl_usd": 1.25}))
    # production's KPIs were reused: its files are the earlier run's
    (canary / "production" / "reused_from.json").write_text(json.dumps({"run_dir": str(first)}))
    (canary / "verdict.json").write_text(json.dumps({"verdict": "failed", "production_version": 3}))
    (canary / "report.html").write_text("<html>the canary's report</html>")
    client = TestClient(create_dashboard_app(app_config))
    runs = {r["name"]: r for r in client.get("/api/runs").json()}
    assert runs["canary-v4-x"]["mode"] == "canary"
    assert runs["canary-v4-x"]["report"] == "/runs/canary-v4-x/report.html"
    assert runs["canary-v3-y"]["report"] is None
    detail = client.get("/api/runs/canary-v4-x").json()
    assert detail["summary"]["mode"] == "canary (failed)" and len(detail["equity"]) == 10
    assert (
        list(detail["compare"]) == ["production v3"]
        and len(detail["compare"]["production v3"]) == 10
    )
    page = client.get("/runs/canary-v4-x/report.html")
    assert page.status_code == 200 and "the canary's report" in page.text
    assert page.headers["content-type"].startswith("text/html")
    for bad in ("canary-v3-y", "nope", "%2E%2E"):
        assert client.get(f"/runs/{bad}/report.html").status_code == 404, bad


def test_live_history_websocket_and_kill(app_config: AppConfig) -> None:
    state = open_state(app_config)
    session = state.start_session("replay", "k#1").session.id
    body = {"mode": "replay", "symbols": ["BTCUSDT"], "equity_usd": 10_001.0,
            "realized_pnl_usd": 1.0, "unrealized_pnl_usd": 0.0,
            "market_time": "2025-01-01T00:40:00+00:00",
            "trading_from": "2025-01-01T00:30:00+00:00",
            "regime": {"BTCUSDT": {"state": 1, "posterior": [0.1, 0.9], "confidence": 0.8,
                                   "drift": 0.1, "action": 1}}}  # fmt: skip
    for _ in range(3):
        state.heartbeat(session, body, keep_points=100)
    client = TestClient(create_dashboard_app(app_config))
    live = client.get("/api/live").json()
    assert live["status"]["regime"]["BTCUSDT"]["posterior"] == [0.1, 0.9]
    assert live["status"]["equity_usd"] == 10_001.0 and len(live["history"]) == 3
    assert live["status"]["trading_from"] == "2025-01-01T00:30:00+00:00"  # the warm-up ends
    assert live["history"][0]["states"] == {"BTCUSDT": {"state": 1, "confidence": 0.8}}
    with client.websocket_connect("/ws") as socket:
        first = socket.receive_json()
    assert first["type"] == "snapshot" and len(first["history"]) == 3
    assert first["status"]["trading_enabled"] is True
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]

    assert client.post("/kill", json={"reason": "test"}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.post("/kill", json={"reason": "test"}, headers=wrong).status_code == 403
    assert state.switch().engaged is False
    right = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/kill", json={"reason": "test"}, headers=right).status_code == 200
    assert state.switch().engaged is True


def test_a_node_stop_is_pushed_at_once_not_at_the_keep_alive(app_config: AppConfig) -> None:
    """The node's clean stop changes no snapshot and no switch; the page still learns it at
    the next push, not at the keep-alive 10 pushes later."""
    import time

    board = app_config.settings.dashboard.model_copy(update={"push_s": 0.3})
    settings = app_config.settings.model_copy(update={"dashboard": board})
    cfg = app_config.model_copy(update={"settings": settings})
    state = open_state(cfg)
    session = state.start_session("replay", "k#1").session.id
    state.heartbeat(session, {"mode": "replay", "symbols": ["BTCUSDT"]}, keep_points=100)
    client = TestClient(create_dashboard_app(cfg))
    with client.websocket_connect("/ws") as socket:
        first = socket.receive_json()
        assert first["status"]["node"]["running"] is True
        state.end_session(session)
        ended = time.monotonic()
        update = socket.receive_json()
        waited = time.monotonic() - ended
    assert update["type"] == "update"
    assert update["status"]["node"]["ended_cleanly"] is True
    assert update["status"]["node"]["running"] is False
    assert waited < 2.0, f"the stop reached the page after {waited:.1f} s (keep-alive: 3 s)"
