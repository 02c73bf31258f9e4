"""The risk book: open positions, today's realized PnL overall and per regime state, and the
entry times the cooldowns read. Plain Python; the strategy feeds it fills.

Losses for DAILY and DD are today's (UTC) realized losses plus the unrealized losses of the
open positions at the current mid. Per-state losses are drawdowns: the peak of the state's
cumulative realized PnL today minus where it is now.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NS_PER_DAY = 86_400 * 1_000_000_000


@dataclass(slots=True)
class OpenPosition:
    symbol: str
    side: int  # +1 long, -1 short
    qty: float
    entry_px: float  # the touch at decision until filled, then the fill price
    entry_ns: int
    state: int
    filled: bool = False
    closing: bool = False

    def unrealized_usd(self, mid: float) -> float:
        if not self.filled:
            return 0.0
        return self.side * (mid - self.entry_px) * self.qty

    def notional_usd(self, mid: float) -> float:
        return abs(self.qty * (mid if mid > 0 else self.entry_px))


@dataclass
class RiskBook:
    day: int = -1  # UTC day number of the counters
    realized_today_usd: float = 0.0
    state_pnl_usd: dict[int, float] = field(default_factory=dict)
    state_peak_usd: dict[int, float] = field(default_factory=dict)
    positions: dict[str, OpenPosition] = field(default_factory=dict)
    last_entry_ns: int | None = None
    last_symbol_entry_ns: dict[str, int] = field(default_factory=dict)

    def roll(self, now_ns: int) -> None:
        """A new UTC day resets the daily and per-state counters."""
        day = now_ns // NS_PER_DAY
        if day != self.day:
            self.day = day
            self.realized_today_usd = 0.0
            self.state_pnl_usd.clear()
            self.state_peak_usd.clear()

    # ---- events ----
    def on_entry_submitted(self, position: OpenPosition) -> None:
        self.positions[position.symbol] = position
        self.last_entry_ns = position.entry_ns
        self.last_symbol_entry_ns[position.symbol] = position.entry_ns

    def on_entry_filled(self, symbol: str, qty: float, price: float) -> None:
        position = self.positions.get(symbol)
        if position is not None:
            position.qty, position.entry_px, position.filled = qty, price, True

    def on_entry_failed(self, symbol: str) -> None:
        self.positions.pop(symbol, None)

    def on_closed(self, symbol: str, realized_usd: float, now_ns: int) -> None:
        """A position closed with this realized PnL (net of its fees)."""
        position = self.positions.pop(symbol, None)
        self.roll(now_ns)
        self.realized_today_usd += realized_usd
        if position is not None:
            s = position.state
            pnl = self.state_pnl_usd.get(s, 0.0) + realized_usd
            self.state_pnl_usd[s] = pnl
            self.state_peak_usd[s] = max(self.state_peak_usd.get(s, 0.0), pnl)

    # ---- reads ----
    def daily_loss_usd(self, mids: dict[str, float]) -> float:
        # each open loss counts; one position's open gain does not hide another's loss
        open_loss = sum(
            min(0.0, p.unrealized_usd(mids.get(p.symbol, 0.0))) for p in self.positions.values()
        )
        return max(0.0, -(self.realized_today_usd + open_loss))

    def state_loss_usd(self, state: int, mids: dict[str, float]) -> float:
        drawdown = self.state_peak_usd.get(state, 0.0) - self.state_pnl_usd.get(state, 0.0)
        open_loss = sum(
            min(0.0, p.unrealized_usd(mids.get(p.symbol, 0.0)))
            for p in self.positions.values()
            if p.state == state
        )
        return drawdown - open_loss

    def open_usd(self, symbol: str, mid: float) -> float:
        position = self.positions.get(symbol)
        return position.notional_usd(mid) if position else 0.0

    def total_open_usd(self, mids: dict[str, float]) -> float:
        return sum(p.notional_usd(mids.get(p.symbol, 0.0)) for p in self.positions.values())
