"""The ops API's status logic and request models, in process (no server)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import SecretStr, ValidationError

from serving.auth import ApiError, check_bearer
from serving.ops.app import KillRequest, OpsMetrics, build_status, prefect_api_url
from trading.node.state import NodeState, open_state, state_path
from trading.settings import AppConfig, OpsSettings

OPS = OpsSettings()


def _state(tmp_path: Path) -> NodeState:
    return NodeState(tmp_path / "node.db")


def test_state_path_default_and_kill_db(config: AppConfig, tmp_path: Path) -> None:
    assert state_path(config) == config.home / "node" / "node.db"
    node = config.settings.node.model_copy(update={"kill_db": tmp_path / "k.db"})
    moved = config.model_copy(
        update={"settings": config.settings.model_copy(update={"node": node})}
    )
    assert state_path(moved) == tmp_path / "k.db"
    assert open_state(moved).path == tmp_path / "k.db" and (tmp_path / "k.db").exists()


def test_never_ran(tmp_path: Path) -> None:
    s = build_status(_state(tmp_path), OPS)
    assert s.trading_enabled and not s.node.running and s.node.session is None
    assert s.snapshot_at is None and s.positions is None and s.model_version is None
    metrics = OpsMetrics()
    metrics.update(s)
    assert math.isnan(metrics.heartbeat_age._value.get())


def test_started_without_heartbeat_is_running_then_stale(tmp_path: Path) -> None:
    state = _state(tmp_path)
    sid = state.start_session("paper", "k").session.id
    s = build_status(state, OPS)
    assert s.node.running and s.node.session == sid and s.node.heartbeat_at is None
    state.heartbeat(sid, {"mode": "paper", "model": {"version": 7}})
    time.sleep(0.12)
    s = build_status(state, OPS.model_copy(update={"stale_after_s": 0.1}))
    assert not s.node.running and s.node.ended_cleanly is False  # no clean exit recorded
    assert s.node.heartbeat_age_s is not None and s.node.heartbeat_age_s >= 0.1
    assert s.model_version == "7" and s.ml_health is not None and s.ml_health.version == "7"


def test_snapshot_of_a_previous_session_and_bad_fields(tmp_path: Path) -> None:
    state = _state(tmp_path)
    first = state.start_session("replay", "k").session.id
    body = {"mode": "replay", "orders": "many", "positions": [{"side": "LONG"}],
            "realized_pnl_usd": 2.0, "future_field": {"x": 1}}  # fmt: skip
    state.heartbeat(first, body)
    state.end_session(first)
    second = state.start_session("replay", "k").session.id
    s = build_status(state, OPS)
    assert s.node.session == second and s.snapshot_session == first
    assert s.mode == "replay" and s.realized_pnl_usd == 2.0
    assert s.orders is None and s.positions is None
    assert any(e.startswith("orders:") for e in s.snapshot_errors), s.snapshot_errors
    assert any(e.startswith("positions.0.symbol:") for e in s.snapshot_errors)


def test_request_models_are_strict() -> None:
    assert KillRequest.model_validate({"reason": "  why  "}).reason == "why"
    assert KillRequest.model_validate({"reason": "x"}).flatten is True
    for bad in ({"reason": "x", "flatten": "yes"}, {"reason": ""}, {"reason": "x", "y": 1},
                {"reason": "x" * 501}, {}):  # fmt: skip
        with pytest.raises(ValidationError):
            KillRequest.model_validate(bad)


def test_check_bearer() -> None:
    token = SecretStr("t0k")
    ok = HTTPAuthorizationCredentials(scheme="Bearer", credentials="t0k")
    wrong = HTTPAuthorizationCredentials(scheme="Bearer", credentials="nope")
    check_bearer(ok, token, "disabled")
    for creds, tok, status in ((None, token, 401), (wrong, token, 403), (ok, None, 403)):
        with pytest.raises(ApiError) as info:
            check_bearer(creds, tok, "disabled")
        assert info.value.status == status


def test_prefect_api_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert prefect_api_url(OPS) is None
    monkeypatch.setenv("PREFECT_API_URL", "http://env/api")
    assert prefect_api_url(OPS) == "http://env/api"
    own = OPS.model_copy(update={"prefect_api_url": "http://own/api"})
    assert prefect_api_url(own) == "http://own/api"


def test_open_orders_and_what_was_found_at_start_are_in_the_status(tmp_path: Path) -> None:
    state = _state(tmp_path)
    sid = state.start_session("testnet", "k").session.id
    order = {"client_order_id": "by-hand-2", "symbol": "ETHUSDT", "side": "BUY",
             "type": "LIMIT", "qty": 0.1, "price": 100.0}  # fmt: skip
    found = {"positions": [{"symbol": "BTCUSDT", "side": "SHORT", "qty": 0.00039,
                            "avg_px": 59499.59}], "open_orders": [order]}  # fmt: skip
    state.heartbeat(sid, {"mode": "testnet", "open_orders": [order], "found_at_start": found})
    s = build_status(state, OPS)
    assert s.open_orders is not None and s.open_orders[0].client_order_id == "by-hand-2"
    assert s.found_at_start is not None
    assert s.found_at_start.positions[0].side == "SHORT"
    assert s.found_at_start.open_orders[0].price == 100.0
    assert not s.snapshot_errors


def test_the_nodes_registry_anomaly_reaches_the_status_and_ops_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hmmtrader.cli.ops import print_status

    state = _state(tmp_path)
    sid = state.start_session("replay", "k").session.id
    why = (
        "production was moved to version 3 outside promote/rollback ...: version 2 is still served"
    )
    model = {"inference": "in_process", "version": "2", "healthy": True, "registry_anomaly": why}
    state.heartbeat(sid, {"mode": "replay", "model": model})
    s = build_status(state, OPS)
    assert s.ml_health is not None and s.ml_health.registry_anomaly == why
    assert not s.snapshot_errors
    print_status(s.model_dump(mode="json"))
    printed = " ".join(capsys.readouterr().out.split())
    assert f"PRODUCTION ALIAS MOVED OUT OF BAND: {why}" in printed, printed
    state.heartbeat(sid, {"mode": "replay", "model": {**model, "registry_anomaly": None}})
    print_status(build_status(state, OPS).model_dump(mode="json"))
    assert "OUT OF BAND" not in capsys.readouterr().out
