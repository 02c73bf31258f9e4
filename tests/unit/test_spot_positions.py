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
