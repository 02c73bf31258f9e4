"""SIGKILL and restart against the local Binance exchange, both real processes on loopback.

A testnet-mode node trades until a position is open, with an order resting on the exchange;
it is killed with SIGKILL and started again on the same state file. The restarted node
rebuilds the position from the exchange (NautilusTrader's reconciliation, fed the spot
positions `trading.node.spot` rebuilds), finds the resting order, starts with trading
disabled and sends nothing until `enable`; then it trades again."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from serving.ops.app import build_status
from tests.integration.node_env import node_env, status_body
from tests.integration.node_env import wait_for as wait
from tests.integration.test_exchange_node import (
    HOLD,
    KEYS,
    entries_after,
    hour_state,
    market_ms,
    signed,
    start_exchange,
    start_node,
)
from tests.integration.worlds import thin_home
from trading.exchange.ledger import read_ledger
from trading.node.state import NodeState
from trading.settings import OpsSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

END = "2025-01-01T04:00"  # the features' warm-up twice (a start and a restart), and trading
# faster than the hour's replay: this scenario compares no timeline, so ticks may come late
SPEED = 450


@dataclass
class Restart:
    ledger: Path
    resting: dict[str, Any]  # placed by hand before the kill
    at_kill: dict[str, Any]  # the node's status just before SIGKILL
    exchange_position: dict[str, Decimal]  # the node's orders' net fills, by symbol
    balances: dict[str, Decimal]  # the exchange's base balances after the kill
    orders_at_kill: int  # the node's orders in the ledger after the kill
    restarted: dict[str, Any]  # the restarted node's first status
    ops: Any  # the ops API's (and dashboard's) view of it
    switch: Any  # the kill switch then
    while_disabled: list[dict[str, Any]]  # the node's orders in the ledger before enable
    journal: dict[str, str]  # client order id: kind, of every order the node decided
    kill_blocks: int  # entries the disabled node refused (guardrail KILL)
    enabled_ms: int
    log: str
    run_dir: Path


def _node_orders(ledger: Path) -> list[dict[str, Any]]:
    return [e for e in read_ledger(ledger, "order_new") if e["client_order_id"].startswith("O-")]


def _net_fills(ledger: Path) -> dict[str, Decimal]:
    net: dict[str, Decimal] = {}
    for e in read_ledger(ledger, "fill"):
        if e["client_order_id"].startswith("O-"):
            sign = 1 if e["side"] == "BUY" else -1
            net[e["symbol"]] = net.get(e["symbol"], Decimal(0)) + sign * Decimal(e["qty"])
    return net


@pytest.fixture(scope="module")
def restart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restart]:
    tmp = tmp_path_factory.mktemp("restart")
    home = thin_home(tmp / "home")
    db = tmp / "node.db"
    env = node_env({**KEYS, **HOLD, "HMMTRADER_NODE__KILL_DB": str(db),
                    "HMMTRADER_NODE__REORDER_S": "30"})  # fmt: skip
    exchange = start_exchange(home, tmp, env, "--end", END, "--speed", str(SPEED))
    ledger = tmp / "ledger.jsonl"
    node = second = None
    state = NodeState(db)
    try:
        node = start_node(home, tmp, env, exchange.url, "run1")
        wait("an open position", lambda: status_body(db).get("positions"), node)
        resting = signed(exchange.url, "POST", "/api/v3/order",
                         {"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT",
                          "timeInForce": "GTC", "quantity": "0.1000", "price": "100.00",
                          "newClientOrderId": "by-hand-2"}).json()  # fmt: skip
        assert resting["status"] == "NEW", resting
        at_kill = status_body(db)
        node.kill(signal.SIGKILL)
        time.sleep(0.5)  # an order in flight reaches the exchange
        exchange_position = _net_fills(ledger)
        end = hour_state(exchange)["balances"]
        balances = {a: Decimal(b["free"]) + Decimal(b["locked"]) for a, b in end.items()}
        orders_at_kill = len(_node_orders(ledger))

        first = state.last_session()
        assert first is not None
        second = start_node(home, tmp, env, exchange.url, "run2")

        def disabled_status() -> dict[str, Any] | None:
            snap = state.status()
            return snap[0] if snap and snap[2] > first.id else None

        # its first status once the strategy started (the supervisor's beat can come first)
        restarted = wait("the restarted node's status",
                         lambda: (disabled_status() or {}).get("found_at_start", {}).get("positions")
                         and disabled_status(), second, 60)  # fmt: skip
        ops = build_status(state, OpsSettings())
        # the disabled node keeps deciding; each entry it wanted is a KILL block
        kill_blocks = wait("an entry refused while disabled",
                           lambda: (disabled_status() or {}).get("blocks", {}).get("KILL"),
                           second, 60)  # fmt: skip
        switch = state.switch()
        while_disabled = _node_orders(ledger)[orders_at_kill:]
        state.enable("test: positions checked", "pytest")
        enabled_ms = market_ms(exchange)
        wait("an entry after enable", lambda: entries_after(tmp, enabled_ms), second, 90)
        second.signal(signal.SIGTERM)
        assert second.wait(60) == 0, second.log()[-3000:]
        last = state.last_session()
        assert last is not None and last.id > first.id
        journal = {o["client_order_id"]: o["kind"]
                   for key in (first.run_key, last.run_key) for o in state.orders(key)}  # fmt: skip
        yield Restart(ledger, resting, at_kill, exchange_position, balances, orders_at_kill,
                      restarted, ops, switch, while_disabled, journal, int(kill_blocks), enabled_ms,
                      second.log(), tmp / "run2")  # fmt: skip
    finally:
        for proc in (node, second):
            if proc is not None:
                proc.kill()
        exchange.stop()


def test_the_restarted_node_holds_the_exchanges_position(restart: Restart) -> None:
    """Acceptance 3: the position the node held at the kill is the exchange's (its orders'
    net fills, and the base balances' change), and the restarted node holds it again."""
    net = {s: q for s, q in restart.exchange_position.items() if q != 0}
    assert net, "no position open on the exchange at the kill"
    # the exchange started with BTC=1 and ETH=10: the balances moved by the same amounts
    assert restart.balances["BTC"] - 1 == net.get("BTCUSDT", 0)
    assert restart.balances["ETH"] - 10 == net.get("ETHUSDT", 0)
    found = restart.restarted["found_at_start"]["positions"]
    held = {p["symbol"]: Decimal(str(p["qty"])) * (1 if p["side"] == "LONG" else -1) for p in found}  # fmt: skip
    print(f"exchange position at the kill {net}; restarted node found {held}")
    assert held == net
    # and its first status shows the position held, as the node's own
    now = restart.restarted["positions"]
    assert {p["symbol"]: Decimal(str(p["qty"])) * (1 if p["side"] == "LONG" else -1) for p in now} == net  # fmt: skip
    assert "position on the exchange at start" in restart.log


def test_the_resting_order_is_found_and_no_order_is_duplicated(restart: Restart) -> None:
    """Acceptance 3: the resting order is found and reported (status, log); trading is
    disabled (the kill switch, engaged by the unclean end) and nothing is sent until
    `enable`, though the strategy wanted to enter; after it, trading resumes."""
    found = restart.restarted["found_at_start"]["open_orders"]
    assert [o["client_order_id"] for o in found] == ["by-hand-2"]
    assert any(o["client_order_id"] == "by-hand-2" for o in restart.restarted["open_orders"])
    assert "found open order by-hand-2" in restart.log
    # the ops API and the dashboard show the same (`found_at_start`, `open_orders`)
    assert [o.client_order_id for o in restart.ops.found_at_start.open_orders] == ["by-hand-2"]
    assert [p.symbol for p in restart.ops.found_at_start.positions] == list(
        restart.exchange_position
    )
    assert "by-hand-2" in [o.client_order_id for o in restart.ops.open_orders]
    assert restart.switch.engaged
    assert "unclean shutdown" in restart.switch.reason
    assert restart.kill_blocks >= 1
    # while disabled: no entry; only the adopted position's own exit (hold or flip: an
    # engaged switch without flatten keeps managing what is open)
    adopted = {p["symbol"] for p in restart.restarted["found_at_start"]["positions"]}
    for e in restart.while_disabled:
        assert restart.journal[e["client_order_id"]] in ("hold", "flip"), e
        assert e["symbol"] in adopted, e
    assert len(restart.while_disabled) <= len(adopted)
    # every order the node sent is one it journaled, once: none sent again after the restart
    ids = [e["client_order_id"] for e in _node_orders(restart.ledger)]
    assert len(ids) == len(set(ids))
    assert set(ids) <= set(restart.journal)
    after = [e for e in _node_orders(restart.ledger) if e["ts_ms"] > restart.enabled_ms]
    assert after, "trading did not resume after enable"
    print(
        f"restart: found {found}; {restart.kill_blocks} entries refused while disabled; "
        f"{restart.orders_at_kill} orders before the kill, {len(restart.while_disabled)} "
        f"exits while disabled, {len(after)} orders after enable"
    )
