"""Spot positions for NautilusTrader's live reconciliation.

Binance spot has balances, not positions, and NautilusTrader 1.231's spot execution client
reports none ("never cash positions"). After a crash the restarted node would hold no
position while the exchange holds what its orders bought or sold. So the node's spot
client reports a position per symbol, rebuilt from what the exchange says:

  the positions the latest recorded session of this account started with
  + every order the node journaled since (write-ahead, `trading.node.state`), as the
    exchange filled it (allOrders: executedQty and cummulativeQuoteQty).

NautilusTrader's reconciliation then aligns its cache with these reports (a reconciliation
fill for the difference, claimed by the strategy through `external_order_claims`), and the
strategy adopts the position. Orders the node did not send (placed by hand) are not the
strategy's position; open ones are still claimed, reported and cancelled by the kill switch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from nautilus_trader.adapters.binance import BinanceExecClientConfig, BinanceLiveExecClientFactory

from trading.node.state import NodeState, PositionBasis

PAGE = 1000  # allOrders' largest page


class SpotExecClientConfig(BinanceExecClientConfig, frozen=True):
    """The Binance exec client's configuration, and where the node keeps its journal.

    state_db: the node's state file; session_id: this session; account: the venue account
    (mode and exchange); symbols: the symbols the strategy trades."""

    state_db: str | None = None
    session_id: int = 0
    account: str = ""
    symbols: tuple[str, ...] = ()


@dataclass(frozen=True)
class SpotPosition:
    symbol: str
    qty: Decimal  # signed: > 0 long, < 0 short (base asset sold)
    avg_px: Decimal | None
    orders: int  # the filled orders it was rebuilt from (beyond the base)


def net_position(
    symbol: str,
    base: tuple[str, str | None] | None,
    fills: Iterable[tuple[int, Decimal, Decimal]],
) -> SpotPosition:
    """The net position after `fills` ((side +1/-1, qty, average price), in time order)
    from `base` ((signed qty, avg px)); its average entry price as a position keeps it:
    adding moves it, reducing keeps it, flipping starts it again at the flipping fill."""
    qty = Decimal(base[0]) if base else Decimal(0)
    avg = Decimal(base[1]) if base and base[1] is not None and qty != 0 else None
    n = 0
    for side, fill_qty, px in fills:
        if fill_qty <= 0:
            continue
        n += 1
        if qty == 0 or (qty > 0) == (side > 0):
            held = abs(qty)
            avg = px if avg is None else (held * avg + fill_qty * px) / (held + fill_qty)
            qty += side * fill_qty
        elif fill_qty <= abs(qty):
            qty += side * fill_qty
            if qty == 0:
                avg = None
        else:
            qty = side * (fill_qty - abs(qty))
            avg = px
    return SpotPosition(symbol, qty, avg, n)


def order_fills(orders: Iterable[Any], ids: set[str]) -> list[tuple[int, Decimal, Decimal]]:
    """The fills of the exchange's orders (BinanceOrder) whose client order id is in `ids`,
    in the exchange's order."""
    out = []
    for o in sorted(orders, key=lambda o: (o.time or 0, o.orderId)):
        if o.clientOrderId not in ids or not o.executedQty:
            continue
        qty = Decimal(o.executedQty)
        if qty <= 0:
            continue
        side = 1 if str(getattr(o.side, "value", o.side)) == "BUY" else -1
        px = Decimal(o.cummulativeQuoteQty or 0) / qty
        out.append((side, qty, px))
    return out


class SpotPositions:
    """Rebuilds a session's spot positions from the journal and the exchange's orders."""

    def __init__(self, client: Any, config: SpotExecClientConfig) -> None:
        self.client = client
        self.state = NodeState(Path(config.state_db)) if config.state_db else None
        self.session_id = config.session_id
        self.account = config.account
        self.symbols = config.symbols
        self.recorded = False  # the first report records the session's start positions

    async def _orders(self, symbol: str, ids: list[str]) -> list[Any]:
        """The exchange's record of the journaled orders `ids`: its latest page of orders,
        then each one not on it asked for by its client order id (one the exchange never
        received, a crash between the journal and the send, is not there)."""
        from nautilus_trader.adapters.binance.http.error import BinanceError

        http = self.client._http_account
        wanted = set(ids)
        orders = [o for o in await http.query_all_orders(symbol=symbol, limit=PAGE)
                  if o.clientOrderId in wanted]  # fmt: skip
        missing = wanted - {o.clientOrderId for o in orders}
        for client_order_id in ids:
            if client_order_id not in missing:
                continue
            try:
                orders.append(await http.query_order(symbol, orig_client_order_id=client_order_id))
            except BinanceError as exc:
                if "-2013" not in str(exc.message):  # -2013: the order does not exist
                    raise
        return orders

    async def positions(self) -> dict[str, SpotPosition]:
        if self.state is None:
            return {}
        basis: PositionBasis = self.state.position_basis(self.account, self.session_id)
        out = {}
        for symbol in self.symbols:
            ids = basis.orders.get(symbol, [])
            fills = order_fills(await self._orders(symbol, ids), set(ids)) if ids else []
            out[symbol] = net_position(symbol, basis.base.get(symbol), fills)
        if not self.recorded:
            self.recorded = True
            start = {
                s: (str(p.qty), None if p.avg_px is None else str(p.avg_px))
                for s, p in out.items()
                if p.qty != 0
            }
            self.state.set_start_positions(self.session_id, start)
            self._say(basis, out)
        return out

    def _say(self, basis: PositionBasis, found: dict[str, SpotPosition]) -> None:
        log = self.client._log
        since = f"session {basis.base_session}" if basis.base_session else "the first session"
        for p in found.values():
            if p.qty == 0 and not p.orders:
                continue
            log.warning(
                f"position on the exchange at start: {p.symbol} {p.qty:+f}"
                + (f" @ {p.avg_px:.8f}" if p.avg_px is not None else "")
                + f" (rebuilt from {since}'s start and {p.orders} filled order(s) of the "
                "journal since)"
            )

    async def reports(self, symbol: str | None = None) -> list[Any]:
        """PositionStatusReports, as the adapter's futures client gives them."""
        from nautilus_trader.core.uuid import UUID4
        from nautilus_trader.execution.reports import PositionStatusReport
        from nautilus_trader.model.enums import PositionSide
        from nautilus_trader.model.objects import Quantity

        client = self.client
        now = client._clock.timestamp_ns()
        reports = []
        for name, p in (await self.positions()).items():
            if symbol is not None and name != symbol:
                continue
            instrument_id = client._get_cached_instrument_id(name)
            instrument = client._instrument_provider.find(instrument_id)
            precision = instrument.size_precision if instrument is not None else 8
            side = (
                PositionSide.FLAT
                if p.qty == 0
                else PositionSide.LONG
                if p.qty > 0
                else PositionSide.SHORT
            )
            reports.append(
                PositionStatusReport(
                    account_id=client.account_id,
                    instrument_id=instrument_id,
                    position_side=side,
                    quantity=Quantity(abs(p.qty), precision),
                    report_id=UUID4(),
                    ts_last=now,
                    ts_init=now,
                    avg_px_open=p.avg_px,
                )
            )
        return reports


class SpotExecClientFactory(BinanceLiveExecClientFactory):
    """NautilusTrader's Binance exec client factory; a spot client it makes reports the
    node's spot positions (`SpotPositions`) to the reconciliation."""

    @staticmethod
    def create(  # type: ignore[override]
        loop: Any, name: str, config: SpotExecClientConfig, msgbus: Any, cache: Any, clock: Any
    ) -> Any:
        client = BinanceLiveExecClientFactory.create(loop, name, config, msgbus, cache, clock)
        if config.account_type.is_spot:
            positions = SpotPositions(client, config)
            # the adapter's spot client asks itself for position reports and answers none
            client._get_binance_position_status_reports = positions.reports  # type: ignore[method-assign]
        return client
