"""The exchange's market: the lake's quotes and trades of a window, merged in time order
(as a backtest orders them), and a market clock that runs at `speed` times the wall clock
from the window's start once the replay begins."""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import numpy as np

from trading.data.lake import Lake
from trading.data.window import NS, Window, window_days
from trading.errors import InputError


class Tick(NamedTuple):
    ts_ns: int
    symbol: str
    kind: str  # "quote" or "trade"
    a: Decimal  # quote: bid; trade: price
    b: Decimal  # quote: ask; trade: qty
    c: Decimal  # quote: bid size; trade: 0
    d: Decimal  # quote: ask size; trade: 0
    side: int  # trade: 1 buyer took, -1 seller took, 0 unknown
    trade_id: int


def _decimals(values: np.ndarray, places: int) -> list[Decimal]:
    return [Decimal(f"{v:.{places}f}") for v in values.tolist()]


def load_tape(
    lake_root: Path, venue: str, symbols: list[str], window: Window, price_dp: dict[str, int],
    qty_dp: dict[str, int],
) -> list[Tick]:  # fmt: skip
    """Every quote and trade of `symbols` in `window`, in the backtest's order: by time, then
    by symbol (in the order given), quotes before trades."""
    lake = Lake(lake_root)
    first, last = window_days(window.start_ns, window.end_ns)
    keyed: list[tuple[int, int, int, int, Tick]] = []
    for s_i, symbol in enumerate(symbols):
        pdp, qdp = price_dp[symbol], qty_dp[symbol]
        for k_i, kind in enumerate(("quotes", "trades")):
            table = lake.read(venue, symbol, kind, first, last)
            if table.num_rows == 0:
                if kind == "quotes":
                    raise InputError(
                        f"the lake under {lake_root} has no {symbol} quotes in {window}: "
                        "choose a window the lake covers (hmmtrader data ls)"
                    )
                continue
            ts = table.column("ts_ns").to_numpy()
            lo, hi = np.searchsorted(ts, window.start_ns), np.searchsorted(ts, window.end_ns)
            table = table.slice(int(lo), int(hi - lo))
            ts_list = ts[lo:hi].tolist()
            if kind == "quotes":
                cols = [
                    _decimals(table.column(c).to_numpy(), pdp if i < 2 else qdp)
                    for i, c in enumerate(("bid", "ask", "bid_size", "ask_size"))
                ]
                for j, t in enumerate(ts_list):
                    tick = Tick(t, symbol, "quote", cols[0][j], cols[1][j], cols[2][j], cols[3][j], 0, 0)  # fmt: skip
                    keyed.append((t, s_i, k_i, j, tick))
            else:
                price = _decimals(table.column("price").to_numpy(), pdp)
                qty = _decimals(table.column("qty").to_numpy(), qdp)
                side = table.column("aggressor_side").to_numpy().tolist()
                ids = table.column("trade_id").to_pylist()
                zero = Decimal(0)
                for j, t in enumerate(ts_list):
                    tick = Tick(t, symbol, "trade", price[j], qty[j], zero, zero, int(side[j]), int(ids[j]))  # fmt: skip
                    keyed.append((t, s_i, k_i, j, tick))
    keyed.sort(key=lambda k: k[:4])
    return [k[4] for k in keyed]


@dataclass
class MarketClock:
    """Market time: `start_ns` until `begin()`, then `start_ns + speed x (wall time since)`."""

    start_ns: int
    speed: float = 1.0
    _began: float | None = None

    def begin(self) -> None:
        if self._began is None:
            self._began = time.monotonic()

    @property
    def running(self) -> bool:
        return self._began is not None

    def set_speed(self, speed: float) -> None:
        """Change the pace from now on (market time goes on from where it is)."""
        if self._began is not None:
            self.start_ns = self.now_ns()
            self._began = time.monotonic()
        self.speed = speed

    def now_ns(self) -> int:
        if self._began is None:
            return self.start_ns
        return self.start_ns + int((time.monotonic() - self._began) * self.speed * NS)

    def now_ms(self) -> int:
        return self.now_ns() // 1_000_000

    def wall_delay_s(self, ts_ns: int) -> float:
        """Seconds of wall time until the market clock reaches `ts_ns`."""
        return max(0.0, (ts_ns - self.now_ns()) / NS / self.speed)
