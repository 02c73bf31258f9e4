"""The node's state file: the kill switch survives restarts, an unclean end engages it
(without flattening), a clean end does not, the order journal counts an order once."""

from __future__ import annotations

from pathlib import Path

import pytest

from trading.errors import InputError
from trading.node.state import NodeState


def test_fresh_state_then_unclean_and_clean_restarts(tmp_path: Path) -> None:
    db = tmp_path / "node" / "node.db"
    state = NodeState(db)
    assert state.switch().trading_enabled
    first = state.start_session("replay", "run-a", pid=111)
    assert not first.unclean and first.previous is None and first.switch.trading_enabled
    # no end_session: the process died (SIGKILL, power loss)
    second = NodeState(db).start_session("replay", "run-a", pid=222)
    assert second.unclean and second.previous is not None and second.previous.pid == 111
    assert second.switch.engaged and not second.switch.flatten  # positions stay as they were
    assert "unclean shutdown" in second.switch.reason and "pid 111" in second.switch.reason
    NodeState(db).end_session(second.session.id)
    # a clean end does not re-enable: the switch stays as a person left it
    third = NodeState(db).start_session("paper", "run-b")
    assert not third.unclean and third.switch.engaged
    state.enable("checked the positions", "alice")
    state.end_session(third.session.id)
    fourth = state.start_session("paper", "run-b")
    assert not fourth.unclean and fourth.switch.trading_enabled
    actions = [(e["action"], e["actor"]) for e in state.events()]
    assert actions[:2] == [("enable", "alice"), ("engage", "node")]


def test_engage_records_flatten_and_start_disabled_option(tmp_path: Path) -> None:
    state = NodeState(tmp_path / "a.db")
    engaged = state.engage("drawdown", "ops-api", flatten=True)
    assert engaged.engaged and engaged.flatten and engaged.changed_by == "ops-api"
    assert NodeState(tmp_path / "a.db").switch().engaged  # persisted
    assert NodeState(tmp_path / "b.db", start_enabled=False).switch().engaged


def test_journal_counts_each_order_once_and_cursor(tmp_path: Path) -> None:
    state = NodeState(tmp_path / "n.db")
    sid = state.start_session("replay", "r").session.id
    args = ("O-1", "BTCUSDT", "entry", 1, 50_000.0, 1_000, sid)
    assert state.journal_order("r", "BTCUSDT:entry:1:1000", *args) is True
    assert state.journal_order("r", "BTCUSDT:entry:1:1000", *args) is False  # recovered
    assert state.journal_order("other", "BTCUSDT:entry:1:1000", *args) is True
    assert [o["client_order_id"] for o in state.orders("r")] == ["O-1"]
    state.heartbeat(sid, {"mode": "replay"}, cursor_ns=500)
    assert state.last_cursor("r") == 1_000  # the journal is ahead of the heartbeat
    state.heartbeat(sid, {"mode": "replay", "x": 1}, cursor_ns=2_000)
    assert state.last_cursor("r") == 2_000
    body, _, session = state.status() or ({}, "", 0)
    assert body == {"mode": "replay", "x": 1} and session == sid


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "node.db"
    bad.write_text("this is not sqlite " * 100)
    with pytest.raises(InputError, match="not a usable node state database"):
        NodeState(bad)
    with pytest.raises(InputError, match="is a directory"):
        NodeState(tmp_path)


def test_history_points_per_session_pruned_to_the_newest(tmp_path: Path) -> None:
    state = NodeState(tmp_path / "node.db")
    first = state.start_session("replay", "k#1").session.id
    body = {"market_time": "2025-01-01T00:00:00+00:00", "equity_usd": 10_000.0,
            "realized_pnl_usd": 0.0, "unrealized_pnl_usd": 0.0,
            "regime": {"BTCUSDT": {"state": 2, "confidence": 0.7, "posterior": [0, 0, 1]}}}  # fmt: skip
    for i in range(250):
        state.heartbeat(first, {**body, "equity_usd": 10_000.0 + i}, keep_points=120)
    state.heartbeat(first, body)  # keep_points 0: the snapshot only, no point
    points = state.history(limit=1000)
    # pruned at the 100th and 200th point: the newest 120 at each prune survive
    assert 120 <= len(points) <= 220
    assert (
        points[-1]["equity_usd"] == 10_249.0 and points[0]["equity_usd"] < points[-1]["equity_usd"]
    )
    assert points[-1]["states"] == {"BTCUSDT": {"state": 2, "confidence": 0.7}}
    state.end_session(first)
    second = state.start_session("replay", "k#2").session.id
    assert state.history() == state.history(session_id=first)  # the latest that has points
    state.heartbeat(second, body, keep_points=120)
    assert [p["session_id"] for p in state.history()] == [second]
    assert len(state.history(limit=5, session_id=first)) == 5


def test_spot_position_basis_from_the_last_recorded_start(tmp_path: Path) -> None:
    """A spot position is rebuilt from the latest earlier session of the same account that
    recorded its start, and the orders journaled from that session on; other accounts'
    (and replays') orders do not count."""
    state = NodeState(tmp_path / "node.db")
    account = "testnet@http://127.0.0.1:1"

    def session(account: str | None, orders: list[tuple[str, str]]) -> int:
        sid = state.start_session("testnet", f"k{account}", account=account).session.id
        for i, (symbol, coid) in enumerate(orders):
            state.journal_order(f"k{account}", f"{sid}:{i}", coid, symbol, "entry", 1, 1.0, i, sid)
        return sid

    first = session(account, [("BTCUSDT", "a1")])
    assert state.position_basis(account, first + 1).base_session is None
    assert state.set_start_positions(first, {})
    assert not state.set_start_positions(first, {"BTCUSDT": ("1", "2")})  # recorded once
    session("live@https://api.binance.com", [("BTCUSDT", "other")])
    second = session(account, [("BTCUSDT", "b1"), ("ETHUSDT", "b2")])
    third = session(account, [])
    basis = state.position_basis(account, third)
    assert basis.base_session == first and basis.base == {}
    assert basis.orders == {"BTCUSDT": ["a1", "b1"], "ETHUSDT": ["b2"]}
    state.set_start_positions(second, {"BTCUSDT": ("-0.5", "100.25")})
    basis = state.position_basis(account, third)
    assert basis.base_session == second and basis.base == {"BTCUSDT": ("-0.5", "100.25")}
    assert basis.orders == {"BTCUSDT": ["b1"], "ETHUSDT": ["b2"]}


def test_a_state_file_of_an_earlier_version_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "node.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE sessions (id INTEGER PRIMARY KEY AUTOINCREMENT, pid INTEGER NOT NULL, "
        "mode TEXT NOT NULL, run_key TEXT NOT NULL, started_at TEXT NOT NULL, heartbeat_at "
        "TEXT, ended_at TEXT, clean INTEGER NOT NULL DEFAULT 0, cursor_ns INTEGER NOT NULL "
        "DEFAULT 0)"
    )
    db.execute("INSERT INTO sessions (pid, mode, run_key, started_at) VALUES (1, 'live', 'k', 'x')")
    db.commit()
    db.close()
    state = NodeState(path)
    old = state.last_session()
    assert old is not None and old.account is None and old.start_positions is None
    started = state.start_session("live", "k2", account="live@x")
    assert started.unclean and started.session.account == "live@x"
