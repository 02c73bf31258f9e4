"""Spot positions rebuilt from the exchange's record of the node's orders."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from trading.node.spot import net_position, order_fills


def _order(coid: str, side: str, qty: str, quote: str, t: int, oid: int = 0) -> SimpleNamespace:
    return SimpleNamespace(clientOrderId=coid, side=SimpleNamespace(value=side), executedQty=qty,
                           cummulativeQuoteQty=quote, time=t, orderId=oid)  # fmt: skip


def test_fills_of_the_journaled_orders_only_in_time_order() -> None:
    orders = [
        _order("O-2", "BUY", "0.5", "55", 2),
        _order("by-hand", "BUY", "1", "100", 1),
        _order("O-1", "SELL", "1", "100", 1),
        _order("O-3", "SELL", "0", "0", 3),  # not filled (cancelled, rejected)
    ]
    fills = order_fills(orders, {"O-1", "O-2", "O-3"})
    assert fills == [(-1, Decimal("1"), Decimal("100")), (1, Decimal("0.5"), Decimal("110"))]


def test_net_position_and_its_average_entry() -> None:
    # adding moves the average; reducing keeps it; flat forgets it; flipping restarts it
    p = net_position(
        "X", None, [(1, Decimal("1"), Decimal("100")), (1, Decimal("1"), Decimal("110"))]
    )
    assert (p.qty, p.avg_px, p.orders) == (Decimal("2"), Decimal("105"), 2)
    p = net_position("X", ("2", "105"), [(-1, Decimal("0.5"), Decimal("120"))])
    assert (p.qty, p.avg_px) == (Decimal("1.5"), Decimal("105"))
    p = net_position("X", ("1.5", "105"), [(-1, Decimal("1.5"), Decimal("90"))])
    assert (p.qty, p.avg_px) == (Decimal("0"), None)
    p = net_position("X", ("-0.5", "100"), [(1, Decimal("2"), Decimal("90"))])
    assert (p.qty, p.avg_px) == (Decimal("1.5"), Decimal("90"))
    assert net_position("X", None, []).qty == 0


def test_a_journaled_order_the_exchange_never_received_counts_as_nothing(tmp_path) -> None:
    """The latest page of allOrders first; a journaled order not on it is asked for by its
    client order id; -2013 (does not exist: the node crashed between journal and send)
    counts as nothing, any other error is raised (no position guessed)."""
    import asyncio

    import pytest
    from nautilus_trader.adapters.binance.http.error import BinanceClientError

    from trading.node.spot import SpotExecClientConfig, SpotPositions
    from trading.node.state import NodeState

    state = NodeState(tmp_path / "node.db")
    account = "testnet@http://127.0.0.1:1"
    first = state.start_session("testnet", "k1", account=account).session.id
    state.set_start_positions(first, {})
    for i, coid in enumerate(("O-1", "O-old", "O-never")):
        state.journal_order("k1", str(i), coid, "BTCUSDT", "entry", 1, 1.0, i, first)
    second = state.start_session("testnet", "k2", account=account).session.id
    asked: list[str] = []

    class Http:
        async def query_all_orders(self, symbol: str, limit: int) -> list[SimpleNamespace]:
            return [_order("O-1", "SELL", "0.5", "50", 2, 7), _order("by-hand", "BUY", "9", "9", 1)]

        async def query_order(self, symbol: str, orig_client_order_id: str) -> SimpleNamespace:
            asked.append(orig_client_order_id)
            if orig_client_order_id == "O-old":  # older than the latest page
                return _order("O-old", "SELL", "0.25", "26", 1, 3)
            raise BinanceClientError(400, {"code": error, "msg": "Order does not exist."}, {})

    client = SimpleNamespace(_http_account=Http(), _log=SimpleNamespace(warning=lambda m: None))
    config = SpotExecClientConfig(state_db=str(state.path), session_id=second, account=account,
                                  symbols=("BTCUSDT", "ETHUSDT"))  # fmt: skip
    error = -2013
    found = asyncio.run(SpotPositions(client, config).positions())
    assert sorted(asked) == ["O-never", "O-old"]
    assert found["BTCUSDT"].qty == Decimal("-0.75") and found["BTCUSDT"].orders == 2
    assert found["BTCUSDT"].avg_px == (Decimal("26") + Decimal("50")) / Decimal("0.75")
    assert found["ETHUSDT"].qty == 0
    recorded = state.session(second)
    assert recorded is not None and "-0.75" in str(recorded.start_positions)

    error = -1003  # a rate limit: raised, so the reconciliation reports the failure
    third = state.start_session("testnet", "k3", account=account).session.id
    state.journal_order("k3", "0", "O-later", "BTCUSDT", "entry", 1, 1.0, 0, third)
    config = SpotExecClientConfig(state_db=str(state.path), session_id=third, account=account,
                                  symbols=("BTCUSDT",))  # fmt: skip
    with pytest.raises(BinanceClientError):
        asyncio.run(SpotPositions(client, config).positions())
    session = state.session(third)
    assert session is not None and session.start_positions is None  # nothing recorded
