"""The exchange's records: instruments, the top of book, orders, fills, balances."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

ZERO = Decimal(0)
OPEN = ("NEW", "PARTIALLY_FILLED")


def fmt(value: Decimal) -> str:
    """Binance's number format: a string with 8 decimals."""
    return f"{value:.8f}"


@dataclass(frozen=True)
class Instrument:
    symbol: str
    base: str
    quote: str
    tick: Decimal
    step: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    maker_fee: Decimal
    taker_fee: Decimal

    @classmethod
    def of(cls, symbol: str, spec: Any) -> Instrument:
        d = lambda x: Decimal(repr(float(x)))  # noqa: E731 (shortest exact decimal)
        return cls(
            symbol, spec.base, spec.quote, d(spec.tick_size), d(spec.lot_size), d(spec.min_qty),
            d(spec.max_qty), d(spec.min_notional_usd), d(spec.maker_fee), d(spec.taker_fee),
        )  # fmt: skip

    @property
    def price_decimals(self) -> int:
        return max(0, -self.tick.normalize().as_tuple().exponent)  # type: ignore[operator]

    @property
    def qty_decimals(self) -> int:
        return max(0, -self.step.normalize().as_tuple().exponent)  # type: ignore[operator]


@dataclass
class Book:
    bid: Decimal = ZERO
    ask: Decimal = ZERO
    bid_size: Decimal = ZERO
    ask_size: Decimal = ZERO
    ts_ms: int = 0
    update_id: int = 0

    @property
    def ready(self) -> bool:
        return self.bid > 0 and self.ask > 0


@dataclass
class Order:
    order_id: int
    client_id: str
    symbol: str
    side: str
    type: str
    tif: str
    price: Decimal  # 0 for MARKET
    qty: Decimal
    time_ms: int
    executed: Decimal = ZERO
    quote_executed: Decimal = ZERO
    status: str = "NEW"
    update_ms: int = 0
    locked: Decimal = ZERO  # what the order holds locked (quote for a buy, base for a sell)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN


@dataclass
class Fill:
    trade_id: int
    order_id: int
    symbol: str
    side: str
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    maker: bool
    time_ms: int


@dataclass
class Balance:
    free: Decimal = ZERO
    locked: Decimal = ZERO
