"""Fill model: every market order fills `slippage_bp` beyond the touch, with unlimited size.

Nautilus' own slippage is one tick on an L1 book, which is nothing at BTC's 0.01 tick; this
model builds the simulated book the matching engine fills against.
"""

from __future__ import annotations

from nautilus_trader.backtest.models import FillModel
from nautilus_trader.model.book import OrderBook
from nautilus_trader.model.data import BookOrder
from nautilus_trader.model.enums import BookType, OrderSide
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.objects import Price, Quantity

_UNLIMITED = 1_000_000


class BasisPointSlippageFillModel(FillModel):
    def __init__(self, slippage_bp: float, seed: int = 42) -> None:
        super().__init__(prob_fill_on_limit=1.0, prob_slippage=0.0, random_seed=seed)
        if slippage_bp < 0:
            raise ValueError(f"slippage_bp must be >= 0, got {slippage_bp}")
        self.slippage_bp = slippage_bp

    def get_orderbook_for_fill_simulation(
        self, instrument: Instrument, order: object, best_bid: Price, best_ask: Price
    ) -> OrderBook:
        factor = self.slippage_bp * 1e-4
        book = OrderBook(instrument_id=instrument.id, book_type=BookType.L2_MBP)
        size = Quantity(_UNLIMITED, instrument.size_precision)
        bid = instrument.make_price(best_bid.as_double() * (1 - factor))
        ask = instrument.make_price(best_ask.as_double() * (1 + factor))
        book.add(BookOrder(OrderSide.BUY, bid, size, 1), 0, 0)
        book.add(BookOrder(OrderSide.SELL, ask, size, 2), 0, 0)
        return book
